"""training.report_to names an integration that is not installed: one line at validation, before anything loads."""

import pytest
import transformers.integrations

from hf_transfer.cli import main
from hf_transfer.errors import RecipeError
from hf_transfer.validate import load_recipe
from tests.tiny import text_recipe


def recipe(tmp_path, report_to):
    raw = text_recipe(tmp_path / "model", {"train": "unused.csv"}, tmp_path / "out")
    raw["training"]["report_to"] = report_to
    return raw


def test_a_missing_integration_is_one_line_before_anything_loads(tmp_path, capsys, monkeypatch):
    import yaml

    monkeypatch.setattr(transformers.integrations, "get_available_reporting_integrations", lambda: ["tensorboard"])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path, "wandb")))  # no model folder, no data: nothing was loaded
    assert main(["finetune", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("hf-transfer: error: training.report_to: wandb is not installed here (installed integrations: "
                   "tensorboard); install it or use report_to: none")


@pytest.mark.parametrize("value", ["tensorboard", ["tensorboard"], "none", "all", ["none"], None])
def test_installed_integrations_and_none_or_all_pass(tmp_path, monkeypatch, value):
    monkeypatch.setattr(transformers.integrations, "get_available_reporting_integrations", lambda: ["tensorboard"])
    assert load_recipe(recipe(tmp_path, value)).training["report_to"] == value


def test_an_unknown_integration_names_the_known_ones(tmp_path):
    with pytest.raises(RecipeError, match=r"training.report_to: unknown integration 'wandbb' \(transformers knows: .*wandb"):
        load_recipe(recipe(tmp_path, ["wandbb"]))
