"""Every value range-checked at validation time: a one-line RecipeError naming the key and the bad value,
before anything heavy loads (no model, no dataset). Also duplicate YAML keys, plain run names, duplicate
CSV columns and the predict / verify command-line numbers."""

import pytest

from hf_transfer.errors import DataError, HfTransferError, RecipeError
from hf_transfer.validate import load_recipe
from hf_transfer.recipe.yaml import parse_yaml

BIG = 2**40  # beyond int32: an OverflowError traceback once it reached torch


def minimal(**sections):
    raw = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}}
    raw.update(sections)
    return raw


def lora(**options):
    return ["finetune.strategy=lora", *(f"finetune.{k}={v}" for k, v in options.items())]


REFUSED = [
    # training
    (["training.learning_rate=0"], "training.learning_rate: must be > 0, got 0.0"),
    (["training.learning_rate=-1e-4"], "training.learning_rate: must be > 0, got -0.0001"),
    (["training.learning_rate=.nan"], "training.learning_rate: must be a finite number, got nan"),
    (["training.learning_rate=.inf"], "training.learning_rate: must be a finite number, got inf"),
    (["training.learning_rate=-.inf"], "training.learning_rate: must be a finite number, got -inf"),
    (["training.learning_rate=1e400"], "training.learning_rate: must be a finite number, got inf"),
    (["training.learning_rate=123456789012345678901234567890"],
     "training.learning_rate: out of range, got an integer beyond 2**63"),
    (["training.num_train_epochs=0"],
     "training.num_train_epochs: must be > 0 (or set training.max_steps >= 1), got 0.0"),
    (["training.num_train_epochs=-1"],
     "training.num_train_epochs: must be > 0 (or set training.max_steps >= 1), got -1.0"),
    (["training.num_train_epochs=-1", "training.max_steps=-1"],
     "training.num_train_epochs: must be > 0 (or set training.max_steps >= 1), got -1.0"),
    ([f"training.num_train_epochs={BIG}"], f"training.num_train_epochs: must be <= 2147483647, got {float(BIG)}"),
    (["training.num_train_epochs=.nan"], "training.num_train_epochs: must be a finite number, got nan"),
    (["training.max_steps=0"], "training.max_steps: must be -1 (train num_train_epochs) or in [1, 2147483647], got 0"),
    (["training.max_steps=-5"], "training.max_steps: must be -1 (train num_train_epochs) or in [1, 2147483647], got -5"),
    ([f"training.max_steps={BIG}"],
     f"training.max_steps: must be -1 (train num_train_epochs) or in [1, 2147483647], got {BIG}"),
    (["training.max_steps=2.5"], "training.max_steps: expected int, got 2.5"),
    (["training.per_device_train_batch_size=0"], "training.per_device_train_batch_size: must be >= 1, got 0"),
    (["training.per_device_train_batch_size=-8"], "training.per_device_train_batch_size: must be >= 1, got -8"),
    ([f"training.per_device_train_batch_size={BIG}"],
     f"training.per_device_train_batch_size: must be <= 2147483647, got {BIG}"),
    ([f"training.per_device_train_batch_size={2**70}"],
     "training.per_device_train_batch_size: out of range, got an integer beyond 2**63"),
    (["training.per_device_eval_batch_size=0"], "training.per_device_eval_batch_size: must be >= 1, got 0"),
    (["training.gradient_accumulation_steps=0"], "training.gradient_accumulation_steps: must be >= 1, got 0"),
    (["training.weight_decay=-0.01"], "training.weight_decay: must be >= 0, got -0.01"),
    (["training.weight_decay=.inf"], "training.weight_decay: must be a finite number, got inf"),
    (["training.warmup_steps=-1"], "training.warmup_steps: must be >= 0, got -1.0"),
    (["training.max_grad_norm=.nan"], "training.max_grad_norm: must be a finite number, got nan"),
    (["training.max_grad_norm=-1"], "training.max_grad_norm: must be >= 0, got -1.0"),
    (["training.adam_beta1=1"], "training.adam_beta1: must be in [0, 1), got 1.0"),
    (["training.label_smoothing_factor=1.5"], "training.label_smoothing_factor: must be in [0, 1], got 1.5"),
    (["training.eval_steps=0"], "training.eval_steps: must be > 0, got 0.0"),
    (["training.seed=-1"], "training.seed: must be >= 0, got -1"),
    (["training.eval_strategy=sometimes"], "training.eval_strategy: expected one of no, steps, epoch, got 'sometimes'"),
    (["training.lr_scheduler_type=''"], "training.lr_scheduler_type: expected one of linear, cosine"),
    ([f"training.seed={2**32}"], f"training.seed: must be <= {2**32 - 1}, got {2**32}"),
    # early stopping
    (["early_stopping_patience=0"], "early_stopping_patience: must be >= 1, got 0"),
    (["early_stopping_patience=-3"], "early_stopping_patience: must be >= 1, got -3"),
    (["early_stopping_patience=2", "training.eval_strategy=no"],
     "early_stopping_patience: needs evaluation, but training.eval_strategy is 'no' (got patience 2)"),
    (["early_stopping_patience=2", "training.metric_for_best_model=null"],
     "early_stopping_patience: needs a metric, but training.metric_for_best_model is null"),
    # model, data, domain
    (["model.max_length=0"], "model.max_length: must be >= 1, got 0"),
    (["model.max_length=-1"], "model.max_length: must be >= 1, got -1"),
    ([f"model.max_length={BIG}"], f"model.max_length: must be <= 2147483647, got {BIG}"),
    (["data.max_train_samples=0"], "data.max_train_samples: must be >= 1, got 0"),
    (["data.max_train_samples=-5"], "data.max_train_samples: must be >= 1, got -5"),
    (["data.max_eval_samples=0"], "data.max_eval_samples: must be >= 1, got 0"),
    (["data.validation_size=0"], "data.validation_size: must be in (0, 1), got 0.0"),
    (["data.validation_size=1"], "data.validation_size: must be in (0, 1), got 1.0"),
    (["data.validation_size=-0.2"], "data.validation_size: must be in (0, 1), got -0.2"),
    (["data.validation_size=.nan"], "data.validation_size: must be a finite number, got nan"),
    (["domain.method=dann", "domain.target.path=csv", "domain.target.max_samples=0"],
     "domain.target.max_samples: must be >= 1, got 0"),
    (["domain.method=dann", "domain.target.path=csv", "domain.weight=.inf"],
     "domain.weight: must be a finite number, got inf"),
    (["distill.teacher=t", "distill.temperature=.nan"], "distill.temperature: must be a finite number, got nan"),
    # PEFT methods
    (lora(r=0), "finetune.r: must be >= 1, got 0"),
    (lora(r=-4), "finetune.r: must be >= 1, got -4"),
    (lora(r=BIG), f"finetune.r: must be <= 2147483647, got {BIG}"),
    (lora(alpha=0), "finetune.alpha: must be > 0, got 0"),
    (lora(dropout=2), "finetune.dropout: must be in [0, 1), got 2.0"),
    (lora(dropout=1), "finetune.dropout: must be in [0, 1), got 1.0"),
    (lora(dropout=-0.1), "finetune.dropout: must be in [0, 1), got -0.1"),
    (lora(dropout=".nan"), "finetune.dropout: must be a finite number, got nan"),
    (["finetune.strategy=adalora", "finetune.init_r=0"], "finetune.init_r: must be >= 1, got 0"),
    (["finetune.strategy=adalora", "finetune.target_r=0"], "finetune.target_r: must be >= 1, got 0"),
    (["finetune.strategy=adalora", "finetune.target_r=20"], "finetune.target_r: must be <= init_r (12), got 20"),
    (["finetune.strategy=adalora", "finetune.dropout=1.5"], "finetune.dropout: must be in [0, 1), got 1.5"),
    (["finetune.strategy=adalora", "finetune.tinit=-1"], "finetune.tinit: must be >= 0, got -1"),
    (["finetune.strategy=adalora", "finetune.deltaT=0"], "finetune.deltaT: must be >= 1, got 0"),
    (["finetune.strategy=loha", "finetune.r=0"], "finetune.r: must be >= 1, got 0"),
    (["finetune.strategy=loha", "finetune.rank_dropout=1"], "finetune.rank_dropout: must be in [0, 1), got 1.0"),
    (["finetune.strategy=lokr", "finetune.module_dropout=-1"], "finetune.module_dropout: must be in [0, 1), got -1.0"),
    (["finetune.strategy=lokr", "finetune.alpha=-2"], "finetune.alpha: must be > 0, got -2"),
    # other strategies
    (["finetune.strategy=staged", "finetune.head_epochs=-1"], "finetune.head_epochs: must be >= 0, got -1"),
    (["finetune.strategy=staged", "finetune.unfreeze=0"], "finetune.unfreeze: must be >= 1, got 0"),
    (["finetune.strategy=staged", "finetune.milestones={3: 0}"], "finetune.milestones.3: must be >= 1, got 0"),
    (["finetune.strategy=staged", "finetune.milestones={x: 2}"], "finetune.milestones.x: keys must be epoch numbers"),
    (["finetune.strategy=staged", "finetune.unfreeze_lr=0"], "finetune.unfreeze_lr: must be > 0, got 0.0"),
    (["finetune.strategy=full", "finetune.layer_decay=0"], "finetune.layer_decay: must be > 0, got 0.0"),
    (["finetune.strategy=full", "finetune.l2sp=-1"], "finetune.l2sp: must be >= 0, got -1.0"),
    (["finetune.strategy=partial", "finetune.freeze=-1"], "finetune.freeze: must be >= 0, got -1"),
]


@pytest.mark.parametrize("overrides, message", [pytest.param(o, m, id=" ".join(o)) for o, m in REFUSED])
def test_out_of_range_values_are_one_line_errors_naming_key_and_value(overrides, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(minimal(), overrides)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


ACCEPTED = [
    ["training.learning_rate=1e-9", "training.num_train_epochs=0.5"],
    ["training.num_train_epochs=0", "training.max_steps=10"],  # max_steps wins over epochs
    ["training.max_steps=-1", "training.num_train_epochs=1"],
    ["training.per_device_train_batch_size=1", "training.gradient_accumulation_steps=1", "training.weight_decay=0"],
    ["training.warmup_steps=0", "training.seed=0", f"training.seed={2**32 - 1}"],
    ["early_stopping_patience=1"],
    ["early_stopping_patience=3", "training.eval_strategy=steps", "training.eval_steps=10"],
    ["training.eval_strategy=no"],
    ["model.max_length=1", "data.max_train_samples=1", "data.max_eval_samples=1", "data.validation_size=0.5"],
    lora(r=1, alpha=1, dropout=0),
    ["finetune.strategy=adalora", "finetune.init_r=8", "finetune.target_r=8", "finetune.tinit=0"],
    ["finetune.strategy=loha", "finetune.rank_dropout=0.5", "finetune.module_dropout=0"],
    ["finetune.strategy=staged", "finetune.head_epochs=0", "finetune.unfreeze=2", "finetune.milestones={3: all}"],
    ["finetune.strategy=partial", "finetune.freeze=0"],
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=" ".join)
def test_values_at_the_edge_of_their_range_are_accepted(overrides):
    load_recipe(minimal(), overrides)


# ----------------------------------------------------------------------------- YAML, names, files


@pytest.mark.parametrize("text, message", [
    ("a: 1\na: 2\n", "r.yaml: invalid YAML (line 2, column 1): duplicate key 'a'"),
    ("training:\n  learning_rate: 1e-4\n  seed: 1\n  learning_rate: 1\n",
     "r.yaml: invalid YAML (line 4, column 3): duplicate key 'learning_rate'"),
    ("x: " + "1" * 5000, "r.yaml: invalid YAML: Exceeds the limit"),
])
def test_duplicate_yaml_keys_are_refused_naming_key_and_line(text, message):
    with pytest.raises(RecipeError) as info:
        parse_yaml(text, "r.yaml")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_yaml_merge_keys_may_still_be_overridden():
    assert parse_yaml("base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  x: 3\n", "t")["run"] == {"x": 3, "y": 2}


def test_hf_transfer_validate_refuses_a_duplicate_key_and_a_range_error(tmp_path, capsys):
    from hf_transfer.cli import main

    dup = tmp_path / "dup.yaml"
    dup.write_text("model: {name_or_path: m}\ndata: {path: csv}\ntraining:\n  seed: 1\n  seed: 2\n")
    assert main(["validate", str(dup)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hf-transfer: error: {dup}: invalid YAML (line 5, column 3): duplicate key 'seed' (a key may appear once per mapping)"
    )
    epochs = tmp_path / "epochs.yaml"
    epochs.write_text("model: {name_or_path: m}\ndata: {path: csv}\ntraining: {num_train_epochs: 0}\n")
    assert main(["validate", str(epochs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hf-transfer: error: training.num_train_epochs: must be > 0 (or set training.max_steps >= 1), got 0.0"]


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "", "x y", "a\\b"])
def test_compare_run_names_must_be_plain(name):
    raw = minimal(compare=[{name: {"model.pretrained": False}}])
    with pytest.raises(RecipeError) as info:
        load_recipe(raw)
    assert str(info.value) == f"compare[0]: run name {name!r} must be a plain name (letters, digits, _ or -)"


def test_a_compare_run_named_main_is_refused():
    """'main' is the recipe's own run in the report: a variant of that name replaced its row."""
    with pytest.raises(RecipeError, match="compare\\[1\\]: 'main' names the recipe's own run in the report"):
        load_recipe(minimal(compare=["scratch", {"main": {"training.learning_rate": 1e-3}}]))


def test_plain_compare_run_names_are_accepted():
    load_recipe(minimal(compare=["scratch", {"lr-high_2": {"training.learning_rate": 1e-3}}]))


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ""])
def test_task_names_must_be_plain(name):
    raw = minimal(tasks=[{"name": name, "label_column": "y"}])
    with pytest.raises(RecipeError, match=r"^tasks\[0\]\.name: "):
        load_recipe(raw)


@pytest.mark.parametrize("header, column", [("text,label,text", "text"), ('"a",b,a,b', "a")])
def test_duplicate_csv_columns_are_refused_naming_the_file(tmp_path, header, column):
    from hf_transfer.recipe.schema import DataConfig
    from hf_transfer.tasks.data import load_raw

    path = tmp_path / "train.csv"
    path.write_text(f"{header}\n1,2,3,4\n")
    with pytest.raises(DataError) as info:
        load_raw(DataConfig(path="csv", data_files={"train": str(path)}))
    assert str(info.value) == f"data.data_files.train: column {column!r} appears twice in the header of {path}"


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv, message", [
    (["predict", "out", "x", "--top-k", "0"], "argument --top-k: must be an integer from 1 to 2147483647, got '0'"),
    (["predict", "out", "x", "--top-k", "-2"], "argument --top-k: must be an integer from 1 to 2147483647, got '-2'"),
    (["predict", "out", "x", "--batch-size", "0"],
     "argument --batch-size: must be an integer from 1 to 2147483647, got '0'"),
    (["predict", "out", "x", "--batch-size", "two"], "argument --batch-size: expected an integer, got 'two'"),
    (["verify", "out", "--tolerance", "-0.1"], "argument --tolerance: must be a finite number >= 0, got '-0.1'"),
    (["verify", "out", "--tolerance", "nan"], "argument --tolerance: must be a finite number >= 0, got 'nan'"),
])
def test_predict_and_verify_numbers_are_argparse_errors(capsys, argv, message):
    from hf_transfer.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert errors == [f"hf-transfer {argv[0]}: error: {message}"]


@pytest.mark.parametrize("kwargs", [{"top_k": 0}, {"batch_size": 0}, {"top_k": True}])
def test_predict_refuses_counts_below_one(tmp_path, kwargs):
    from hf_transfer.outputs.predict import predict

    with pytest.raises(HfTransferError, match=r"^predict: (top_k|batch_size) must be an integer from 1 to 2147483647, got "):
        predict(tmp_path, ["x"], **kwargs)
