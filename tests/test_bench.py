"""The benchmark suite's bookkeeping (benchmarks/bench_text.py, common.py): the fixed-length comparison
alternates which pipeline runs first and averages per-round ratios, so drift over a run favours neither;
the CPU tensor-memory peak is the most the allocator had live at once."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_text  # noqa: E402
import common  # noqa: E402
import torch  # noqa: E402


def test_fixed_rounds_alternate_which_pipeline_runs_first():
    rows = bench_text.fixed_rounds(lambda i: {"case": "plain"}, lambda i: {"case": "ours"}, 4)
    assert [(r["round"], r["case"]) for r in rows] == [
        (1, "plain"), (1, "ours"), (2, "ours"), (2, "plain"), (3, "plain"), (3, "ours"), (4, "ours"), (4, "plain")]


def test_rounds_put_other_cases_between_the_pair_and_compare_any_two():
    plain, fused, ours = bench_text.PLAIN_FIXED, bench_text.FUSED_ATTN_FIXED, bench_text.OURS_FIXED
    order = bench_text.fixed_rounds(lambda i: {"case": plain}, lambda i: {"case": ours}, 2,
                                    lambda i: {"case": fused})
    assert [r["case"] for r in order] == [plain, fused, ours, ours, fused, plain]
    speed = {plain: 10.0, fused: 15.0, ours: 12.0}
    rows = [{**r, "train_samples_per_s": speed[r["case"]]} for r in order]
    assert bench_text.fixed_ratio(rows, fused, ours, "fused") == {"fused": 1.25, "fused_per_round": [1.25, 1.25]}
    assert bench_text.fixed_ratio(rows)["speedup_fixed_128"] == 1.2
    assert bench_text.fixed_ratio(rows[:1], fused, ours) == {}


def test_fixed_ratio_cancels_a_linear_drift_over_balanced_rounds():
    """Equal pipelines on a machine slowing down 2 % per run: each pair's ratio is off, their mean is not."""
    order = bench_text.fixed_rounds(lambda i: {"case": bench_text.PLAIN_FIXED},
                                    lambda i: {"case": bench_text.OURS_FIXED}, 2)
    rows = [{**r, "train_samples_per_s": 10.0 * (1 - 0.02) ** k} for k, r in enumerate(order)]
    result = bench_text.fixed_ratio(rows)
    assert result["speedup_fixed_128_per_round"] == [0.98, 1.02]
    assert result["speedup_fixed_128"] == pytest.approx(1.0, abs=2e-3)


def test_peak_tensor_memory_is_the_most_live_at_once_plus_the_start():
    mb = 2**20
    with common.PeakTensorMemory(start_mb=5.0) as memory:
        a = torch.empty(4 * mb, dtype=torch.uint8)
        b = torch.empty(8 * mb, dtype=torch.uint8)  # 12 MB live
        del a, b
        c = torch.empty(6 * mb, dtype=torch.uint8)
        del c
    assert memory.peak_mb == pytest.approx(5.0 + 12.0, abs=0.05)


def test_allocation_peak_keeps_the_trace_order_of_simultaneous_events_and_counts_cpu_only():
    def memory(ts, size):
        return {"name": "[memory]", "ts": ts, "args": {"Bytes": size}}

    gpu = {"name": "[memory]", "ts": 2, "args": {"Bytes": 99, "Device Type": 1}}
    events = [memory(2, 30), memory(1, 10), memory(2, -30), {"name": "aten::mm", "ts": 1}, gpu, memory(3, 5)]
    assert common.allocation_peak_bytes(events) == 40  # 10, then +30 before the -30 at the same time; no GPU


def test_module_tensor_mb_counts_tied_weights_once():
    model = torch.nn.Sequential(torch.nn.Embedding(256, 1024), torch.nn.Linear(1024, 256, bias=False))
    model[1].weight = model[0].weight
    assert common.module_tensor_mb(model) == pytest.approx(1.0)


def test_vision_rounds_alternate_paths_and_the_defaults_speedup_is_per_worker_count():
    import bench_media

    calls = []

    def case(name, recipe, over, tag):
        calls.append(tuple(over))
        return {"case": name, "dataloader_num_workers": int(over[-1].split("=")[1]),
                "train_samples_per_s": 10.0 if "vision.image_cache=false" in over else 20.0}

    rows = bench_media.vision_rounds(case, [0, 1], 2)
    assert [(r["round"], r["dataloader_num_workers"], r["defaults"]) for r in rows] == [
        (1, 0, False), (1, 0, True), (1, 1, False), (1, 1, True), (2, 0, True), (2, 0, False), (2, 1, True), (2, 1, False)]
    assert calls[0][:3] == ("finetune={strategy: full}", "vision.image_cache=false", "vision.channels_last=false")
    assert calls[1] == ("training.dataloader_num_workers=0",)  # the defaults: the recipe as it ships
    speedups = bench_media.defaults_speedups(rows)
    assert speedups["vision_defaults_speedup_0_workers"] == 2.0
    assert speedups["vision_defaults_speedup_1_workers_per_round"] == [2.0, 2.0]


def test_bf16_supported_asks_hf_transfer_what_bf16_auto_asks(monkeypatch):
    from hf_transfer import precision

    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16", lambda: native)
        assert common.bf16_supported() is native
