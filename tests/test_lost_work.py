"""Nothing finished is lost: --overwrite, --resume and a second run into the same folder leave the
previous run's files byte-identical until a new run is complete."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from pathlib import Path

import pytest

from hf_transfer.cli import main
from hf_transfer.errors import OutputError
from hf_transfer.folder import lock_path, run_lock, staging_dir
from tests.tiny import text_recipe


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(finished_run):
    return finished_run


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def _cli(recipe: Path, out: Path, *args: str) -> int:
    return main(["finetune", str(recipe), f"training.output_dir={out}", *args])


def test_overwrite_with_a_bad_model_keeps_the_previous_run(finished, tmp_path, capsys):
    run, recipe = finished
    out = _copy(run, tmp_path)
    before = snapshot(out)
    assert _cli(recipe, out, "model.name_or_path=m/nope", "--overwrite") == 2
    assert "model.name_or_path" in capsys.readouterr().err
    assert snapshot(out) == before
    assert not staging_dir(out).exists() or not any(p.is_file() for p in staging_dir(out).rglob("*"))


def test_overwrite_with_bad_data_keeps_the_previous_run(finished, tmp_path, capsys):
    run, recipe = finished
    out = _copy(run, tmp_path)
    before = snapshot(out)
    assert _cli(recipe, out, "data.text_column=nope", "--overwrite") == 2
    assert "data.text_column" in capsys.readouterr().err
    assert snapshot(out) == before


def test_overwrite_replaces_the_run_only_when_the_new_one_is_complete(finished, tmp_path):
    run, recipe = finished
    out = _copy(run, tmp_path)
    (out / "old-marker.txt").write_text("from the previous run")
    assert _cli(recipe, out, "training.seed=1", "--overwrite") == 0
    assert not (out / "old-marker.txt").exists() and (out / "metrics.json").is_file()
    assert "seed: 1" in (out / "recipe.yaml").read_text()
    assert not staging_dir(out).exists() and not lock_path(out).exists()
    import json

    states = list((out / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    assert states
    for state in states:  # the best checkpoint is found again where the run now is
        best = json.loads(state.read_text())["best_model_checkpoint"]
        assert Path(best).parent == out / "checkpoints" and Path(best).is_dir()


def test_resume_with_a_bad_override_keeps_metrics_json(finished, tmp_path, capsys):
    run, recipe = finished
    out = _copy(run, tmp_path)
    before = snapshot(out)
    assert _cli(recipe, out, "data.text_column=nope", "--resume") == 2
    assert "data.text_column" in capsys.readouterr().err
    assert snapshot(out) == before  # still a finished run: metrics.json and all


def test_resume_refuses_a_folder_that_is_not_a_run(finished, tmp_path, capsys):
    _, recipe = finished
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    (out / "config.json").write_text("{}")
    before = snapshot(out)
    assert _cli(recipe, out, "--resume") == 2
    assert "is not an hf-transfer run" in capsys.readouterr().err
    assert snapshot(out) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(finished, tmp_path, capsys):
    """--overwrite replaces a run; a folder of other files stays as it is, even after a finished run."""
    _, recipe = finished
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    before = snapshot(out)
    assert _cli(recipe, out, "--overwrite") == 2
    assert "holds files but no hf-transfer run" in capsys.readouterr().err
    assert snapshot(out) == before and not staging_dir(out).exists()


def test_a_second_run_into_a_locked_folder_is_refused(finished, tmp_path, capsys):
    run, recipe = finished
    out = _copy(run, tmp_path)
    before = snapshot(out)
    with run_lock(out):  # a run of this process holds the folder
        assert _cli(recipe, out, "--overwrite") == 2
        assert "is in use by another run" in capsys.readouterr().err
    assert snapshot(out) == before


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    dead = subprocess.Popen(["sleep", "0"])  # a process id that has finished
    dead.wait()
    lock_path(out).write_text(f"{dead.pid} {socket.gethostname()}\n")
    with run_lock(out):
        assert lock_path(out).read_text().split()[0] == str(os.getpid())
    assert not lock_path(out).exists()
    with run_lock(out), pytest.raises(OutputError, match="in use by another run"), run_lock(out):
        pass


def test_a_failed_start_leaves_no_folder_that_blocks_a_rerun(tiny_bert, sentiment_files, tmp_path, capsys):
    import yaml

    out = tmp_path / "fresh"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["finetune", str(path), "data.text_column=nope"]) == 2
    capsys.readouterr()
    assert main(["finetune", str(path)]) == 0  # no --overwrite needed: nothing was written


def test_train_loss_after_resume_covers_the_whole_run(tiny_bert, sentiment_files, tmp_path):
    import shutil

    from hf_transfer import finetune

    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "a")
    recipe["training"] |= {"max_steps": 4, "save_steps": 2, "eval_steps": 2, "save_total_limit": None,
                           "load_best_model_at_end": False, "learning_rate": 1e-3}
    whole = finetune(recipe).metrics["train"]["train_loss"]
    resumed_dir = Path(shutil.copytree(tmp_path / "a", tmp_path / "b"))
    shutil.rmtree(resumed_dir / "checkpoints" / "checkpoint-4")  # as if stopped after step 2
    (resumed_dir / "metrics.json").unlink()
    recipe["training"]["output_dir"] = str(resumed_dir)
    resumed = finetune(recipe, resume=True).metrics["train"]
    assert resumed["train_loss"] == pytest.approx(whole, rel=1e-6)


def _failing_in(monkeypatch, module, bad) -> None:
    """`module.run_single` raises a one-line DataError for the part (fold, seed) `bad(recipe)` picks."""
    from hf_transfer.errors import DataError

    real = module.run_single

    def run_single(recipe, *args, **kwargs):
        if bad(recipe):
            raise DataError("data.path: failing on purpose in a later part")
        return real(recipe, *args, **kwargs)

    monkeypatch.setattr(module, "run_single", run_single)


@pytest.mark.parametrize("kind", ["cv", "seeds"])
def test_overwrite_of_folds_or_seeds_failing_in_a_later_part_keeps_the_previous_run(
        kind, tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys):
    import json

    import yaml

    from hf_transfer.runs import cv, seeds

    out = tmp_path / "run"
    recipe = text_recipe(tiny_bert, sentiment_files, out)
    recipe |= {"cv": {"folds": 2}} if kind == "cv" else {"seeds": [1, 2]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["finetune", str(path)]) == 0
    before = snapshot(out)
    module, bad = (cv, lambda r: r.cv.fold == 1) if kind == "cv" else (seeds, lambda r: r.training["seed"] == 2)
    with monkeypatch.context() as patched:
        _failing_in(patched, module, bad)
        assert main(["finetune", str(path), "training.learning_rate=0.02", "--overwrite"]) == 2
    assert "failing on purpose" in capsys.readouterr().err
    assert snapshot(out) == before  # not a mix of new first part and old later parts
    assert not staging_dir(out).exists() and not lock_path(out).exists()

    assert main(["finetune", str(path), "training.learning_rate=0.02", "--overwrite"]) == 0
    parts = ["fold-0", "fold-1"] if kind == "cv" else ["seed-1", "seed-2"]
    for part in parts:
        saved = yaml.safe_load((out / part / "recipe.yaml").read_text())
        assert saved["training"]["learning_rate"] == 0.02
        assert saved["training"]["output_dir"] == str(out / part)  # where it is, not where it was written
        state = json.loads(next((out / part / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
        assert state["best_model_checkpoint"].startswith(str(out / part / "checkpoints"))
    summary = json.loads((out / ("cv.json" if kind == "cv" else "report.json")).read_text())
    assert str(staging_dir(out)) not in json.dumps(summary)
    assert not staging_dir(out).exists() and not lock_path(out).exists()


def test_overwrite_of_a_run_with_a_comparison_failing_in_a_variant_keeps_the_previous_run(
        tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys):
    """The main run and its comparison variants replace the previous ones together: a variant that fails
    leaves the previous main run and its comparison byte-identical."""
    import json

    import yaml

    from hf_transfer.runs import compare

    out = tmp_path / "run"
    recipe = text_recipe(tiny_bert, sentiment_files, out) | {"compare": ["scratch"]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["finetune", str(path)]) == 0
    before = snapshot(out)
    assert any(name.startswith("compare/scratch/") for name in before)
    with monkeypatch.context() as patched:
        _failing_in(patched, compare, lambda r: not r.model.pretrained)
        assert main(["finetune", str(path), "training.learning_rate=0.02", "--overwrite"]) == 2
    assert "failing on purpose" in capsys.readouterr().err
    assert snapshot(out) == before  # not a new main run beside the old comparison
    assert not staging_dir(out).exists() and not lock_path(out).exists()

    assert main(["finetune", str(path), "training.learning_rate=0.02", "--overwrite"]) == 0
    for part in (out, out / "compare" / "scratch"):
        saved = yaml.safe_load((part / "recipe.yaml").read_text())
        assert saved["training"]["learning_rate"] == 0.02 and saved["training"]["output_dir"] == str(part)
    assert str(staging_dir(out)) not in (out / "report.json").read_text()
    assert json.loads((out / "report.json").read_text())["runs"]
    assert not staging_dir(out).exists() and not lock_path(out).exists()


def test_put_in_place_says_replaced_only_when_a_folder_was_replaced(tmp_path, caplog):
    from hf_transfer.folder import put_in_place

    for round_ in ("first", "second"):
        (tmp_path / ".out.new").mkdir()
        (tmp_path / ".out.new" / "f").write_text(round_)
        with caplog.at_level("INFO", logger="hf_transfer.folder"):
            caplog.clear()
            put_in_place(tmp_path / ".out.new", tmp_path / "out")
        assert ("replaced" in caplog.text) == (round_ == "second")
        assert (tmp_path / "out" / "f").read_text() == round_ and not (tmp_path / ".out.new").exists()
