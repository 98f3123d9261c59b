"""`manage.py consensus <project_id>`: recompute a project's weighted consensus (CROWDLAB) now.

The training worker does this as a follow-up job as the answers grow; this runs the same code
synchronously, e.g. right after switching a project to the weighted consensus, and prints how
the annotators compare.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.models import Project
from curation.consensus import ConsensusRefused, consensus_update


class Command(BaseCommand):
    help = "Recompute the weighted (CROWDLAB) consensus gold labels of a project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_id", type=int, help="The project.")

    def handle(self, *args, project_id: int, **options) -> None:
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise CommandError(f"No project with id {project_id}.")
        try:
            result = consensus_update(project)
        except ConsensusRefused as exc:
            raise CommandError(str(exc)) from exc
        if result.reason:
            self.stdout.write(f"project {project_id}: majority vote, because {result.reason}")
        else:
            self.stdout.write(
                f"project {project_id}: CROWDLAB consensus over {result.items} items and "
                f"{result.annotators} annotators, model weight {result.model_weight}, "
                f"probabilities {result.pred_probs}"
            )
        self.stdout.write(
            f"{result.changed} gold labels changed, {result.adjudicated} adjudicated left as "
            f"decided, {result.busy} changed meanwhile (next run), {result.duration_ms:.0f} ms"
        )
        for row in result.annotator_quality:
            quality = "—" if row["quality"] is None else f"{row['quality']:.3f}"
            agreement = "—" if row["agreement"] is None else f"{row['agreement']:.1%}"
            self.stdout.write(
                f"  {row['username'] or row['annotator_id']}: quality {quality}, agrees with the "
                f"consensus on {agreement} of {row['answers']} answers, worst class "
                f"{row['worst_class']}"
            )
