"""The query strategies' names and the model loop's defaults, apart from their code
(`curation.strategies`, `curation.learner`), so that the models, forms and pages that show them
load without the numerical libraries (web processes)."""

from __future__ import annotations

__all__ = ["DEFAULT_MIN_PER_CLASS", "DEFAULT_STRATEGY", "STRATEGY_NAMES"]

#: The per-item scorers of `curation.strategies.STRATEGIES`, in its order (a test checks).
STRATEGY_NAMES = ("random", "least_confidence", "margin", "entropy")
# Margin: best label efficiency in the digits measurements, and cheap (a partition).
DEFAULT_STRATEGY = "margin"
#: Labels per class before the model is trusted to rank the queue and flag answers
#: (`IncrementalLearner.is_cold`); the page asks for this many of each class.
DEFAULT_MIN_PER_CLASS = 3
