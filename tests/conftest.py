import os

# `make test` runs the suite in pytest-xdist workers (`-n 2`). Each worker, and every process a test starts
# (inheriting OMP_NUM_THREADS), gets its share of the cores for torch's threads, so workers do not oversubscribe
# the CPU; without workers, torch keeps its own default. The cores are counted as data.default_num_workers counts
# them (importing it here would import torch before OMP_NUM_THREADS is set).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // _workers)))

# The whole suite runs offline: nothing may reach for the Hugging Face Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Generated cases (tests/test_malformed.py) are the same on every run and machine, so CI never fails on a
# draw nobody saw; `HYPOTHESIS_PROFILE=explore make test` draws fresh ones (and keeps failures in .hypothesis/).
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

from tests.tiny import save_tiny_bert, text_recipe, write_sentiment_csv  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory):
    return write_sentiment_csv(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def finished_run(tiny_bert, sentiment_files, tmp_path_factory):
    """(folder of a finished tiny run, the recipe file that made it); copy the folder before changing it."""
    import yaml

    from hf_transfer.cli import main

    root = tmp_path_factory.mktemp("finished")
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(text_recipe(tiny_bert, sentiment_files, root / "run")))
    assert main(["finetune", str(path)]) == 0
    return root / "run", path
