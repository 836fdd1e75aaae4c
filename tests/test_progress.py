"""Progress bars on hf-transfer's long steps follow one rule (hf_transfer.console): shown on stderr unless the
run's training.disable_tqdm, HF_HUB_DISABLE_PROGRESS_BARS or a non-first process of a launcher turns them off;
verify's bar comes from its separate reload process, and verify stays exact with it."""

import shutil

import pytest
import yaml
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

from hf_transfer import console
from hf_transfer.cli import main
from hf_transfer.inference import run_batches
from tests.test_inference import TEXTS, bert_split  # noqa: F401 (a fixture)


@pytest.fixture
def bars_at_once(monkeypatch):
    """Bars for any step, however short (the tiny model's steps take milliseconds)."""
    monkeypatch.setattr(console, "DELAY_S", 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.fixture
def hub_bars_off():
    disable_progress_bars()
    yield
    enable_progress_bars()


def test_the_rule(bars_at_once, monkeypatch):
    assert console.bar_options("x")["desc"] == "x"
    assert console.bar_options("x", disable=True) is None  # training.disable_tqdm
    monkeypatch.setenv("LOCAL_RANK", "1")  # a launcher's second process on this machine
    assert console.bar_options("x") is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert console.bar_options("x") is not None


def test_hub_switch_turns_bars_off(bars_at_once, hub_bars_off, capsys):
    with console.progress(3, "quiet") as bar:
        bar.update(3)
    assert "quiet" not in capsys.readouterr().err


def test_cached_inference_advances_a_bar_by_every_example(bert_split, bars_at_once, capsys):  # noqa: F811
    model, split, collator, _ = bert_split
    with console.progress(len(split), "cached features") as bar:
        run_batches(model, split, collator, 4, "cpu", lambda i, out: None, bar)  # batches of 4 and 2
        assert bar.n == len(TEXTS)
    assert "cached features: 100%" in capsys.readouterr().err


def verifiable_copy(finished_run, where, disable_tqdm: bool):
    out, _ = finished_run
    copy = shutil.copytree(out, where)
    recipe = yaml.safe_load((copy / "recipe.yaml").read_text())
    recipe["training"]["disable_tqdm"] = disable_tqdm
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return copy


def test_verify_shows_its_reload_bar_and_stays_exact(finished_run, tmp_path, bars_at_once, capsys):
    copy = verifiable_copy(finished_run, tmp_path / "run", disable_tqdm=False)
    assert main(["verify", str(copy)]) == 0  # tolerance 0: the bar's generator input keeps the batches
    captured = capsys.readouterr()
    assert "verify test: 100%" in captured.err and "16/16" in captured.err
    assert "reloads with" in captured.out


def test_disable_tqdm_turns_the_verify_bar_off(finished_run, tmp_path, bars_at_once, capsys):
    copy = verifiable_copy(finished_run, tmp_path / "run", disable_tqdm=True)
    assert main(["verify", str(copy)]) == 0
    assert "verify" not in capsys.readouterr().err


def test_predict_shows_a_bar_unless_bars_are_off(finished_run, bars_at_once, capsys):
    out, _ = finished_run
    texts = ["good great drug", "awful terrible pain", "fine"]
    assert main(["predict", str(out), *texts]) == 0
    shown = capsys.readouterr()
    assert "predict: 100%" in shown.err and "3/3" in shown.err
    disable_progress_bars()
    try:
        assert main(["predict", str(out), *texts]) == 0
    finally:
        enable_progress_bars()
    quiet = capsys.readouterr()
    assert "predict" not in quiet.err and quiet.out == shown.out  # the same answers, with or without a bar


def test_a_short_step_leaves_no_trace(capsys, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with console.progress(2, "brief") as bar:
        bar.update(2)  # well under DELAY_S
    assert "brief" not in capsys.readouterr().err
