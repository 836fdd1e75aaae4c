"""Every file of a finished run, emptied, truncated or replaced by garbage: `predict`, `verify` and
`push` end in exit 0 or one line naming the problem, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hf_transfer.cli import main

FILES = ["config.json", "metrics.json", "recipe.yaml", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
DAMAGE = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: max(1, len(data) // 3)],
    "garbage": lambda data: b"\x00\xff garbage \xfe" * 7,
}


def damaged(run: Path, tmp_path: Path, name: str, how: str) -> Path:
    folder = Path(shutil.copytree(run, tmp_path / "run"))
    path = folder / name
    path.write_bytes(DAMAGE[how](path.read_bytes()))
    return folder


def ends_cleanly(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("hf-transfer: error:")]) == (code == 2), err


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_predict_on_a_damaged_run_ends_in_one_line(finished_run, tmp_path, capsys, name, how):
    folder = damaged(finished_run[0], tmp_path, name, how)
    code = main(["predict", str(folder), "good great drug"])
    ends_cleanly(code, capsys.readouterr().err)


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_push_of_a_damaged_run_ends_in_one_line_before_any_upload(finished_run, tmp_path, capsys, monkeypatch,
                                                                  name, how):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no login: nothing can be uploaded
    folder = damaged(finished_run[0], tmp_path, name, how)
    code = main(["push", str(folder), "someone/repo"])
    err = capsys.readouterr().err
    assert code == 2
    ends_cleanly(code, err)


@pytest.mark.slow  # each verify starts a Hub-user process
@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_verify_of_a_damaged_run_ends_in_one_line(finished_run, tmp_path, capsys, name, how):
    folder = damaged(finished_run[0], tmp_path, name, how)
    code = main(["verify", str(folder)])
    ends_cleanly(code, capsys.readouterr().err)
