"""`hf-transfer tune`: the search space (validated, conditional strategy options) and a 2-trial search
on a tiny model whose best recipe runs as it is."""

from __future__ import annotations

import json

import pytest
import yaml

from hf_transfer.errors import RecipeError


def _recipe(tiny_bert, sentiment_files, tmp_path, space=None, **tune):
    from tests.tiny import text_recipe

    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "run")
    recipe["tune"] = {"space": space or {"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}}, **tune}
    return recipe


@pytest.mark.parametrize("space, message", [
    ({"learning_rate": {"low": -1, "high": 1}}, "tune.space.training.learning_rate: training.learning_rate: must be > 0"),
    ({"learning_rate": {"low": 1e-3, "high": 1e-4}}, "tune.space.training.learning_rate: low must be below high"),
    ({"weight_decay": {"low": 0, "high": 0.1, "log": True}}, "tune.space.training.weight_decay.low: a log range"),
    ({"learning_rate": {"low": 1e-4}}, "tune.space.training.learning_rate: expected a list of choices or a range"),
    ({"per_device_train_batch_size": []}, "tune.space.training.per_device_train_batch_size: list at least one"),
    ({"bogus_key": [1, 2]}, "tune.space.training.bogus_key: training.bogus_key: not a transformers.TrainingArguments"),
    ({"finetune.r": [4, 8]}, "tune.space.finetune.r: not an option of strategy 'full'"),
    ({"finetune.strategy": ["full", "lora"], "finetune.r": [0]}, "tune.space.finetune.r: finetune.r"),
    ({"finetune.strategy": ["lora"], "finetune.target_modules": [["query", "value"]]},
     "tune.space.finetune.target_modules: choices are numbers, strings, booleans or null"),
    ({"finetune.strategy": ["full", "nope"]}, "tune.space.finetune.strategy: finetune.strategy: unknown strategy 'nope'"),
])
def test_every_choice_and_bound_is_validated_as_its_key(tiny_bert, sentiment_files, tmp_path, space, message):
    from hf_transfer.validate import load_recipe

    with pytest.raises(RecipeError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, space))


def test_tune_section_rules(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.validate import load_recipe

    with pytest.raises(RecipeError, match="tune.n_trials: must be >= 1"):
        load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, n_trials=0))
    with pytest.raises(RecipeError, match="tune.pruner"):
        load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, pruner="hyperband"))
    recipe = load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path))
    assert list(recipe.tune.space) == ["training.learning_rate"]  # plain names are training keys


def test_a_strategy_option_is_searched_only_with_its_strategy():
    import optuna

    from hf_transfer.runs.tune import suggest
    from hf_transfer.validate import tune_variant

    space = {"finetune.strategy": ["full", "lora"], "finetune.r": [2, 4], "training.learning_rate": [1e-3]}
    full = suggest(optuna.trial.FixedTrial({"finetune.strategy": "full", "training.learning_rate": 1e-3}), space, "full")
    assert full == {"finetune.strategy": "full", "training.learning_rate": 1e-3}
    lora = suggest(optuna.trial.FixedTrial({"finetune.strategy": "lora", "finetune.r": 4,
                                            "training.learning_rate": 1e-3}), space, "full")
    assert lora["finetune.r"] == 4
    raw = {"model": {}, "finetune": {"strategy": "lora", "r": 8, "alpha": 32}, "training": {}, "tune": {}}
    assert tune_variant(raw, {"finetune.strategy": "full"})["finetune"] == {"strategy": "full"}
    assert tune_variant(raw, {"finetune.r": 2})["finetune"] == {"strategy": "lora", "r": 2, "alpha": 32}
    assert "tune" not in tune_variant(raw, {})


def test_two_trials_write_every_file_and_a_best_recipe_that_runs(tiny_bert, sentiment_files, tmp_path, capsys):
    from hf_transfer.cli import main
    from hf_transfer.validate import load_recipe

    space = {"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}, "finetune.strategy": ["full", "lora"],
             "finetune.r": [2, 4], "per_device_train_batch_size": [4, 8]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny_bert, sentiment_files, tmp_path, space, n_trials=2, seed=3)))
    out = tmp_path / "tune"
    assert main(["tune", str(path), "--output-dir", str(out), "--train-best"]) == 0
    report = json.loads((out / "tune.json").read_text())
    assert [t["number"] for t in report["trials"]] == [0, 1]
    assert all(t["state"] == "complete" and t["value"] is not None and t["curve"] for t in report["trials"])
    assert report["metric"] == "eval_accuracy" and report["direction"] == "maximize"
    assert report["best"]["value"] == max(t["value"] for t in report["trials"])
    assert (out / "tune.png").stat().st_size > 0 and "| trial |" in (out / "tune.md").read_text()
    assert not list((out / "trials").rglob("*.safetensors"))  # trials keep no weights

    best = load_recipe(str(out / "best.yaml"))  # runs as it is: validated, and trained by --train-best
    assert best.tune is None and best.training["output_dir"] == str(out / "best")
    params = report["best"]["params"]
    assert best.finetune.strategy == params["finetune.strategy"]
    assert best.training["learning_rate"] == pytest.approx(params["training.learning_rate"])
    assert (out / "best" / "metrics.json").is_file()
    assert "validation" in report["best_run"] and "its recipe" in capsys.readouterr().out


def test_tune_without_a_tune_section_is_one_line(tiny_bert, sentiment_files, tmp_path, capsys):
    from tests.tiny import text_recipe

    from hf_transfer.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(text_recipe(tiny_bert, sentiment_files, tmp_path / "run")))
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hf-transfer: error: tune: the recipe has no tune section (name tune.space: the keys to search)"
