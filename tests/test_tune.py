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
    # keys trials are compared on, or that a trial overwrites (a searched output_dir was dropped unsaid)
    ({"output_dir": ["a", "b"]}, "tune.space.training.output_dir: not searched: each trial writes its own folder"),
    ({"metric_for_best_model": ["accuracy"]}, "tune.space.training.metric_for_best_model: not searched: it is the"),
    ({"data.path": ["csv", "json"]}, "tune.space.data.path: not searched: the data and its splits"),
    ({"hub.push": [True]}, "tune.space.hub.push: not searched: trials are not pushed"),
    ({"cv.folds": [2, 3]}, "tune.space.cv.folds: not searched: it shapes the run"),
])
def test_every_choice_and_bound_is_validated_as_its_key(tiny_bert, sentiment_files, tmp_path, space, message):
    from hf_transfer.validate import load_recipe

    with pytest.raises(RecipeError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, space))


def test_class_weights_and_the_training_sample_count_are_the_data_keys_searched(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.validate import load_recipe

    space = {"data.class_weights": [None, "auto"], "data.max_train_samples": [16, 32]}
    assert load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, space)).tune.space == space


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
    from hf_transfer.search_space import tune_variant

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


RECIPE_FIRST = {"finetune.strategy": "full", "training.learning_rate": 1e-2, "training.per_device_train_batch_size": 8}
"""tests.tiny.text_recipe's values of the 2-trial searches' keys (finetune.r: not an option of full)."""


def test_the_first_trial_is_the_recipe_where_the_space_holds_its_values(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.runs import tune
    from hf_transfer.validate import load_recipe

    def first(space, **finetune):
        raw = _recipe(tiny_bert, sentiment_files, tmp_path, space)
        raw["finetune"] |= finetune
        return tune.Search(load_recipe(raw), tmp_path / "search").recipe_params()

    space = {"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}, "weight_decay": {"low": 0.0, "high": 0.1},
             "per_device_train_batch_size": {"low": 4, "high": 16, "step": 4}, "finetune.strategy": ["full", "lora"],
             "finetune.r": [2, 4]}
    # weight decay: the recipe names none, TrainingArguments' 0.0; r: not an option of full
    assert first(space) == {"training.learning_rate": 1e-2, "training.weight_decay": 0.0,
                            "training.per_device_train_batch_size": 8, "finetune.strategy": "full"}
    # outside the space: 1e-2 above the range, batch 8 not one of the choices, r 8 (LoRA's default) not 2 or 4
    assert first({"learning_rate": {"low": 1e-4, "high": 1e-3}, "per_device_train_batch_size": [4, 16],
                  "finetune.r": [2, 4], "finetune.alpha": [16, 32]}, strategy="lora") == {"finetune.alpha": 16}
    assert first({"per_device_train_batch_size": {"low": 2, "high": 12, "step": 4}}) == {}  # 8 is off the steps


def test_the_summary_says_how_the_best_compares_with_the_recipe():
    from hf_transfer.runs.tune_report import against_recipe

    trials = [{"number": 0, "state": "complete", "value": 0.6, "params": {"lr": 1e-4, "epochs": 10}},
              {"number": 1, "state": "complete", "value": 0.7, "params": {"lr": 3e-4, "epochs": 5}}]
    report = {"trials": trials, "best": {"number": 1}, "recipe_trial": 0, "recipe_params": {"lr": 1e-4, "epochs": 10}}
    assert against_recipe(report) == " Trial 0, the recipe as written: complete, 0.6000."
    report |= {"best": {"number": 0}, "recipe_params": {"lr": 1e-4}}  # the recipe's epochs outside the space
    assert against_recipe(report) == (" The best is the recipe's own values (epochs sampled: the recipe's lies "
                                      "outside the space) (trial 0): no trial did better on validation.")
    assert against_recipe(report | {"recipe_trial": None}) == ""


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
    assert report["trials"][0]["params"] == RECIPE_FIRST  # the recipe's own values come first
    assert report["trials"][1]["params"] != RECIPE_FIRST
    assert report["recipe_trial"] == 0 and "| 0 (" in (out / "tune.md").read_text()
    assert "recipe" in (out / "tune.md").read_text().split("| 0 (")[1].split("|")[0]
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


# --------------------------------------------------------------------------- tune.backend: ray


@pytest.mark.parametrize("spec, expected", [
    ([8, 16, None], ("choice", ([8, 16, None],))),
    ({"low": 1e-4, "high": 1e-2, "log": True}, ("loguniform", (1e-4, 1e-2))),
    ({"low": 0.0, "high": 0.1}, ("uniform", (0.0, 0.1))),
    ({"low": 1, "high": 4}, ("randint", (1, 5))),  # Ray's upper bound is exclusive, ours inclusive
    ({"low": 2, "high": 64, "log": True}, ("lograndint", (2, 65))),
    ({"low": 3, "high": 12, "step": 4}, ("choice", ([3, 7, 11],))),  # Optuna's grid, from low
    ({"low": 0.1, "high": 0.4, "step": 0.1}, ("choice", ([0.1, 0.2, 0.3, 0.4],))),
])
def test_each_space_entry_maps_to_the_ray_sampler_of_the_same_points(spec, expected):
    from hf_transfer.runs.raytune import domain

    assert domain(spec) == expected


def test_ray_trials_sample_every_key_and_use_only_their_strategy_options():
    from hf_transfer.runs.tune import sampled_params

    config = {"training.learning_rate": 1e-3, "finetune.r": 4, "finetune.strategy": "full"}
    assert sampled_params(config, "full") == {"finetune.strategy": "full", "training.learning_rate": 1e-3}
    assert sampled_params(config | {"finetune.strategy": "lora"}, "full") == {
        "finetune.strategy": "lora", "training.learning_rate": 1e-3, "finetune.r": 4}
    assert sampled_params({"finetune.r": 4}, "lora") == {"finetune.r": 4}  # the recipe's own strategy


@pytest.mark.parametrize("tune, message", [
    ({"backend": "hyperopt"}, "tune.backend: expected one of 'optuna', 'ray', got 'hyperopt'"),
    ({"ray_address": "auto"}, "tune.ray_address: only with tune.backend: ray (the backend is 'optuna')"),
    ({"resources_per_trial": {"cpu": 1}}, "tune.resources_per_trial: only with tune.backend: ray"),
    ({"backend": "ray", "ray_address": "head node"}, "tune.ray_address: expected auto, host:port or ray://host:port"),
    ({"backend": "ray", "resources_per_trial": {"tpu": 1}}, "tune.resources_per_trial.tpu: unknown resource"),
    ({"backend": "ray", "resources_per_trial": {"cpu": 0}}, "tune.resources_per_trial.cpu: must be > 0, got 0"),
    ({"backend": "ray", "resources_per_trial": {"gpu": -1}}, "tune.resources_per_trial.gpu: must be >= 0, got -1"),
])
def test_ray_keys_are_validated(tiny_bert, sentiment_files, tmp_path, tune, message):
    from hf_transfer.validate import load_recipe

    with pytest.raises(RecipeError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, **tune))


def test_ray_addresses_accepted(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.validate import load_recipe

    for address in ("auto", "10.0.0.1:6379", "ray://head-node:10001"):
        recipe = load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, backend="ray", ray_address=address,
                                     resources_per_trial={"cpu": 2, "gpu": 0.5}))
        assert recipe.tune.ray_address == address and recipe.tune.resources_per_trial == {"cpu": 2.0, "gpu": 0.5}


def test_ray_backend_without_ray_is_one_line(tiny_bert, sentiment_files, tmp_path, capsys):
    try:
        import ray.tune  # noqa: F401
        pytest.skip("ray is installed here")
    except ImportError:
        pass
    from hf_transfer.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny_bert, sentiment_files, tmp_path, backend="ray")))
    assert main(["tune", str(path), "--output-dir", str(tmp_path / "tune")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hf-transfer: error: tune.backend: ray needs Ray Tune (pip install 'hf-transfer[ray]')"
    assert not (tmp_path / "tune" / "trials").exists()  # nothing trained


@pytest.mark.slow  # `make test-slow` installs the ray extra
def test_ray_two_trials_write_the_same_files_as_optuna(tiny_bert, sentiment_files, tmp_path, capsys):
    pytest.importorskip("ray.tune")
    from hf_transfer.cli import main
    from hf_transfer.validate import load_recipe

    space = {"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}, "finetune.strategy": ["full", "lora"],
             "finetune.r": [2, 4], "per_device_train_batch_size": [4, 8]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny_bert, sentiment_files, tmp_path, space, n_trials=2, seed=3,
                                           backend="ray", resources_per_trial={"cpu": 1})))
    out = tmp_path / "tune"
    assert main(["tune", str(path), "--output-dir", str(out), "--train-best"]) == 0
    report = json.loads((out / "tune.json").read_text())
    assert report["backend"] == "ray" and (out / "ray").is_dir()  # Ray Tune's own experiment folder
    assert [t["number"] for t in report["trials"]] == [0, 1]
    assert report["trials"][0]["params"] == RECIPE_FIRST and report["recipe_trial"] == 0
    assert {t["state"] for t in report["trials"]} <= {"complete", "pruned"}  # ASHA may stop the second
    done = [t for t in report["trials"] if t["state"] == "complete"]
    assert done and all(t["value"] is not None and t["curve"] and t["seconds"] > 0 for t in report["trials"])
    for t in report["trials"]:  # a sampled strategy option is kept only where the trial's strategy has it
        assert ("finetune.r" in t["params"]) == (t["params"]["finetune.strategy"] == "lora")
        assert 1e-3 <= t["params"]["training.learning_rate"] <= 3e-2
    assert report["best"]["value"] == max(t["value"] for t in done)
    assert (out / "tune.png").stat().st_size > 0 and "| trial |" in (out / "tune.md").read_text()
    assert not list((out / "trials").rglob("*.safetensors"))  # trials keep no weights

    best = load_recipe(str(out / "best.yaml"))
    params = report["best"]["params"]
    assert best.tune is None and best.finetune.strategy == params["finetune.strategy"]
    assert best.training["learning_rate"] == pytest.approx(params["training.learning_rate"])
    assert (out / "best" / "metrics.json").is_file()
    assert "validation" in report["best_run"] and "its recipe" in capsys.readouterr().out


def test_the_pruner_waits_half_the_fewest_epochs_before_it_stops_a_trial(tiny_bert, sentiment_files, tmp_path):
    """Measured on the drug reviews: the default recipe predicts the majority class on validation after
    epochs 1 and 2 at every seed and learns from epoch 3, so a pruner acting at epoch 1 stopped trials
    with the default's own settings."""
    import importlib.util

    import optuna

    from hf_transfer.runs import raytune, tune
    from hf_transfer.validate import load_recipe

    def warmup(**tune_section):
        recipe = load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, **tune_section))
        return tune.Search(recipe, tmp_path / "search").pruner_warmup()

    assert warmup(space={"num_train_epochs": {"low": 3, "high": 6}}) == 2
    assert warmup(space={"num_train_epochs": [5, 4, 8]}) == 2
    assert warmup(space={"learning_rate": [1e-3]}) == 2  # the recipe names no epochs: Trainer's 3
    assert warmup(space={"num_train_epochs": {"low": 3, "high": 6}}, pruner_warmup=0) == 0
    with pytest.raises(RecipeError, match="tune.pruner_warmup"):
        warmup(space={"learning_rate": [1e-3]}, pruner_warmup=-1)

    recipe = load_recipe(_recipe(tiny_bert, sentiment_files, tmp_path, space={"num_train_epochs": {"low": 4, "high": 6}}))
    pruner = tune.optuna_pruner(optuna, tune.Search(recipe, tmp_path / "search"))  # warm-up 2: stops from epoch 3
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(2):  # two good trials, then one far worse at every epoch, reported as the trials report
        good = study.ask()
        for epoch in (1, 2, 3):
            good.report(0.9, epoch)
        study.tell(good, 0.9)
    bad, stops = study.ask(), []
    for epoch in (1, 2, 3):
        bad.report(0.1, epoch)
        stops.append(bad.should_prune())
    assert stops == [False, False, True]
    if importlib.util.find_spec("ray") is not None:  # the slow tier installs the ray extra
        kwargs = raytune.run_kwargs(recipe.tune, "maximize", tmp_path, None, True, 2)
        assert min(milestone for milestone, _ in kwargs["scheduler"]._brackets[0]._rungs) == 3  # first rung: epoch 3
