"""`manage.py items_action PROJECT ACTION [--filter QUERYSTRING | --items ID,…] [--reason …]
[--note …] [--users a,b] [--yes]`: a bulk action on a project's items (`annotations.bulk`), the
data browser's bar from the command line, with a progress bar. Without `--yes` it only says how
many items the action would take."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotations import bulk
from annotations.management.commands.import_items import find_project
from annotations.models import ItemAction, Review

Kind = ItemAction.Kind


class Command(BaseCommand):
    help = (
        "Send a project's items to review, back for relabelling, assign or delete them: the "
        "items matching a data browser filter (its querystring; none: every item) or given by "
        "id. Prints the count and changes nothing unless --yes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="Project id or name.")
        parser.add_argument("action", choices=[Kind.REVIEW, Kind.RELABEL, Kind.ASSIGN, Kind.DELETE])
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--filter", default="", help='The data browser\'s querystring, e.g. "status=complete".'
        )
        which.add_argument("--items", default=None, help="Item ids, comma separated.")
        parser.add_argument(
            "--reason",
            choices=list(bulk.REVIEW_REASONS),
            default=Review.Reason.FLAG,
            help="Why the items go to review (review).",
        )
        parser.add_argument("--note", default="", help="A note the reviewer sees (review).")
        parser.add_argument("--users", default="", help="Usernames, comma separated (assign).")
        parser.add_argument("--yes", action="store_true", help="Run it (else: count only).")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, **options) -> None:
        project = find_project(options["project"])
        action = options["action"]
        try:
            if options["items"] is not None:
                selection = bulk.Selection.of_ids(
                    part.strip() for part in options["items"].split(",") if part.strip()
                )
            else:
                selection = bulk.Selection.matching(options["filter"])
            users = (
                bulk.annotators_named(project, options["users"].split(","))
                if action == Kind.ASSIGN
                else []
            )
            count = selection.count(project)
            if not options["yes"]:
                self.stdout.write(
                    f"{count:,} item(s) of {project.name!r} would be: {Kind(action).label.lower()}."
                    " Run again with --yes to do it."
                )
                return
            bar = tqdm(
                total=count,
                desc=Kind(action).label,
                unit="item",
                file=self.stderr._out,  # the raw stream: OutputWrapper would add newlines
                disable=options["no_progress"],
                leave=False,
            )

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                result = bulk.item_action_run(
                    project=project,
                    user=None,
                    action=action,
                    selection=selection,
                    reason=options["reason"],
                    note=options["note"],
                    users=users,
                    progress=progress,
                )
            finally:
                bar.close()
        except ValidationError as exc:
            problems = getattr(exc, "message_dict", None) or {"": exc.messages}
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" if k else " ".join(v) for k, v in problems.items())
            ) from exc
        line = f"{Kind(action).label}: {result.done:,} item(s) of {project.name!r}"
        if result.skipped:
            line += f"; {result.skipped:,} left alone (nothing to do for them)"
        self.stdout.write(line + ". " + " ".join(result.notes))
