"""Property-based: malformed recipes and data files always end in the documented one-line error."""

import dataclasses
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_transfer.recipe.validate import load_recipe
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
