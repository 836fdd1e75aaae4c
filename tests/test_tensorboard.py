"""report_to: tensorboard writes its event files under <output_dir>/runs (also when --overwrite stages the new
run beside the old one), and `push` uploads them; without report_to no runs/ appears."""

import pytest

from hf_transfer import finetune
from hf_transfer.cli import main
from tests.test_hub import TOKEN, FakeHub
from tests.tiny import text_recipe

pytest.importorskip("tensorboard")


def scalar_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return set(EventAccumulator(str(folder)).Reload().Tags()["scalars"])


@pytest.fixture(scope="module")
def logged(tiny_bert, sentiment_files, tmp_path_factory):
    """A run with report_to tensorboard, run twice into one folder (the second with --overwrite)."""
    out = tmp_path_factory.mktemp("tb") / "run"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe["training"]["report_to"] = "tensorboard"
    finetune(recipe)
    finetune(recipe, overwrite=True)  # staged in .run.new, then put in place of the first run
    return out


def test_event_files_are_in_the_run_folder_not_under_checkpoints(logged):
    [run_dir] = (logged / "runs").iterdir()  # the first run's logs went with the folder it replaced
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert not list((logged / "checkpoints").rglob("events.out.tfevents.*"))
    assert not list(logged.parent.glob(".run.*"))  # no staging sibling left
    tags = scalar_tags(run_dir)
    assert {"train/loss", "eval/accuracy", "test/accuracy"} <= tags  # the final test evaluation is logged too


def test_push_uploads_the_event_files(logged, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = FakeHub().install(monkeypatch)
    assert main(["push", str(logged), "me/tiny-tb"]) == 0
    [sent] = hub.uploads
    events = [name for name in sent["files"] if name.startswith("runs/")]
    assert events and all("events.out.tfevents." in name for name in events)
    assert not [name for name in sent["files"] if name.startswith("checkpoints/")]


def test_without_report_to_there_is_no_runs_folder(finished_run):
    out, _ = finished_run
    assert (out / "metrics.json").is_file() and not (out / "runs").exists()
    assert not list(out.rglob("events.out.tfevents.*"))
