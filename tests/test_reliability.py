"""Interruption, determinism, non-finite losses and the safety defaults."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hf_transfer import finetune
from hf_transfer.errors import ModelError
from hf_transfer.errors import TrainingError
from hf_transfer.folder import last_complete_checkpoint
from tests.tiny import save_tiny_bert, text_recipe

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("runtime", "per_second", "total_flos", "train_loss")  # wall-clock figures differ run to run


def stable(metrics: dict) -> dict:
    return {
        split: {k: v for k, v in values.items() if not any(w in k for w in VOLATILE)}
        for split, values in metrics.items() if split in ("validation", "test")
    }


def resumable_recipe(tiny_bert, files, out):
    """2 epochs of 6 steps, a checkpoint every 2 steps, evaluation per epoch."""
    recipe = text_recipe(tiny_bert, files, out)
    t = recipe["training"]
    del t["max_steps"], t["eval_steps"]
    t |= {"num_train_epochs": 2, "eval_strategy": "epoch", "save_strategy": "steps", "save_steps": 2,
          "save_total_limit": None, "load_best_model_at_end": False, "learning_rate": 1e-3}
    return recipe


def run_killrun(recipe: dict, tmp_path: Path, mode: str, step: int, *args: str):
    path = tmp_path / f"recipe-{mode}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "tests/killrun.py"), str(path), mode, str(step), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path)


def test_same_seed_gives_identical_metrics(tiny_bert, sentiment_files, tmp_path):
    a = finetune(text_recipe(tiny_bert, sentiment_files, tmp_path / "a", strategy="lora", r=2))
    b = finetune(text_recipe(tiny_bert, sentiment_files, tmp_path / "b", strategy="lora", r=2))
    assert stable(a.metrics) == stable(b.metrics)


@pytest.mark.slow  # several training subprocesses: the slow tier (CI runs it)
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tiny_bert, sentiment_files, tmp_path):
    clean = finetune(resumable_recipe(tiny_bert, sentiment_files, tmp_path / "clean"))
    out = tmp_path / "killed"
    recipe = resumable_recipe(tiny_bert, sentiment_files, out)
    killed = run_killrun(recipe, tmp_path, "step", 3)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    assert last_complete_checkpoint(out / "checkpoints").endswith("checkpoint-2")
    resumed = run_killrun(recipe, tmp_path, "none", 0, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert stable(json.loads((out / "metrics.json").read_text())) == stable(clean.metrics)


@pytest.mark.slow  # several training subprocesses: the slow tier (CI runs it)
def test_sigkill_during_a_save_leaves_nothing_that_looks_complete(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "run"
    recipe = resumable_recipe(tiny_bert, sentiment_files, out)
    killed = run_killrun(recipe, tmp_path, "save", 4)
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = out / "checkpoints" / "checkpoint-4"
    assert (partial / "model.safetensors").exists()  # the kill came in the middle of this save
    assert last_complete_checkpoint(out / "checkpoints").endswith("checkpoint-2")
    assert not (out / "metrics.json").exists()
    refused = run_killrun(recipe, tmp_path, "none", 0)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_killrun(recipe, tmp_path, "none", 0, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "ignoring incomplete checkpoint" in resumed.stderr
    assert (out / "metrics.json").is_file()


@pytest.fixture
def nan_bert(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_tiny_bert(tmp_path / "nan-bert")
    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if k.endswith("embeddings.LayerNorm.weight"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_nan_loss_stops_the_run_naming_the_step(nan_bert, sentiment_files, tmp_path):
    with pytest.raises(TrainingError, match=r"training: loss is nan at step 1"):
        finetune(text_recipe(nan_bert, sentiment_files, tmp_path / "out"))


def test_nan_loss_batches_are_skipped_when_configured(nan_bert, sentiment_files, tmp_path):
    recipe = text_recipe(nan_bert, sentiment_files, tmp_path / "out") | {"nan_policy": "skip"}
    result = finetune(recipe)
    assert result.metrics["skipped_nonfinite_batches"] == 2


def test_tokens_never_reach_written_files(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    from hf_transfer.errors import RecipeError

    secret = "hf_SECRETsecretSECRET123"
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    with pytest.raises(RecipeError, match="training.hub_token: never put tokens in a recipe"):
        finetune(recipe | {"training": recipe["training"] | {"hub_token": secret}})
    monkeypatch.setenv("HF_TOKEN", secret)
    finetune(recipe)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_secret_looking_recipe_values_are_redacted():
    from hf_transfer.recipe.yaml import redact

    assert redact({"a": {"api_key": "k", "token_file": None, "n": [{"password": "p"}]}, "b": 1}) == {
        "a": {"api_key": "<redacted>", "token_file": None, "n": [{"password": "<redacted>"}]}, "b": 1}


def test_remote_code_is_refused_unless_the_recipe_allows_it(tiny_bert, sentiment_files, tmp_path):
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil-bert"  # unknown to transformers: only the shipped code could load it
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig",
                          "AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelError, match="model.name_or_path: cannot load.*trust_remote_code"):
        finetune(text_recipe(folder, sentiment_files, tmp_path / "out"))


def test_pickled_weights_are_refused_unless_allowed(sentiment_files, tmp_path):
    from transformers import BertModel

    folder = save_tiny_bert(tmp_path / "pickled")
    model = BertModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="model.name_or_path: cannot load"):
        finetune(text_recipe(folder, sentiment_files, tmp_path / "a"))
    recipe = text_recipe(folder, sentiment_files, tmp_path / "b")
    recipe["model"]["allow_pickle"] = True
    assert finetune(recipe).metrics["test"]["test_accuracy"] >= 0
