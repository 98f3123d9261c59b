"""The query strategies' names, apart from their code (`curation.strategies`), so that the
models and forms that offer them load without the numerical libraries (web processes)."""

from __future__ import annotations

__all__ = ["DEFAULT_STRATEGY", "STRATEGY_NAMES"]

#: The per-item scorers of `curation.strategies.STRATEGIES`, in its order (a test checks).
STRATEGY_NAMES = ("random", "least_confidence", "margin", "entropy")
# Margin: best label efficiency in the digits measurements, and cheap (a partition).
DEFAULT_STRATEGY = "margin"
