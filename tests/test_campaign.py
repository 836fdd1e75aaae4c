"""Issue #22's campaign as tests: every case it names maps to the tests that reproduce it (CAMPAIGN; a test
below checks that every test named there exists), and the Python API ends every bad input in one of our
error types, naming the key or file (test_the_python_api_raises_our_error_types)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hf_transfer import finetune
from hf_transfer.errors import DataError, HfTransferError, ModelError, OutputError, RecipeError, VerifyError
from hf_transfer.outputs.evaluate import evaluate
from hf_transfer.outputs.merge import merge
from hf_transfer.outputs.predict import predict
from hf_transfer.outputs.verify import verify
from tests.tiny import text_recipe

ROOT = Path(__file__).resolve().parents[1]
LOST, FAILURES, LABELS, RANGES = "tests/test_lost_work.py", "tests/test_failures.py", "tests/test_labels.py", "tests/test_ranges.py"
REFUSED = f"{RANGES}::test_out_of_range_values_are_one_line_errors_naming_key_and_value"
API = "tests/test_campaign.py::test_the_python_api_raises_our_error_types"

# case -> the tests that reproduce it (node ids; one without [params] stands for all its parameters)
CAMPAIGN: dict[str, list[str]] = {
    # --- lost work (4): the previous run's files byte-identical afterwards
    "lost/overwrite-bad-model-or-data": [f"{LOST}::test_overwrite_with_a_bad_model_keeps_the_previous_run",
                                         f"{LOST}::test_overwrite_with_bad_data_keeps_the_previous_run",
                                         f"{LOST}::test_overwrite_replaces_the_run_only_when_the_new_one_is_complete"],
    "lost/resume-deletes-metrics-json": [f"{LOST}::test_resume_with_a_bad_override_keeps_metrics_json"],
    "lost/resume-into-a-folder-that-is-not-a-run": [f"{LOST}::test_resume_refuses_a_folder_that_is_not_a_run",
                                                    f"{API}[finetune/resume-not-a-run]"],
    "lost/two-runs-into-one-folder": [f"{LOST}::test_a_second_run_into_a_locked_folder_is_refused",
                                      f"{LOST}::test_the_lock_of_a_dead_process_is_taken_over",
                                      "tests/test_distributed.py::test_a_locked_folder_stops_both_machines_with_one_line"],
    # --- silently wrong with exit 0 (15): now a one-line error, or documented behaviour
    "silent/int-labels-1..n": [f"{LABELS}::test_star_ratings_1_to_n_are_matched_by_value",
                               f"{LABELS}::test_names_that_are_numbers_win_over_ids",
                               f"{LABELS}::test_integer_labels_sort_as_numbers"],
    "silent/multi-label-split-into-characters": [f"{LABELS}::test_multi_label_strings_need_a_separator",
                                                 f"{API}[finetune/multi-label-without-separator]"],
    "silent/single-class-training-split": [f"{LABELS}::test_a_single_class_in_training_is_refused",
                                           f"{API}[finetune/single-class]"],
    "silent/duplicate-label-names": [f"{LABELS}::test_repeated_label_names_are_refused",
                                     f"{API}[finetune/duplicate-label-names]"],
    "silent/duplicate-yaml-keys": [f"{RANGES}::test_duplicate_yaml_keys_are_refused_naming_key_and_line",
                                   f"{RANGES}::test_hf_transfer_validate_refuses_a_duplicate_key_and_a_range_error",
                                   f"{API}[finetune/duplicate-yaml-key]"],
    "silent/num-train-epochs-0": [f"{REFUSED}[training.num_train_epochs=0]", f"{API}[finetune/epochs-0]"],
    "silent/num-train-epochs-negative": [f"{REFUSED}[training.num_train_epochs=-1]",
                                         f"{REFUSED}[training.num_train_epochs=-1 training.max_steps=-1]"],
    "silent/max-length-0": [f"{REFUSED}[model.max_length=0]", f"{API}[finetune/max-length-0]"],
    "silent/max-train-samples-0": [f"{REFUSED}[data.max_train_samples=0]", f"{API}[finetune/max-train-samples-0]"],
    "silent/compare-name-escapes-output-folder": [f"{RANGES}::test_compare_run_names_must_be_plain[../../escaped]",
                                                  f"{API}[finetune/compare-name-escapes]"],
    "silent/16-bit-png-clipped-to-white": [f"{FAILURES}::test_a_16_bit_png_is_scaled_not_clipped_to_white"],
    "silent/0-sample-wav-trains-as-silence": [f"{FAILURES}::test_an_empty_wav_is_refused_naming_the_file",
                                              f"{FAILURES}::test_an_empty_wav_in_the_training_data_stops_finetune_with_one_line"],
    "silent/predict-top-k-0": [f"{RANGES}::test_predict_and_verify_numbers_are_argparse_errors",
                               f"{RANGES}::test_predict_refuses_counts_below_one", f"{API}[predict/top-k-0]"],
    "silent/predict-verify-load-pickled-bin": [f"{FAILURES}::test_predict_and_verify_do_not_unpickle_weights",
                                               "tests/test_reliability.py::test_pickled_weights_are_refused_unless_allowed"],
    "silent/train-loss-after-resume": [f"{LOST}::test_train_loss_after_resume_covers_the_whole_run"],
    # --- tracebacks: now one line naming the key or file
    "traceback/negative-learning-rate": [f"{REFUSED}[training.learning_rate=-1e-4]", f"{API}[finetune/negative-lr]"],
    "traceback/batch-size-0": [f"{REFUSED}[training.per_device_train_batch_size=0]",
                               f"{REFUSED}[training.per_device_eval_batch_size=0]", f"{API}[finetune/batch-size-0]"],
    "traceback/epochs-beyond-int": [f"{REFUSED}[training.num_train_epochs=1099511627776]",
                                    f"{API}[finetune/epochs-beyond-int]"],
    "traceback/batch-size-beyond-int": [f"{REFUSED}[training.per_device_train_batch_size=1099511627776]",
                                        f"{REFUSED}[training.per_device_train_batch_size=1180591620717411303424]"],
    "traceback/negative-max-train-samples": [f"{REFUSED}[data.max_train_samples=-5]",
                                             f"{API}[finetune/negative-max-train-samples]"],
    "traceback/early-stopping-without-evaluation": [f"{REFUSED}[early_stopping_patience=2 training.eval_strategy=no]",
                                                    f"{API}[finetune/early-stopping-without-evaluation]"],
    "traceback/corrupt-weights-in-training": [f"{FAILURES}::test_corrupt_weights_are_one_line_in_training_and_in_predict",
                                              f"{FAILURES}::test_damaged_base_weights_are_one_line_in_training",
                                              f"{API}[finetune/corrupt-weights]"],
    "traceback/corrupt-weights-in-predict": [f"{FAILURES}::test_corrupt_weights_are_one_line_in_training_and_in_predict",
                                             "tests/test_corrupted_files.py::test_predict_on_a_damaged_run_ends_in_one_line"
                                             "[model.safetensors-truncated]",
                                             "tests/test_corrupted_files.py::test_predict_on_a_damaged_run_ends_in_one_line"
                                             "[model.safetensors-garbage]"],
    "traceback/tokenizer-larger-than-embeddings": [
        f"{FAILURES}::test_a_tokenizer_larger_than_the_embeddings_is_refused_before_training"],
    "traceback/read-only-output-folder": [f"{FAILURES}::test_a_read_only_output_folder_is_one_line",
                                          f"{API}[finetune/read-only-output-folder]"],
    "traceback/disk-full-at-final-save": [f"{FAILURES}::test_a_full_disk_at_save_is_one_line_and_the_old_run_stays"],
    "traceback/resume-after-changing-the-strategy": [
        f"{FAILURES}::test_resume_with_another_strategy_is_refused_naming_the_key", f"{API}[finetune/resume-other-strategy]"],
    "traceback/verify-corrupt-metrics-json": [f"{FAILURES}::test_verify_names_a_corrupt_metrics_json",
                                              f"{API}[verify/corrupt-metrics-json]"],
    "traceback/predict-non-utf8-file": [f"{FAILURES}::test_predict_refuses_a_file_that_is_not_utf8",
                                        f"{API}[predict/non-utf8-file]"],
    "traceback/predict-batch-size-0": [f"{RANGES}::test_predict_and_verify_numbers_are_argparse_errors",
                                       f"{RANGES}::test_predict_refuses_counts_below_one", f"{API}[predict/batch-size-0]"],
    "traceback/accelerate-launch-exit-1-with-traceback": [
        f"{FAILURES}::test_launch_checks_the_recipe_first_and_ends_in_one_line",
        f"{FAILURES}::test_a_bad_recipe_under_accelerate_launch_is_one_line",
        f"{FAILURES}::test_launch_of_two_processes_with_bad_data_is_their_line_and_exit_2"],
    "traceback/python-api-plain-valueerror": [API, "tests/test_malformed.py::test_the_python_api_ends_in_one_line"],
    # --- misleading messages: now naming the right key, file or cause
    "misleading/empty-csv": [f"{FAILURES}::test_an_unreadable_data_file_is_named_with_its_cause[empty]",
                             f"{API}[finetune/empty-csv]"],
    "misleading/header-only-csv": [f"{FAILURES}::test_an_unreadable_data_file_is_named_with_its_cause[header-only]"],
    "misleading/column-missing-from-one-splits-file": [
        f"{FAILURES}::test_a_column_missing_from_one_splits_file_names_that_file", f"{API}[finetune/column-missing-from-test]"],
    "misleading/latin-1-csv": [f"{FAILURES}::test_an_unreadable_data_file_is_named_with_its_cause[latin-1]",
                               f"{API}[finetune/latin-1-csv]"],
    "misleading/unclosed-quote": [f"{FAILURES}::test_an_unreadable_data_file_is_named_with_its_cause[unclosed-quote]"],
    "misleading/corrupt-parquet-names-no-file": [f"{FAILURES}::test_a_corrupt_parquet_file_is_named",
                                                 f"{API}[finetune/corrupt-parquet]"],
    "misleading/lora-r-0-under-target-modules": [f"{REFUSED}[finetune.strategy=lora finetune.r=0]",
                                                 f"{API}[finetune/lora-r-0]"],
    "misleading/lora-dropout-2-under-target-modules": [f"{REFUSED}[finetune.strategy=lora finetune.dropout=2]",
                                                       f"{API}[finetune/lora-dropout-2]"],
    "misleading/missing-model-folder-repo-id-form": [f"{FAILURES}::test_a_model_folder_that_is_not_there_says_so[missing]",
                                                     "tests/test_pipeline.py::test_missing_model_folder_is_a_clear_error",
                                                     f"{API}[finetune/missing-model-folder]"],
    "misleading/empty-model-folder": [f"{FAILURES}::test_a_model_folder_that_is_not_there_says_so[empty]",
                                      f"{API}[finetune/empty-model-folder]"],
    "misleading/folder-given-as-the-recipe": [f"{FAILURES}::test_a_folder_given_as_the_recipe_says_so",
                                              f"{API}[finetune/folder-as-recipe]"],
    "misleading/override-after-resume-unrecognized": [f"{FAILURES}::test_overrides_after_a_flag_are_overrides"],
    "misleading/failed-start-leaves-checkpoints-folder": [
        f"{LOST}::test_a_failed_start_leaves_no_folder_that_blocks_a_rerun"],
    # --- found while closing the issue (not in its text)
    "followup/cv-overwrite-failing-in-a-later-fold": [
        f"{LOST}::test_overwrite_of_folds_or_seeds_failing_in_a_later_part_keeps_the_previous_run[cv]"],
    "followup/seeds-overwrite-failing-in-a-later-seed": [
        f"{LOST}::test_overwrite_of_folds_or_seeds_failing_in_a_later_part_keeps_the_previous_run[seeds]"],
    "followup/compare-overwrite-failing-in-a-variant": [
        f"{LOST}::test_overwrite_of_a_run_with_a_comparison_failing_in_a_variant_keeps_the_previous_run"],
    "followup/launch-of-several-processes-traceback": [
        f"{FAILURES}::test_launch_of_two_processes_with_bad_data_is_their_line_and_exit_2"],
    "followup/device-not-on-this-machine-traceback": [f"{FAILURES}::test_a_device_that_is_not_here_is_one_line",
                                                      f"{API}[predict/device-not-here]", f"{API}[evaluate/device-name]"],
    "followup/overwrite-with-resume-silently-resumes": [f"{FAILURES}::test_overwrite_and_resume_together_are_refused",
                                                        f"{API}[finetune/overwrite-and-resume]"],
    "followup/python-api-string-split-into-characters": [f"{API}[predict/inputs-none]", f"{API}[evaluate/no-data]"],
    "followup/python-api-unchecked-numbers": [f"{API}[verify/tolerance-nan]", f"{API}[evaluate/batch-size-0]",
                                              f"{API}[serve/port-beyond-range]"],
}


def test_the_table_holds_the_issues_counts():
    kinds = [case.split("/")[0] for case in CAMPAIGN]
    assert kinds.count("lost") == 4 and kinds.count("silent") == 15
    assert kinds.count("traceback") + kinds.count("misleading") == 30  # the items it names (it counted 21 + 17)
    assert all(nodes for nodes in CAMPAIGN.values())


def test_every_test_the_table_names_exists():
    """Collected as pytest collects them (a new process, the slow tier's tests included), so a renamed test or
    parameter fails here."""
    files = sorted({node.split("::")[0] for nodes in CAMPAIGN.values() for node in nodes})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", "-p", "no:cacheprovider",
                           *files], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    collected = {line for line in proc.stdout.splitlines() if "::" in line}
    assert collected, proc.stdout[-2000:] + proc.stderr[-2000:]
    missing = [node for nodes in CAMPAIGN.values() for node in nodes
               if node not in collected and not any(c.startswith(node + "[") for c in collected)]
    assert not missing, missing


def test_every_python_api_case_the_table_names_exists():
    """The fast half of the check above: the API cases are this module's own parameters."""
    named = {node.split("[", 1)[1][:-1] for nodes in CAMPAIGN.values() for node in nodes if node.startswith(API + "[")}
    assert named <= set(API_CASES), named - set(API_CASES)


# ----------------------------------------------------------------------------- the Python API

@pytest.fixture
def c(tiny_bert, sentiment_files, finished_run, tmp_path):
    """What a case may use: the tiny model, its data, a copy of a finished run and a recipe maker."""
    run = Path(shutil.copytree(finished_run[0], tmp_path / "run"))
    return SimpleNamespace(tmp=tmp_path, bert=tiny_bert, files=sentiment_files, run=run,
                           recipe=lambda **data: _recipe(tiny_bert, sentiment_files, tmp_path, **data))


def _recipe(bert, files, tmp, **data) -> dict:
    raw = text_recipe(bert, files, tmp / "out")
    raw["data"] |= data
    return raw


def _file(c, name: str, content: bytes | str) -> str:
    path = c.tmp / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _with_corrupt_weights(c):
    model = Path(shutil.copytree(c.bert, c.tmp / "model"))
    (model / "model.safetensors").write_bytes(b"\x00\xff" * 40)
    finetune(c.recipe(), model__name_or_path=str(model))


def _into_a_read_only_folder(c):
    from tests.test_failures import read_only

    (c.tmp / "locked").mkdir()
    with read_only(c.tmp / "locked"):
        finetune(c.recipe(), training__output_dir=str(c.tmp / "locked" / "run"))


def _into_a_locked_folder(c):
    from hf_transfer.folder import run_lock

    with run_lock(c.tmp / "out"):
        finetune(c.recipe())


def _predict_pickled_weights(c):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(c.run / "model.safetensors"), c.run / "pytorch_model.bin")
    (c.run / "model.safetensors").unlink()
    predict(c.run, ["good"])


def _serve(*args, **kwargs):
    pytest.importorskip("uvicorn")
    from hf_transfer.outputs.serve import serve

    return serve(*args, **kwargs)


# name -> (error type, what its message holds ({tmp}: the case's folder), the call)
API_CASES: dict[str, tuple] = {
    "finetune/folder-as-recipe": (RecipeError, "{tmp}: is a folder; give the recipe's YAML file",
        lambda c: finetune(c.tmp)),
    "finetune/duplicate-yaml-key": (RecipeError, "duplicate key 'seed'",
        lambda c: finetune(_file(c, "r.yaml", "model: {name_or_path: m}\ndata: {path: csv}\ntraining:\n  seed: 1\n  seed: 2\n"))),
    "finetune/negative-lr": (RecipeError, "training.learning_rate: must be > 0",
        lambda c: finetune(c.recipe(), training__learning_rate=-1e-4)),
    "finetune/batch-size-0": (RecipeError, "training.per_device_train_batch_size: must be >= 1",
        lambda c: finetune(c.recipe(), **{"training.per_device_train_batch_size": 0})),
    "finetune/epochs-0": (RecipeError, "training.num_train_epochs: must be > 0",
        lambda c: finetune(c.recipe(), training__num_train_epochs=0, training__max_steps=-1)),
    "finetune/epochs-beyond-int": (RecipeError, "training.num_train_epochs: must be <= 2147483647",
        lambda c: finetune(c.recipe(), training__num_train_epochs=2**40, training__max_steps=-1)),
    "finetune/max-length-0": (RecipeError, "model.max_length: must be >= 1",
        lambda c: finetune(c.recipe(), model__max_length=0)),
    "finetune/max-train-samples-0": (RecipeError, "data.max_train_samples: must be >= 1",
        lambda c: finetune(c.recipe(max_train_samples=0))),
    "finetune/negative-max-train-samples": (RecipeError, "data.max_train_samples: must be >= 1",
        lambda c: finetune(c.recipe(max_train_samples=-5))),
    "finetune/early-stopping-without-evaluation": (RecipeError, "early_stopping_patience: needs evaluation",
        lambda c: finetune(c.recipe(), early_stopping_patience=2, training__eval_strategy="no")),
    "finetune/lora-r-0": (RecipeError, "finetune.r: must be >= 1",
        lambda c: finetune(c.recipe(), finetune={"strategy": "lora", "r": 0})),
    "finetune/lora-dropout-2": (RecipeError, "finetune.dropout: must be in [0, 1)",
        lambda c: finetune(c.recipe(), finetune={"strategy": "lora", "dropout": 2})),
    "finetune/compare-name-escapes": (RecipeError, "compare[0]: run name '../../escaped' must be a plain name",
        lambda c: finetune(c.recipe(), compare=[{"../../escaped": {"training.learning_rate": 1e-3}}])),
    "finetune/duplicate-label-names": (RecipeError, "data.label_names: 'negative' listed twice",
        lambda c: finetune(c.recipe(label_names=["negative", "positive", "negative"]))),
    "finetune/unknown-section": (RecipeError, "epochs: unknown section",
        lambda c: finetune(c.recipe(), epochs=3)),
    "finetune/missing-model-folder": (ModelError, "model.name_or_path: cannot load",
        lambda c: finetune(c.recipe(), model__name_or_path=str(c.tmp / "no-model"))),
    "finetune/empty-model-folder": (ModelError, "holds no config.json",
        lambda c: finetune(c.recipe(), model__name_or_path=str((c.tmp / "empty").mkdir() or c.tmp / "empty"))),
    "finetune/corrupt-weights": (ModelError, "corrupt or truncated",
        _with_corrupt_weights),
    "finetune/empty-csv": (DataError, "data.data_files.train: cannot read {tmp}/train.csv: EmptyDataError",
        lambda c: finetune(c.recipe(data_files={"train": _file(c, "train.csv", b"")}))),
    "finetune/latin-1-csv": (DataError, "data.data_files.train: cannot read {tmp}/train.csv: not UTF-8 text",
        lambda c: finetune(c.recipe(data_files={"train": _file(c, "train.csv", "review,label\ncafé,positive\n".encode("latin-1"))}))),
    "finetune/corrupt-parquet": (DataError, "data.data_files.train: cannot read {tmp}/train.parquet",
        lambda c: finetune(c.recipe(path="parquet", data_files={"train": _file(c, "train.parquet", b"PAR1 not parquet")}))),
    "finetune/column-missing-from-test": (DataError, "data.data_files.test: {tmp}/test.csv has columns ['text', 'label']",
        lambda c: finetune(c.recipe(data_files={"train": c.files["train"], "test": _file(c, "test.csv", "text,label\na,positive\n")}))),
    "finetune/single-class": (DataError, "data.label_column: the training split 'train' holds a single class",
        lambda c: finetune(c.recipe(data_files={"train": _file(c, "train.csv", "review,label\n" + "good,positive\n" * 12)},
            label_names=None, test_split=None))),
    "finetune/multi-label-without-separator": (DataError, "data.label_separator",
        lambda c: finetune(c.recipe(data_files={"train": _file(c, "train.csv", "review,label\n" + "a,x;y\nb,x\nc,y\n" * 4)},
            label_names=None, test_split=None, problem_type="multi_label_classification"))),
    "finetune/not-empty-without-overwrite": (OutputError, "training.output_dir: {tmp}/run is not empty; pass --overwrite",
        lambda c: finetune(c.recipe(), training__output_dir=str(c.run))),
    "finetune/resume-not-a-run": (OutputError, "is not an hf-transfer run",
        lambda c: finetune(c.recipe(), training__output_dir=_file(c, "notes.txt", "mine") and str(c.tmp), resume=True)),
    "finetune/overwrite-and-resume": (OutputError, "training.output_dir: overwrite and resume exclude each other",
        lambda c: finetune(c.recipe(), overwrite=True, resume=True)),
    "finetune/resume-other-strategy": (RecipeError, "finetune: the run in {tmp}/run was trained with",
        lambda c: finetune(c.recipe(), training__output_dir=str(c.run), finetune={"strategy": "lora"}, resume=True)),
    "finetune/read-only-output-folder": (OutputError, "training.output_dir: cannot write {tmp}/locked/",
        _into_a_read_only_folder),
    "finetune/locked-folder": (OutputError, "is in use by another run",
        _into_a_locked_folder),
    "finetune/token-in-recipe": (RecipeError, "training.hub_token: never put tokens in a recipe",
        lambda c: finetune(c.recipe(), training__hub_token="hf_abcdefghijklmnop")),
    "predict/top-k-0": (HfTransferError, "predict: top_k must be an integer from 1 to 2147483647, got 0",
        lambda c: predict(c.run, ["good"], top_k=0)),
    "predict/batch-size-0": (HfTransferError, "predict: batch_size must be an integer from 1 to 2147483647, got 0",
        lambda c: predict(c.run, ["good"], batch_size=0)),
    "predict/inputs-none": (HfTransferError, "predict: inputs must be a list of strings or paths, got NoneType",
        lambda c: predict(c.run, None)),
    "predict/non-utf8-file": (HfTransferError, "predict: {tmp}/texts.txt is not UTF-8 text",
        lambda c: predict(c.run, [_file(c, "texts.txt", "caf\xe9\n".encode("latin-1"))])),
    "predict/lone-surrogate": (HfTransferError, "predict: the text argument 'bad \\ud800' is not UTF-8 "
                               "(a lone surrogate U+D800 at character 4)",
        lambda c: predict(c.run, ["good", "bad \ud800"])),
    "predict/device-not-here": (HfTransferError, "predict: device 'cuda:99' is not available here",
        lambda c: predict(c.run, ["good"], device="cuda:99")),
    "predict/not-a-run": (HfTransferError, "predict: {tmp} holds no model itself; its sub-folders do: {tmp}/run",
        lambda c: predict(c.tmp, ["good"])),
    "predict/pickled-weights": (HfTransferError, "from_pretrained failed",
        _predict_pickled_weights),
    "verify/corrupt-metrics-json": (VerifyError, "{tmp}/run/metrics.json: unreadable",
        lambda c: (c.run / "metrics.json").write_text("{not json") and verify(c.run)),
    "verify/tolerance-nan": (HfTransferError, "verify: tolerance must be a finite number >= 0, got nan",
        lambda c: verify(c.run, tolerance=float("nan"))),
    "verify/not-a-run": (VerifyError, "{tmp} holds no model itself; its sub-folders do: {tmp}/run",
        lambda c: verify(c.tmp)),
    "verify/device-name": (VerifyError, "verify: device 'nonsense' is not a device name",
        lambda c: verify(c.run, device="nonsense")),
    "evaluate/batch-size-0": (HfTransferError, "evaluate: batch_size must be an integer from 1 to 2147483647, got 0",
        lambda c: evaluate(c.run, [c.files["test"]], batch_size=0)),
    "evaluate/no-data": (HfTransferError, "evaluate: no data files given",
        lambda c: evaluate(c.run, [])),
    "evaluate/unknown-label": (DataError, "data.label_column: label 'neutral' in split '{tmp}/new.csv'",
        lambda c: evaluate(c.run, [_file(c, "new.csv", "review,label\ngood,neutral\n")])),
    "evaluate/empty-text": (DataError, "evaluate: {tmp}/new.csv: data.text_column: a text in column 'review' is empty",
        lambda c: evaluate(c.run, [_file(c, "new.csv", "review,label\n,positive\ngood,negative\n")])),
    "evaluate/latin-1": (DataError, "cannot read {tmp}/new.csv: not UTF-8 text",
        lambda c: evaluate(c.run, [_file(c, "new.csv", "review,label\ncaf\xe9,positive\n".encode("latin-1"))])),
    "evaluate/device-name": (HfTransferError, "evaluate: device 'nonsense' is not a device name",
        lambda c: evaluate(c.run, [c.files["test"]], device="nonsense")),
    "merge/not-an-adapter": (HfTransferError, "merge: {tmp}/run holds no PEFT adapter",
        lambda c: merge(c.run)),
    "merge/dest-exists": (HfTransferError, "merge: {tmp}/taken.txt exists; pass --force",
        lambda c: merge((c.run / "adapter_config.json").write_text("{}") and c.run, _file(c, "taken.txt", "x"))),
    "serve/port-beyond-range": (HfTransferError, "serve: port must be an integer from 0 to 65535, got 70000",
        lambda c: _serve(c.run, port=70000)),
    "serve/max-batch-size-0": (HfTransferError, "serve: max_batch_size must be an integer from 1 to 2147483647, got 0",
        lambda c: _serve(c.run, max_batch_size=0)),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_the_python_api_raises_our_error_types(name, c):
    """finetune and the functions behind predict / verify / evaluate / merge / serve: each bad input raises an
    HfTransferError (the case's own subclass) in one line naming the key or file, never a bare ValueError,
    OSError or a datasets / torch error."""
    error, fragment, call = API_CASES[name]
    with pytest.raises(HfTransferError) as info:
        call(c)
    message = str(info.value)
    assert isinstance(info.value, error), (type(info.value), message)
    assert "\n" not in message
    assert fragment.format(tmp=c.tmp) in message, message


def test_the_python_api_takes_what_a_notebook_has(c):
    """numpy counts and tolerances, and inputs as a tuple, a generator or a numpy array, are taken as the command
    line's numbers and lists; a mapping is still refused (its keys are no inputs)."""
    import numpy as np

    texts = ["good great drug", "awful pain"]
    _, expected = predict(c.run, texts, top_k=2, batch_size=1)
    for inputs in (tuple(texts), (t for t in texts), np.array(texts)):
        assert predict(c.run, inputs, top_k=np.int64(2), batch_size=np.int32(1))[1] == expected
    assert evaluate(c.run, (Path(c.files["test"]),), batch_size=np.int64(4))[c.files["test"]]["metrics"]
    assert verify(c.run, tolerance=np.float32(1e-6)).compared
    with pytest.raises(HfTransferError, match="predict: inputs must be a list of strings or paths, got dict"):
        predict(c.run, {"text": "good"})
