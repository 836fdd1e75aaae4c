"""The transfer report's 95% intervals and paired verdicts: a bootstrap over test examples within each
seed, combined with the spread across seeds (recipe `seeds`).

- Resamples: RESAMPLES sets of n example indices drawn with replacement by numpy's
  `default_rng(RNG_SEED)`. They depend on n alone, so every run scored on the same split is resampled on
  the same examples: differences between runs are paired.
- One run at one seed: the task's metric on the whole split (the point value) and on every resample.
- Over S seeds: the mean is the mean of the S point values. Two spreads add up: the test-sample SD, the
  standard deviation over resamples of the seed mean (each resample scores every seed on the same drawn
  examples), and the seed SE, the sample standard deviation (ddof=1) of the S point values over sqrt(S).
  Half-width h = sqrt((z * test SD)^2 + (t * seed SE)^2), z = 1.96 (the normal 97.5% quantile),
  t = Student's t 97.5% quantile with S - 1 degrees of freedom; one seed: h = z * test SD. The interval
  is mean ± h.
- A paired difference of run A against run R: the same with A's minus R's values, seed by seed and
  resample by resample (oriented so that positive means A is better: R - A for a lower-is-better metric).
  Only runs scored on the same examples (same labels at every seed) are paired.
- Verdict: the interval of the difference above 0: better; below 0: worse; containing 0: no significant
  difference.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

RESAMPLES = 1000
RNG_SEED = 0
CONFIDENCE = 0.95
Z = 1.959963984540054  # the standard normal's 97.5% quantile


def method(seeds: int, split: str) -> str:
    """How the report's intervals are made, in a few sentences (report.md)."""
    over = (f"over {seeds} seeds: the mean of the seeds' values; half-width sqrt((1.96 * test SD)^2 + "
            f"(t * seed SE)^2), with t Student's 97.5% quantile at {seeds - 1} degrees of freedom and seed SE "
            f"the standard deviation of the seeds' values (ddof=1) over sqrt({seeds})" if seeds > 1 else
            "one seed: half-width 1.96 * test SD")
    return (f"± is a {CONFIDENCE:.0%} interval that combines the {split} examples and the seeds. Test SD: the "
            f"standard deviation of the seed mean over {RESAMPLES} bootstrap resamples of the {split} examples "
            f"(numpy default_rng({RNG_SEED}); every run and seed scored on the same resampled examples); {over}. "
            "Differences are paired the same way (the two runs' values subtracted seed by seed and resample "
            "by resample); a verdict is given only when the difference's interval excludes 0.")


Scorer = Callable[[Any, Any, np.ndarray], dict[str, np.ndarray]]
"""(predictions, label ids, index rows of shape (k, n)) -> {metric: k values}, one per row."""


def index_rows(n: int, resamples: int | None = None, seed: int = RNG_SEED) -> np.ndarray:
    """Row 0: every example once (the point value); rows 1..: the bootstrap resamples."""
    draws = np.random.default_rng(seed).integers(0, n, size=(RESAMPLES if resamples is None else resamples, n))
    return np.vstack([np.arange(n), draws]).astype(np.int64)


def _take(value, rows: np.ndarray):
    return tuple(v[rows] for v in value) if isinstance(value, (tuple, list)) else np.asarray(value)[rows]


def looped(score: Callable[[Any, Any], dict[str, float]]) -> Scorer:
    """A Scorer from a metric function of (predictions, label ids) (e.g. a task's compute_metrics): called once
    per row."""

    def scorer(predictions, label_ids, rows: np.ndarray) -> dict[str, np.ndarray]:
        found: dict[str, list[float]] = {}
        for row in rows:
            for key, value in score(_take(predictions, row), _take(label_ids, row)).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.setdefault(key, []).append(float(value))
        return {k: np.asarray(v) for k, v in found.items() if len(v) == len(rows)}

    return scorer


def interval(points, replicates) -> dict[str, float]:
    """Mean and 95% interval over seeds: `points` (S,) the point values, `replicates` (S, B) each seed's
    values on the same B resamples (see the module's docstring)."""
    points, replicates = np.asarray(points, dtype=float), np.asarray(replicates, dtype=float)
    seeds = len(points)
    mean = float(points.mean())
    test_sd = float(replicates.mean(axis=0).std(ddof=1)) if replicates.shape[-1] > 1 else 0.0
    seed_se = float(points.std(ddof=1) / math.sqrt(seeds)) if seeds > 1 else 0.0
    t = _t_quantile(seeds - 1) if seeds > 1 else 0.0
    half = math.sqrt((Z * test_sd) ** 2 + (t * seed_se) ** 2)
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "seeds": seeds,
            "test_sd": test_sd, "seed_se": seed_se}


def _t_quantile(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def verdict(difference: dict[str, float] | None, better: str = "better", worse: str = "worse") -> str | None:
    """`better` when the difference's interval lies above 0, `worse` below, else no significant difference."""
    if difference is None:
        return None
    if difference["low"] > 0:
        return better
    if difference["high"] < 0:
        return worse
    return "no significant difference"
