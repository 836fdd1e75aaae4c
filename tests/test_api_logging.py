"""The Python API shows hf-transfer's log lines (the command line configures logging; a notebook does not),
without touching the root logger and without showing a line twice when the application configured logging."""

import logging

import pytest

from hf_transfer import finetune
from hf_transfer.console import show_logs
from tests.tiny import text_recipe


@pytest.fixture
def unconfigured(monkeypatch):
    """Logging as a fresh notebook has it: no handler on the root logger. pytest adds its own at the start
    of each test phase, so each test calls the returned function first."""
    root, ours = logging.getLogger(), logging.getLogger("hf_transfer")

    def set_aside():
        monkeypatch.setattr(root, "handlers", [])
        monkeypatch.setattr(ours, "handlers", [])
        return root, ours

    yield set_aside
    ours.setLevel(logging.NOTSET)


def test_finetune_from_python_shows_info_lines(unconfigured, tiny_bert, sentiment_files, tmp_path, capsys):
    root, ours = unconfigured()
    finetune(text_recipe(tiny_bert, sentiment_files, tmp_path / "run"))
    err = capsys.readouterr().err
    assert "INFO hf_transfer.strategies: strategy full: trainable parameters" in err
    assert root.handlers == [] and root.level == logging.WARNING  # the root logger is left alone
    finetune(text_recipe(tiny_bert, sentiment_files, tmp_path / "again"))
    assert len(ours.handlers) == 1  # added once
    assert capsys.readouterr().err.count("trainable parameters") == 1


def test_no_line_twice_once_the_application_configures_logging(unconfigured, capsys):
    root, ours = unconfigured()
    show_logs()
    logging.getLogger("hf_transfer.train").info("before")
    assert capsys.readouterr().err == "INFO hf_transfer.train: before\n"
    seen = []
    root.addHandler(type("Keep", (logging.Handler,), {"emit": lambda self, record: seen.append(record)})())
    logging.getLogger("hf_transfer.train").info("after")
    assert capsys.readouterr().err == "" and [r.getMessage() for r in seen] == ["after"]


def test_configured_logging_decides(unconfigured, capsys):
    root, ours = unconfigured()
    root.addHandler(logging.NullHandler())  # e.g. basicConfig before the first call
    show_logs()
    assert ours.handlers == [] and ours.level == logging.NOTSET
    logging.getLogger("hf_transfer.train").info("hidden")  # root's level (WARNING) decides
    assert capsys.readouterr().err == ""
