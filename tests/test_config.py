import subprocess
import sys
from pathlib import Path

import pytest

from hf_transfer.validate import load_recipe
from hf_transfer.recipe.yaml import parse_yaml
from hf_transfer.errors import RecipeError
from hf_transfer.strategies.freeze import PartialConfig
from hf_transfer.strategies.peft import LoraConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def minimal(**sections):
    raw = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}}
    raw.update(sections)
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.model.name_or_path


def test_shipped_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"bert_sst2.yaml", "bert_sst2_lora.yaml", "minilm_drugreview.yaml"} <= names


def test_yaml_reads_exponent_floats_as_floats():
    assert parse_yaml("a: 2e-5\nb: 1E3\nc: 1.5\nd: 3\ne: .5", "t") == {
        "a": 2e-5, "b": 1000.0, "c": 1.5, "d": 3, "e": 0.5
    }


def test_yaml_booleans_follow_yaml_1_2():
    assert parse_yaml("a: no\nb: on\nc: true\nd: False\ne: yes", "t") == {
        "a": "no", "b": "on", "c": True, "d": False, "e": "yes"
    }
    assert load_recipe(minimal(), ["training.eval_strategy=no"]).training["eval_strategy"] == "no"


def test_learning_rate_2e_5_is_a_float():
    r = load_recipe(ROOT / "recipes" / "bert_sst2.yaml")
    assert isinstance(r.training["learning_rate"], float) and r.training["learning_rate"] == 2e-5
    assert load_recipe(minimal(), ["training.learning_rate=2e-5"]).training["learning_rate"] == 2e-5


@pytest.mark.parametrize(
    "raw, message",
    [
        (minimal(finetune={"strategy": "full", "bogus": 1}), "finetune.bogus: not an option of strategy 'full'"),
        (minimal(finetune={"strategy": "full", "r": 8}), "finetune.r: not an option of strategy 'full'"),
        (minimal(finetune={"strategy": "magic"}), "finetune.strategy: unknown strategy 'magic'"),
        (minimal(training={"learning_rate": "fast"}), "training.learning_rate: expected float, got 'fast'"),
        (minimal(training={"num_train_epochs": True}), "training.num_train_epochs: expected float"),
        (minimal(training={"learnin_rate": 1e-4}), "training.learnin_rate: not a transformers.TrainingArguments field"),
        (minimal(bogus={}), "bogus: unknown section"),
        ({"data": {"path": "csv"}}, "model: required section is missing"),
        ({"model": {}, "data": {"path": "csv"}}, "model.name_or_path: required key is missing"),
        (minimal(model={"name_or_path": "m", "colour": "red"}), "model.colour: unknown key"),
        (minimal(model={"name_or_path": 3}), "model.name_or_path: expected str, got 3"),
        (minimal(data={"path": "csv", "problem_type": "ranking"}), "data.problem_type: expected one of"),
        (minimal(data={"path": "csv", "label_names": "ab"}), "data.label_names: expected list or null"),
        (minimal(data={"path": "csv", "data_files": {"train": "a.csv", "test": 3}}),  # the entry, not the dict
         "data.data_files.test: expected str or list, got 3"),
        (minimal(data={"path": "csv", "data_files": {"train": "a.csv", "test": ["b.csv", 3]}}),
         "data.data_files.test[1]: expected str, got 3"),
        (minimal(data={"path": "csv", "label_names": ["a", 3]}), "data.label_names[1]: expected str, got 3"),
        (minimal(finetune={"strategy": "partial", "freeze": "head"}), "finetune.freeze: expected"),
        (minimal(finetune={"strategy": "lora", "r": 2.5}), "finetune.r: expected int, got 2.5"),
        (minimal(hub="yes"), "hub: expected a mapping"),
        (minimal(hub={"push": True, "repo_id": "me/my model"}),  # refused now, not by the Hub after training
         "hub.repo_id: 'me/my model' is not a Hub repo id (Repo id must use alphanumeric chars"),
        (minimal(hub={"merged_repo_id": "a/b/c"}), "hub.merged_repo_id: 'a/b/c' is not a Hub repo id (Repo id must be"),
        ([1, 2], "recipe: expected a mapping"),
        (minimal(model={"name_or_path": "m", "modality": "smell"}), "model.modality: unknown modality 'smell'"),
        (minimal(vision={}), "vision: section only applies with model.modality: vision"),
    ],
)
def test_bad_recipes_name_the_key(raw, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(raw)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_python_api_values_are_taken_as_yaml_gives_them(tmp_path):
    """A notebook passes numpy numbers, paths, tuples and arrays: the recipe holds plain numbers, text and lists,
    and the YAML saved with the run reads back equal."""
    import numpy as np

    from hf_transfer.validate import dump_recipe

    raw = minimal(model={"name_or_path": tmp_path / "model", "max_length": np.int32(64),
                         "config_overrides": {"num_hidden_layers": np.int64(2)}},
                  data={"path": "csv", "data_files": {"train": tmp_path / "train.csv"}, "label_names": ("a", "b")},
                  training={"max_steps": np.int64(3), "learning_rate": np.float64(2e-5), "output_dir": tmp_path / "o",
                            "lr_scheduler_kwargs": {"min_lr_rate": np.float32(0.5)}},
                  finetune={"strategy": "lora", "r": np.uint8(4), "target_modules": np.array(["query", "value"])},
                  seeds=list(np.arange(42, 44)), verify=np.bool_(False))
    r = load_recipe(raw, {"training.warmup_steps": np.int16(1)})
    assert r.model.name_or_path == str(tmp_path / "model") and type(r.model.max_length) is int
    assert r.data.label_names == ["a", "b"] and r.data.data_files == {"train": str(tmp_path / "train.csv")}
    assert r.training["max_steps"] == 3 and type(r.training["max_steps"]) is int and r.training["warmup_steps"] == 1
    assert r.finetune.r == 4 and r.finetune.target_modules == ["query", "value"] and r.seeds == [42, 43]
    assert r.verify is False and type(r.training["lr_scheduler_kwargs"]["min_lr_rate"]) is float
    assert load_recipe(parse_yaml(dump_recipe(r), "recipe.yaml")).to_dict() == r.to_dict()


def test_strategy_sections_build_their_own_config():
    assert isinstance(load_recipe(minimal(finetune={"strategy": "lora", "r": 4})).finetune, LoraConfig)
    partial = load_recipe(minimal(finetune={"strategy": "partial", "freeze": 2})).finetune
    assert isinstance(partial, PartialConfig) and partial.freeze == 2


def test_overrides_parse_values_and_create_sections():
    r = load_recipe(
        minimal(),
        ["training.learning_rate=3e-4", "finetune.strategy=lora", "finetune.r=4", "model.pretrained=false",
         "data.label_names=[a, b]", "hub.repo_id=me/x"],
    )
    assert r.training["learning_rate"] == 3e-4
    assert r.finetune.r == 4 and not r.model.pretrained
    assert r.data.label_names == ["a", "b"] and r.hub.repo_id == "me/x"


@pytest.mark.parametrize("override, message", [
    ("finetune.bogus=1", "finetune.bogus"),
    ("novalue", "an override must look like section.key=value"),
    ("model.name_or_path.x=1", "model.name_or_path: is not a section"),
    ("training.learning_rate=[", "override training.learning_rate: invalid YAML"),
])
def test_bad_overrides(override, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[")):
        load_recipe(minimal(), [override])


def test_missing_and_invalid_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: invalid YAML \(line"):
        load_recipe(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(RecipeError, match="recipe is empty"):
        load_recipe(empty)
    latin = tmp_path / "latin.yaml"  # a Windows editor's default: the first bad byte and where
    latin.write_bytes("model: {name_or_path: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin.yaml: not UTF-8 text \(byte b'\\xe9' at position 25\); save it"):
        load_recipe(latin)
    data = tmp_path / "train.csv"  # a data file given as the recipe: it was printed whole into the "one line"
    data.write_text("text,label\n" + "a long enough review,positive\n" * 200)
    with pytest.raises(RecipeError) as info:
        load_recipe(data)
    assert str(info.value) == (f"{data}: expected a mapping of sections (model:, data:, ...), got str "
                               "'text,label a long enough review,positive a long enough revi...")


def test_yaml_loader_is_safe():
    with pytest.raises(RecipeError, match="invalid YAML"):
        parse_yaml("a: !!python/object/apply:os.system ['echo hi']", "t")


@pytest.mark.parametrize("args, key", [
    (["finetune.bogus=1"], "finetune.bogus"),
    (["training.learning_rate=fast"], "training.learning_rate"),
])
def test_cli_recipe_errors_are_one_line_without_traceback(args, key):
    proc = subprocess.run(
        [sys.executable, "-m", "hf_transfer", "finetune", str(ROOT / "recipes/minilm_drugreview.yaml"), *args],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_recipe_with_string_learning_rate_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text((ROOT / "recipes/minilm_drugreview.yaml").read_text().replace(
        "learning_rate: 1e-4", 'learning_rate: "fast"'))
    proc = subprocess.run([sys.executable, "-m", "hf_transfer", "finetune", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "hf-transfer: error: training.learning_rate: expected float, got 'fast'"


def test_cli_commands_match_parser():
    from hf_transfer.cli import COMMANDS, _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
