"""Real-model check (make test-slow): the cached-feature probe on MiniLM-L6 equals the probe through the backbone."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_transfer import finetune

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/minilm_drugreview.yaml"


@pytest.mark.slow
def test_cached_probe_matches_probe_through_minilm(tmp_path, monkeypatch):
    if not (ROOT / "assets/minilm-l6/model.safetensors").is_file():
        pytest.skip("offline assets missing: run `make assets`")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    metrics = {}
    for name, cache in (("cached", True), ("through", False)):
        metrics[name] = finetune(str(RECIPE), overwrite=True, **{
            "finetune": {"strategy": "partial", "freeze": "backbone", "cache_features": cache},
            "data.max_train_samples": 96, "data.max_eval_samples": 96,
            "training.output_dir": str(tmp_path / name), "training.num_train_epochs": 2,
            "training.learning_rate": 5e-3, "training.disable_tqdm": True,
            "training.bf16": False,  # the cached features are fp32: compare both in fp32
        }).metrics
    a, b = load_file(tmp_path / "cached/model.safetensors"), load_file(tmp_path / "through/model.safetensors")
    assert torch.allclose(a["classifier.weight"], b["classifier.weight"], atol=1e-4)
    assert metrics["cached"]["test"]["test_accuracy"] == metrics["through"]["test"]["test_accuracy"]
    assert metrics["cached"]["train"]["train_runtime"] < metrics["through"]["train"]["train_runtime"]
