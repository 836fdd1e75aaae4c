"""Property-based: malformed recipes and data files always end in the documented one-line error."""

import dataclasses
import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hf_transfer.validate import load_recipe
from hf_transfer.recipe.yaml import parse_yaml
from hf_transfer.errors import DataError, RecipeError
from hf_transfer.recipe.schema import DataConfig, HubConfig, ModelConfig
from hf_transfer.strategies import STRATEGIES

STRATEGY_CONFIGS = {name: s.options for name, s in STRATEGIES.items()}

BASE = {
    "model": {"name_or_path": "some/model"},
    "data": {"path": "csv", "data_files": {"train": "t.csv"}},
    "finetune": {"strategy": "lora", "r": 8},
    "training": {"learning_rate": 1e-4, "num_train_epochs": 2, "output_dir": "o"},
    "hub": {"push": False},
}
SECTIONS = {"model": ModelConfig, "data": DataConfig, "hub": HubConfig, "finetune": STRATEGY_CONFIGS["lora"]}
def _training_types():
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    names = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "seed", "fp16", "output_dir")
    return {n: hints[n] for n in names}


TRAINING = _training_types()

scalars = st.one_of(st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2))


def wrong_values(tp) -> st.SearchStrategy:
    """Values that a field of annotation `tp` must reject."""
    def ok(v):
        try:
            from hf_transfer.recipe.typed import check_value as _check_value
            _check_value(v, tp, "x")
            return False
        except RecipeError:
            return True
    return values.filter(ok)


def field_types(cls):
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "strategy"]


@st.composite
def malformed_recipe(draw):
    import copy

    raw = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["unknown_key", "wrong_type", "missing", "not_mapping", "strategy",
                                 "foreign_option", "training_type", "unknown_section"]))
    section = draw(st.sampled_from(sorted(SECTIONS)))
    if kind == "unknown_key":
        key = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
        cls = SECTIONS[section]
        if key in {f.name for f in dataclasses.fields(cls)}:
            key += "_zz"
        raw[section][key] = draw(values)
        return raw, f"{section}.{key}"
    if kind == "wrong_type":
        name, tp = draw(st.sampled_from(field_types(SECTIONS[section])))
        raw[section][name] = draw(wrong_values(tp))
        return raw, f"{section}.{name}"
    if kind == "missing":
        section = draw(st.sampled_from(["model", "data"]))
        if draw(st.booleans()):
            del raw[section]
            return raw, section
        del raw[section]["name_or_path" if section == "model" else "path"]
        return raw, f"{section}."
    if kind == "not_mapping":
        raw[section] = draw(st.one_of(st.text(min_size=1, max_size=5), st.integers(), st.lists(scalars, min_size=1)))
        return raw, section
    if kind == "strategy":
        raw["finetune"] = {"strategy": draw(st.text(max_size=6).filter(lambda s: s not in STRATEGY_CONFIGS))}
        return raw, "finetune.strategy"
    if kind == "foreign_option":
        raw["finetune"] = {"strategy": "full", draw(st.sampled_from(["r", "alpha", "freeze", "merge"])): 1}
        return raw, "finetune."
    if kind == "training_type":
        name, tp = draw(st.sampled_from(sorted(TRAINING.items(), key=lambda kv: kv[0])))
        raw["training"][name] = draw(wrong_values(tp))
        return raw, f"training.{name}"
    key = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8))
    if key in BASE or key in ("early_stopping_patience", "nan_policy", "vision", "speech"):
        key += "zz"
    raw[key] = {}
    return raw, key


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(malformed_recipe())
def test_malformed_recipes_give_one_line_naming_the_key(case):
    raw, where = case
    with pytest.raises(RecipeError) as info:
        load_recipe(raw)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(where), (message, where)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_yaml_text_never_escapes_as_another_exception(text):
    try:
        load_recipe(parse_yaml(text, "fuzz") if text.strip() else None)
    except RecipeError as err:
        assert "\n" not in str(err)


# ----------------------------------------------------------------------------- value ranges

INT32 = 2**31 - 1


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= INT32


def _unit(v, closed_high=False):
    return _finite(v) and 0 <= v and (v <= 1 if closed_high else v < 1)


# key -> what an accepted value satisfies (checked against every recipe that validates)
RANGES = {
    "training.learning_rate": lambda v: _finite(v) and v > 0,
    "training.num_train_epochs": lambda v: _finite(v) and v <= INT32,
    "training.max_steps": lambda v: v == -1 or _count(v),
    "training.per_device_train_batch_size": _count,
    "training.per_device_eval_batch_size": _count,
    "training.gradient_accumulation_steps": _count,
    "training.weight_decay": lambda v: _finite(v) and v >= 0,
    "training.warmup_steps": lambda v: _finite(v) and 0 <= v <= INT32,
    "training.eval_strategy": lambda v: v in ("no", "epoch", "steps"),
    "early_stopping_patience": lambda v: v is None or _count(v),
    "model.max_length": _count,
    "data.max_train_samples": lambda v: v is None or _count(v),
    "data.max_eval_samples": lambda v: v is None or _count(v),
    "data.validation_size": lambda v: _finite(v) and 0 < v < 1,
}
FINETUNE_RANGES = {
    "lora": {"r": _count, "alpha": lambda v: _finite(v) and v > 0, "dropout": _unit},
    "adalora": {"init_r": _count, "target_r": _count, "alpha": lambda v: _finite(v) and v > 0, "dropout": _unit,
                "tinit": lambda v: _finite(v) and v >= 0, "deltaT": _count},
    "loha": {"r": _count, "alpha": lambda v: _finite(v) and v > 0, "rank_dropout": _unit, "module_dropout": _unit},
    "lokr": {"r": _count, "alpha": lambda v: _finite(v) and v > 0, "rank_dropout": _unit, "module_dropout": _unit},
    "staged": {"head_epochs": lambda v: _finite(v) and v >= 0, "unfreeze_lr": lambda v: v is None or v > 0,
               "l2sp": lambda v: _finite(v) and v >= 0},
}
EDGES = [0, -1, 1, 2, 0.0, -0.0, 0.5, 1.0, 1.5, -0.5, 1e-9, INT32, INT32 + 1, 2**32, 2**63 - 1, 2**63, 10**30,
         -(2**63), float("nan"), float("inf"), float("-inf"), 1e308, 5e-324]
range_values = st.one_of(
    st.sampled_from(EDGES), st.integers(min_value=-2, max_value=64), st.floats(min_value=0, max_value=1),
    st.sampled_from(EDGES), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(), st.floats(min_value=-2, max_value=2), st.booleans(), st.none(), st.text(max_size=3),
    st.sampled_from(["no", "epoch", "steps"]),
)


@st.composite
def ranged_recipe(draw):
    """BASE with 1-4 keys set to numbers from anywhere: edges, huge, negative, NaN, infinities."""
    import copy

    raw = copy.deepcopy(BASE)
    chosen = {}
    for key in draw(st.lists(st.sampled_from(sorted(RANGES)), min_size=0, max_size=3, unique=True)):
        value = chosen[key] = draw(range_values)
        if key == "early_stopping_patience":
            raw[key] = value
        else:
            section, name = key.split(".")
            raw[section][name] = value
    strategy = draw(st.sampled_from(sorted(FINETUNE_RANGES)))
    raw["finetune"] = {"strategy": strategy}
    for name in draw(st.lists(st.sampled_from(sorted(FINETUNE_RANGES[strategy])), max_size=2, unique=True)):
        value = chosen[f"finetune.{name}"] = raw["finetune"][name] = draw(range_values)
    if not chosen:
        raw["training"]["learning_rate"] = chosen["training.learning_rate"] = draw(range_values)
    return raw, strategy, chosen


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranged_recipe())
def test_values_out_of_range_give_one_line_naming_the_key_or_a_valid_recipe(case):
    raw, strategy, chosen = case
    try:
        recipe = load_recipe(raw)
    except RecipeError as err:
        message = str(err)
        assert "\n" not in message
        named = set(chosen) | ({"finetune.target_r"} if strategy == "adalora" else set())
        assert any(message.startswith(f"{key}:") for key in named), (message, chosen)
        event("refused: one-line RecipeError")
        return
    event("accepted: a valid recipe")
    for key, value in chosen.items():  # accepted: every value within its range
        check = FINETUNE_RANGES[strategy][key.split(".")[1]] if key.startswith("finetune.") else RANGES[key]
        assert check(value), (key, value)
    steps = recipe.training.get("max_steps", -1)
    assert steps > 0 or recipe.training["num_train_epochs"] > 0
    if recipe.early_stopping_patience is not None:
        assert recipe.training.get("eval_strategy", "epoch") != "no"


# ----------------------------------------------------------------------------- data files

HEADER = "review,label"
good_row = st.tuples(st.sampled_from(["good drug", "bad pain", "fine"]), st.sampled_from(["positive", "negative"]))


@st.composite
def malformed_csv(draw):
    kind = draw(st.sampled_from(["empty", "header_only", "no_label_col", "bad_label", "numbers_as_text",
                                 "binary", "no_text_col"]))
    rows = draw(st.lists(good_row, min_size=2, max_size=6))
    body = "\n".join(f"{t},{lab}" for t, lab in rows)
    if kind == "empty":
        return b"", "data"
    if kind == "header_only":
        return (HEADER + "\n").encode(), "data"
    if kind == "no_label_col":
        return ("review,stars\n" + body).encode(), "data.label_column"
    if kind == "no_text_col":
        return ("text,label\n" + body).encode(), "data.text_column"
    if kind == "bad_label":
        bad = draw(st.sampled_from(["neutral", "5", "POSITIVE", "maybe"]))
        return (HEADER + "\n" + body + f"\nsome review,{bad}").encode(), "data.label_column"
    if kind == "numbers_as_text":
        labels = ["positive", "negative"]  # two classes: a single class is a fault of its own
        return (HEADER + "\n" + "\n".join(f"{i},{labels[i % 2]}" for i in range(len(rows)))).encode(), "data.text_column"
    return draw(st.binary(min_size=1, max_size=64)), "data"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from tests.tiny import save_tiny_bert

    return AutoTokenizer.from_pretrained(save_tiny_bert(tmp_path_factory.mktemp("tok")))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(malformed_csv())
def test_malformed_data_files_give_one_line_naming_the_problem(tokenizer, tmp_path, case):
    from hf_transfer.tasks import text_classification as text
    from hf_transfer.tasks import resolve
    from hf_transfer.tasks.data import load_data

    content, where = case
    path = Path(tmp_path) / "train.csv"
    path.write_bytes(content)
    recipe = load_recipe({
        "model": {"name_or_path": "unused"},
        "data": {"path": "csv", "data_files": {"train": str(path)}, "text_column": "review",
                 "label_names": ["negative", "positive"], "test_split": None},
    })
    with pytest.raises(DataError) as info:
        task, spec = resolve(recipe)
        loaded = load_data(recipe.data, text.input_columns(spec), seed=0, labeler=task.labeler(spec))
        text.preprocess(loaded.splits, tokenizer, spec)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(where), (str(info.value), where)


# ----------------------------------------------------------------------------- the Python API


def _api_outcome(call, named: set[str] | None = None) -> str:
    """Run an API call that must end in one of our one-line errors (or succeed); the hypothesis event."""
    from hf_transfer.errors import HfTransferError

    try:
        call()
    except HfTransferError as err:
        message = str(err)
        assert "\n" not in message, message
        if named:
            assert any(message.startswith(f"{key}:") for key in named) or message.startswith("data.data_files"), message
        event(f"one line: {type(err).__name__}")
        return message
    event("accepted")
    return ""


def _with_output(raw: dict, folder: Path) -> dict:
    if isinstance(raw.get("training"), dict) and raw["training"].get("output_dir") == BASE["training"]["output_dir"]:
        raw["training"]["output_dir"] = str(folder / "o")  # a valid recipe fails at its data, never writes in cwd
    return raw


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(case=st.one_of(ranged_recipe().map(lambda c: c[0]), malformed_recipe().map(lambda c: c[0])))
def test_the_python_api_ends_in_one_line(tmp_path, case):
    """`hf_transfer.finetune(dict)` with any generated recipe (malformed, or values from anywhere): one of our
    error types in one line (a valid one fails at its missing data file), never another exception."""
    from hf_transfer import finetune

    message = _api_outcome(lambda: finetune(_with_output(case, Path(tmp_path))))
    assert message, "every generated recipe lacks its data file"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(RANGES)), value=range_values)
def test_python_api_overrides_from_anywhere_end_in_one_line_naming_the_key(tmp_path, key, value):
    """`finetune(recipe, **{key: value})`: a refused value names its key; an accepted one fails at the data."""
    import copy

    from hf_transfer import finetune

    raw = _with_output(copy.deepcopy(BASE), Path(tmp_path))
    message = _api_outcome(lambda: finetune(raw, **{key: value}), named={key})
    assert message


DEVICES = [None, "cpu", "cpu:0", "cuda:99", "mps", "meta", "nonsense", "", 0, -1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(top_k=st.one_of(st.integers(1, 3), range_values), batch_size=st.one_of(st.integers(1, 16), range_values),
       device=st.sampled_from(DEVICES), tolerance=range_values)
def test_the_output_commands_python_api_ends_in_one_line(finished_run, sentiment_files, tmp_path,
                                                         top_k, batch_size, device, tolerance):
    """predict, evaluate and verify called from Python with numbers and devices from anywhere: a result or one
    line, as from the command line."""
    from hf_transfer.outputs.evaluate import evaluate
    from hf_transfer.outputs.predict import predict
    from hf_transfer.outputs.verify import verify

    run = finished_run[0]
    _api_outcome(lambda: predict(run, ["good great drug"], top_k=top_k, batch_size=batch_size, device=device))
    _api_outcome(lambda: evaluate(run, [sentiment_files["test"]], batch_size=batch_size, device=device))
    _api_outcome(lambda: verify(Path(tmp_path), device=device, tolerance=tolerance))  # not a run: never reloads


INT32_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))  # int32 slots of anything would not fit
from hf_transfer import finetune
from hf_transfer.outputs.evaluate import evaluate
from hf_transfer.outputs.predict import predict
big = 2**31 - 1
predict(sys.argv[1], ["good great drug"], top_k=big, batch_size=big)
evaluate(sys.argv[1], [sys.argv[2]], batch_size=big)
import yaml
raw = yaml.safe_load(open(sys.argv[3]))
raw["training"]["output_dir"] = sys.argv[4]
finetune(raw, **{"training.per_device_eval_batch_size": big, "training.per_device_train_batch_size": big,
                 "training.num_train_epochs": 1})
print("done")
"""


def test_the_largest_batch_sizes_a_recipe_accepts_run_in_little_memory(finished_run, sentiment_files, tmp_path):
    """A batch size of int32's maximum is a valid count: training, evaluate and predict treat it as "all rows
    in one batch" and never make room for that many (torch's batch sampler, Trainer's loss per slot)."""
    import subprocess
    import sys

    run, recipe_file = finished_run
    done = subprocess.run([sys.executable, "-c", INT32_SCRIPT, str(run), sentiment_files["test"], str(recipe_file),
                           str(tmp_path / "big")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("done"), done.stderr[-3000:]
