"""The benchmark suite's bookkeeping (benchmarks/bench_text.py): the fixed-length comparison alternates
which pipeline runs first and averages per-round ratios, so drift over a run favours neither."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_text  # noqa: E402


def test_fixed_rounds_alternate_which_pipeline_runs_first():
    rows = bench_text.fixed_rounds(lambda i: {"case": "plain"}, lambda i: {"case": "ours"}, 4)
    assert [(r["round"], r["case"]) for r in rows] == [
        (1, "plain"), (1, "ours"), (2, "ours"), (2, "plain"), (3, "plain"), (3, "ours"), (4, "ours"), (4, "plain")]


def test_fixed_ratio_cancels_a_linear_drift_over_balanced_rounds():
    """Equal pipelines on a machine slowing down 2 % per run: each pair's ratio is off, their mean is not."""
    order = bench_text.fixed_rounds(lambda i: {"case": bench_text.PLAIN_FIXED},
                                    lambda i: {"case": bench_text.OURS_FIXED}, 2)
    rows = [{**r, "train_samples_per_s": 10.0 * (1 - 0.02) ** k} for k, r in enumerate(order)]
    result = bench_text.fixed_ratio(rows)
    assert result["speedup_fixed_128_per_round"] == [0.98, 1.02]
    assert result["speedup_fixed_128"] == pytest.approx(1.0, abs=2e-3)
