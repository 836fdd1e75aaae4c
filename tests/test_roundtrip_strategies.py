"""Every strategy round-trips: trained for 2 steps with `verify: true` (the round-trip check runs after
training, reloading the folder without hf_transfer), and `hf-transfer verify` passes on the folder.

Text covers all ten variants; vision (a transformers ViT) and speech (wav2vec2) one PEFT method each.
"""

from __future__ import annotations

import json
import logging

import pytest

from hf_transfer import finetune
from hf_transfer.cli import main
from tests.tiny import save_tiny_audio_model, speech_recipe, text_recipe, write_audio_data
from tests.tiny_vision import save_tiny_vit, vision_recipe, write_imagefolder

TEXT_VARIANTS = {
    "full": {},
    "partial-backbone": {"strategy": "partial", "freeze": "backbone"},
    "partial-1": {"strategy": "partial", "freeze": 1},
    "staged": {"strategy": "staged", "head_epochs": 0, "unfreeze": 1},
    "lora": {"strategy": "lora", "r": 2},
    "lora-dora": {"strategy": "lora", "r": 2, "use_dora": True},
    "ia3": {"strategy": "ia3"},
    "adalora": {"strategy": "adalora", "init_r": 4, "target_r": 2},
    "loha": {"strategy": "loha", "r": 2},
    "lokr": {"strategy": "lokr", "r": 2},
}
ADAPTER_PREFIX = {"lora": "lora_", "lora-dora": "lora_", "ia3": "ia3_", "adalora": "lora_", "loha": "hada_",
                  "lokr": "lokr_"}


def _check(out, capsys, variant: str | None = None, cli: bool = True) -> None:
    """The folder finished, and `hf-transfer verify` reproduces its metrics exactly (`cli`: run the
    command; otherwise the check after training did, which is the same function)."""
    assert (out / "metrics.json").is_file()
    if cli:
        capsys.readouterr()
        assert main(["verify", str(out)]) == 0, capsys.readouterr().err
        summary = capsys.readouterr().out
        assert "metrics reproduced" in summary and "test:" in summary
    if variant in ADAPTER_PREFIX:
        from safetensors import safe_open

        with safe_open(str(out / "adapter_model.safetensors"), "pt") as fh:
            assert any(ADAPTER_PREFIX[variant] in k for k in fh.keys())
        assert json.loads((out / "adapter_config.json").read_text())["peft_type"]


@pytest.mark.parametrize("variant", sorted(TEXT_VARIANTS))
def test_every_text_strategy_round_trips_with_verify_on(variant, tiny_bert, sentiment_files, tmp_path, capsys,
                                                        caplog):
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / variant, **TEXT_VARIANTS[variant])
    recipe["verify"] = True  # the check after training raises VerifyError (exit 2) when it fails
    if variant == "staged":
        recipe["training"] |= {"max_steps": -1, "num_train_epochs": 1, "eval_strategy": "epoch",
                               "save_strategy": "epoch"}
    with caplog.at_level(logging.INFO, logger="hf_transfer.runs.single"):
        finetune(recipe)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("verify:")]
    assert "validation: " in line and "test: " in line and "metrics reproduced" in line
    _check(tmp_path / variant, capsys, variant, cli=variant in ("ia3", "loha", "lokr"))


def test_a_vision_adapter_round_trips(tmp_path, capsys):
    vit = save_tiny_vit(tmp_path / "vit")
    images = write_imagefolder(tmp_path / "images")
    recipe = vision_recipe(vit, images, tmp_path / "out", library="transformers", strategy="lora", r=2)
    recipe["verify"] = True
    finetune(recipe)
    _check(tmp_path / "out", capsys, "lora")


def test_a_speech_adapter_round_trips(tmp_path, capsys):
    model = save_tiny_audio_model(tmp_path / "w2v", "wav2vec2")
    files = write_audio_data(tmp_path / "tones")
    recipe = speech_recipe(model, files["csv"], tmp_path / "out", strategy="lora", r=2)
    recipe["verify"] = True
    finetune(recipe)
    _check(tmp_path / "out", capsys, "lora")
