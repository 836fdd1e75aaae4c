"""Bad files and settings end in one line naming the file or key and the cause, never a traceback."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from hf_transfer import train
from hf_transfer.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(finished_run):
    return finished_run


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("hf-transfer: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("content, cause", [
    pytest.param(b"", "EmptyDataError", id="empty"),
    pytest.param(b"review,label\n", "it holds no rows", id="header-only"),
    pytest.param(b'review,label\n"unclosed,positive\nfine,negative\n', "ParserError", id="unclosed-quote"),
    pytest.param("review,label\ncafé,positive\nok,negative\n".encode("latin-1"), "not UTF-8 text", id="latin-1"),
])
def test_an_unreadable_data_file_is_named_with_its_cause(run, tmp_path, capsys, content, cause):
    _, recipe = run
    bad = tmp_path / "train.csv"
    bad.write_bytes(content)
    assert main(["finetune", str(recipe), f"data.data_files.train={bad}", f"training.output_dir={tmp_path / 'o'}"]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"hf-transfer: error: data.data_files.train: cannot read {bad}") and cause in line


@pytest.mark.parametrize("make, message", [
    pytest.param(lambda tmp: tmp / "missing", "no such folder", id="missing"),
    pytest.param(lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "holds no config.json", id="empty"),
])
def test_a_model_folder_that_is_not_there_says_so(run, tmp_path, capsys, make, message):
    _, recipe = run
    folder = make(tmp_path)
    assert main(["finetune", str(recipe), f"model.name_or_path={folder}", f"training.output_dir={tmp_path / 'o'}"]) == 2
    line = one_line_error(capsys)
    assert "model.name_or_path:" in line and message in line


def test_corrupt_weights_are_one_line_in_training_and_in_predict(run, tiny_bert, tmp_path, capsys):
    folder, recipe = run
    model = Path(shutil.copytree(tiny_bert, tmp_path / "model"))
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:100])
    assert main(["finetune", str(recipe), f"model.name_or_path={model}", f"training.output_dir={tmp_path / 'o'}"]) == 2
    assert "corrupt or truncated" in one_line_error(capsys)
    saved = Path(shutil.copytree(folder, tmp_path / "saved"))
    (saved / "model.safetensors").write_bytes(b"\x00" * 10)
    assert main(["predict", str(saved), "good"]) == 2
    assert "from_pretrained failed" in one_line_error(capsys)


def test_a_column_missing_from_one_splits_file_names_that_file(run, sentiment_files, tmp_path, capsys):
    test = tmp_path / "test.csv"
    test.write_text("text,label\ngood drug,positive\nbad pain,negative\n")  # `review` is called `text` here
    assert main(["finetune", str(run[1]), f"data.data_files={{train: {sentiment_files['train']}, test: {test}}}",
                 f"training.output_dir={tmp_path / 'o'}"]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"hf-transfer: error: data.data_files.test: {test} has columns ['text', 'label'], but ")
    assert not (tmp_path / "o").exists()


@contextmanager
def read_only(folder: Path):
    """`folder` made unwritable: its mode for a user, the immutable attribute for root (who ignores modes)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)  # noqa: E731
    else:
        pytest.skip("running as root without chattr +i: no folder is read-only")
    try:
        yield folder
    finally:
        undo()


@pytest.mark.parametrize("where", ["inside", "itself"])
def test_a_read_only_output_folder_is_one_line(run, tmp_path, capsys, where):
    """The output folder inside a read-only one (its lock cannot be written), or an empty read-only folder
    (its files cannot be written): one line naming what cannot be written, nothing left behind."""
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "run" if where == "inside" else locked
    with read_only(locked):
        assert main(["finetune", str(run[1]), f"training.output_dir={out}"]) == 2
        line = one_line_error(capsys)
    assert line.startswith(f"hf-transfer: error: training.output_dir: cannot write {locked}/")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("damage", [
    pytest.param(lambda data: b"", id="empty"),
    pytest.param(lambda data: b"\x00\xff garbage \xfe" * 7, id="garbage"),
    pytest.param(lambda data: data[: len(data) // 2], id="half"),
])
def test_damaged_base_weights_are_one_line_in_training(run, tiny_bert, tmp_path, capsys, damage):
    model = Path(shutil.copytree(tiny_bert, tmp_path / "model"))
    weights = model / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    assert main(["finetune", str(run[1]), f"model.name_or_path={model}", f"training.output_dir={tmp_path / 'o'}"]) == 2
    line = one_line_error(capsys)
    assert line.startswith("hf-transfer: error: model.name_or_path: cannot load") and "corrupt or truncated" in line


def test_predict_refuses_a_file_that_is_not_utf8(run, tmp_path, capsys):
    folder, _ = run
    texts = tmp_path / "reviews.txt"
    texts.write_bytes("caf\xe9 was awful\n".encode("latin-1"))
    assert main(["predict", str(folder), str(texts)]) == 2
    assert f"{texts} is not UTF-8 text" in one_line_error(capsys)


def test_predict_refuses_text_that_is_not_utf8_on_the_command_line_and_on_stdin(run, tmp_path):
    """A Latin-1 terminal passes bytes Python keeps as lone surrogates, which no tokenizer takes."""
    folder, _ = run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cli = [sys.executable, "-m", "hf_transfer", "predict", str(folder)]
    argument = subprocess.run([*cli, b"caf\xe9"], capture_output=True, env=env, timeout=300)
    stdin = subprocess.run([*cli, "-"], input=b"good\ncaf\xe9\n", capture_output=True, env=env, timeout=300)
    for proc, message in [(argument, b"predict: the text argument 'caf\\udce9' is not UTF-8 (byte b'\\xe9' at character 3)"),
                          (stdin, b"predict: standard input is not UTF-8 text (byte b'\\xe9' at position 8)")]:
        assert proc.returncode == 2 and message in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr[-800:]


def test_verify_names_a_corrupt_metrics_json(run, tmp_path, capsys):
    folder = Path(shutil.copytree(run[0], tmp_path / "run"))
    (folder / "metrics.json").write_text("{not json")
    assert main(["verify", str(folder)]) == 2
    assert "metrics.json: unreadable" in one_line_error(capsys)


def test_resume_with_another_strategy_is_refused_naming_the_key(run, tmp_path, capsys):
    folder = Path(shutil.copytree(run[0], tmp_path / "run"))
    assert main(["finetune", str(run[1]), f"training.output_dir={folder}", "--resume", "finetune.strategy=lora"]) == 2
    line = one_line_error(capsys)
    assert "finetune: the run in" in line and "--resume continues only with the same settings" in line


def test_overrides_after_a_flag_are_overrides(run, tmp_path, capsys):
    folder = Path(shutil.copytree(run[0], tmp_path / "run"))
    assert main(["finetune", str(run[1]), "--resume", f"training.output_dir={folder}"]) == 0
    with pytest.raises(SystemExit) as exited:  # argparse: exit 2, the usage and one error line
        main(["finetune", str(run[1]), "--resume", "--bogus"])
    assert exited.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_full_disk_at_save_is_one_line_and_the_old_run_stays(run, tmp_path, capsys, monkeypatch):
    folder = Path(shutil.copytree(run[0], tmp_path / "run"))
    before = (folder / "metrics.json").read_bytes()

    def full(recipe, out, args, resume):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "model.safetensors"))

    monkeypatch.setattr(train, "_train", full)
    assert main(["finetune", str(run[1]), f"training.output_dir={folder}", "--overwrite"]) == 2
    line = one_line_error(capsys)
    assert "training.output_dir: cannot write" in line and "No space left on device" in line
    assert (folder / "metrics.json").read_bytes() == before


def test_launch_checks_the_recipe_first_and_ends_in_one_line(run, tmp_path, capfd):
    """`hf-transfer launch` is accelerate launch without the launcher's traceback: a recipe error stops it
    before any process starts, a data error in the training process comes back as that process's line."""
    _, recipe = run
    assert main(["launch", str(recipe), "finetune.bogus=1", "--config-file", "accelerate_configs/cpu.yaml"]) == 2
    assert "finetune.bogus: not an option" in one_line_error(capfd)
    code = main(["launch", str(recipe), "data.text_column=nope", f"training.output_dir={tmp_path / 'o'}",
                 "--config-file", str(ROOT / "accelerate_configs/cpu.yaml")])
    assert code == 2
    assert "data.text_column: column 'nope' not in split 'train'" in one_line_error(capfd)  # the child's line


def _launched(*argv: str, cwd: Path) -> tuple[int, str]:
    """(exit code, stderr) of a command run as a user runs it (a new Python process)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    return proc.returncode, proc.stderr


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [ln for ln in err.splitlines() if ln.startswith("hf-transfer: error:")]


def test_a_bad_recipe_under_accelerate_launch_is_one_line(run, tmp_path):
    """`hf-transfer launch BAD.yaml`: exit 2 and the one line. `accelerate launch -q ... scripts/finetune.py
    BAD.yaml`: the same line and accelerate's own exit 1 (without -q accelerate adds its traceback: README)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(run[1]).read_text() + "\nbogus_section: {}\n")
    config = str(ROOT / "accelerate_configs/cpu.yaml")
    code, err = _launched("-m", "hf_transfer", "launch", str(bad), "--config-file", config, cwd=tmp_path)
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hf-transfer: error: bogus_section: unknown section")
    code, err = _launched("-m", "accelerate.commands.launch", "-q", "--config_file", config,
                          str(ROOT / "scripts/finetune.py"), str(bad), cwd=tmp_path)
    assert code == 1 and _error_lines(err) == lines


@pytest.mark.slow  # two training processes under torchrun
def test_launch_of_two_processes_with_bad_data_is_their_line_and_exit_2(run, tmp_path):
    """torchrun's launcher (several processes) raises its own error type: still each process's one line,
    exit 2, no traceback."""
    code, err = _launched("-m", "hf_transfer", "launch", str(run[1]), "data.text_column=nope", "training.use_cpu=true",
                          f"training.output_dir={tmp_path / 'o'}", "--config-file",
                          str(ROOT / "accelerate_configs/cpu_2proc.yaml"), cwd=tmp_path)
    lines = _error_lines(err)
    assert code == 2 and lines and set(lines) == {
        "hf-transfer: error: data.text_column: column 'nope' not in split 'train' "
        "(columns: review, label, score, is_good, is_bad)"}


def test_overwrite_and_resume_together_are_refused(run, tmp_path, capsys):
    from hf_transfer import finetune
    from hf_transfer.errors import OutputError

    with pytest.raises(SystemExit) as exited:
        main(["finetune", str(run[1]), "--overwrite", "--resume"])
    assert exited.value.code == 2 and "argument --resume: not allowed with argument --overwrite" in capsys.readouterr().err
    with pytest.raises(OutputError, match="^training.output_dir: overwrite and resume exclude each other"):
        finetune(str(run[1]), overwrite=True, resume=True)


@pytest.mark.parametrize("command", ["predict", "evaluate", "verify"])
@pytest.mark.parametrize("device, cause", [("nonsense", "is not a device name"), ("cuda:99", "is not available here")])
def test_a_device_that_is_not_here_is_one_line(run, sentiment_files, capsys, command, device, cause):
    folder = str(run[0])
    argv = {"predict": [folder, "good"], "evaluate": [folder, sentiment_files["test"]], "verify": [folder]}[command]
    assert main([command, *argv, "--device", device]) == 2
    assert f"{command}: device {device!r} {cause}" in one_line_error(capsys)


def test_a_tokenizer_larger_than_the_embeddings_is_refused_before_training(run, tiny_bert, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    small = tmp_path / "small"
    shutil.copytree(tiny_bert, small)
    config = BertConfig.from_pretrained(small)
    config.vocab_size = 10  # fewer embeddings than the tokenizer's words
    BertModel(config).save_pretrained(small)
    assert main(["finetune", str(run[1]), f"model.name_or_path={small}", f"training.output_dir={tmp_path / 'o'}"]) == 2
    line = one_line_error(capsys)
    assert "has 38 tokens but the model's embeddings hold 10" in line
    assert not (tmp_path / "o").exists()


def test_a_max_length_past_the_position_embeddings_is_refused_before_training(run, tiny_bert, tmp_path, capsys):
    """Tiny BERT has 128 positions: a longer model.max_length would stop at the first text past 128 tokens
    (and the saved tokenizer would cut there at predict time), so it is refused before training starts."""
    out = tmp_path / "o"
    assert main(["finetune", str(run[1]), "model.max_length=129", f"training.output_dir={out}"]) == 2
    assert one_line_error(capsys).endswith(
        f"model.max_length: 129 tokens, but {str(tiny_bert)!r} has position embeddings for 128; "
        "set model.max_length to 128 or less")
    assert not out.exists()


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta-v2"])
def test_the_position_limit_follows_the_model_s_own_table(family):
    """BERT's table covers all its rows; RoBERTa's positions start after the padding index (514 rows: 512
    tokens); DeBERTa-v2 without absolute positions has no limit."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from hf_transfer.anatomy import position_limit

    extra = {"bert": {"max_position_embeddings": 512}, "roberta": {"max_position_embeddings": 514, "pad_token_id": 1},
             "deberta-v2": {"position_biased_input": False}}[family]
    config = AutoConfig.for_model(family, vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, **extra)
    model = AutoModelForSequenceClassification.from_config(config)
    assert position_limit(model, model.get_input_embeddings()) == {"bert": 512, "roberta": 512, "deberta-v2": None}[family]


def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    import numpy as np
    from PIL import Image

    from hf_transfer.tasks.images import rgb_image

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)  # dark to bright
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    rgb = np.asarray(rgb_image({"path": str(tmp_path / "deep.png"), "bytes": None}, "image"))
    assert rgb.shape == (32, 32, 3) and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert 100 < rgb[16, 0, 0] < 160  # the middle of the ramp stays grey (convert("RGB") gave 255)


def test_array_images_of_any_depth_and_layout_are_scaled_not_clipped_or_refused_with_a_traceback():
    """Arrays (a datasets Array3D column, numpy, torch): floats in [0, 1] are not read as black, colour arrays that
    are not uint8 and channels-first arrays load, and what is no image is one line."""
    import numpy as np
    import torch

    from hf_transfer.errors import DataError
    from hf_transfer.tasks.images import rgb_image

    ramp = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    for array in (ramp, np.stack([ramp] * 3, -1), np.stack([ramp] * 3), torch.from_numpy(ramp)[None],
                  (ramp * 255).astype(np.int64), (ramp * 65535).astype(np.uint16)):
        rgb = np.asarray(rgb_image(array, "image"))
        assert rgb.shape == (24, 32, 3) and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255, array.dtype
        assert 100 < rgb[12, 0, 0] < 160  # mid-grey stays mid-grey
    for bad, message in [(ramp - 0.5, "holds values from -0.5 to 0.5, not pixels"),
                         (np.zeros((2, 3, 8, 8)), "holds an array of shape (2, 3, 8, 8), not an image")]:
        with pytest.raises(DataError, match=re.escape(message)):
            rgb_image(bad, "image")


def test_an_empty_wav_is_refused_naming_the_file(tmp_path):
    import numpy as np
    import soundfile as sf

    from hf_transfer.errors import DataError
    from hf_transfer.tasks.audio import load_audio

    sf.write(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"speech.audio_column: audio '.*silent.wav' is empty \(0 samples\)"):
        load_audio(str(tmp_path / "silent.wav"), 16000)
    wave = np.zeros(800, dtype=np.float32)
    wave[400] = np.nan  # one sample: a NaN loss at the step that drew it, blamed on the learning rate
    sf.write(tmp_path / "broken.wav", wave, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"speech.audio_column: audio '.*broken.wav' holds NaN or infinite samples"):
        load_audio(str(tmp_path / "broken.wav"), 16000)
    with pytest.raises(DataError, match=r"audio '<array>' holds NaN or infinite samples"):
        load_audio({"array": np.full(10, np.inf), "sampling_rate": 16000}, 16000)


def test_an_empty_wav_in_the_training_data_stops_finetune_with_one_line(tmp_path, capsys):
    import numpy as np
    import soundfile as sf
    import yaml

    from tests.tiny import save_tiny_audio_model, speech_recipe, write_audio_data

    files = write_audio_data(tmp_path / "tones", n_train=8, n_test=4)
    empty = tmp_path / "tones" / "wav" / "train_3.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 8000)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(speech_recipe(save_tiny_audio_model(tmp_path / "w2v", "wav2vec2"), files["csv"],
                                                   tmp_path / "out")))
    assert main(["finetune", str(recipe)]) == 2
    assert one_line_error(capsys) == f"hf-transfer: error: speech.audio_column: audio '{empty}' is empty (0 samples)"
    assert not (tmp_path / "out").exists()


def test_predict_and_verify_do_not_unpickle_weights(run, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    folder = Path(shutil.copytree(run[0], tmp_path / "run"))
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert main(["predict", str(folder), "good"]) == 2
    assert "from_pretrained failed" in one_line_error(capsys)
    assert main(["verify", str(folder)]) == 2
    one_line_error(capsys)


def test_a_folder_given_as_the_recipe_says_so(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder; give the recipe's YAML file" in one_line_error(capsys)


def test_a_corrupt_parquet_file_is_named(run, tmp_path, capsys):
    bad = tmp_path / "train.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    assert main(["finetune", str(run[1]), "data.path=parquet", f"data.data_files={{train: {bad}}}",
                 f"training.output_dir={tmp_path / 'o'}"]) == 2
    line = one_line_error(capsys)
    assert f"data.data_files.train: cannot read {bad}" in line


def test_version(capsys):
    import hf_transfer

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"hf-transfer {hf_transfer.__version__}"


def test_verify_names_a_missing_recipe_once(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.json").write_text("{}")
    assert main(["verify", str(folder)]) == 2
    assert one_line_error(capsys) == f"hf-transfer: error: {folder}/recipe.yaml: recipe file not found"


@pytest.mark.parametrize("task", ["image-classification", "audio-classification", "speech-recognition"])
def test_predict_names_an_input_file_its_task_cannot_read(task, tmp_path):
    """A file that is not an image (audio) is refused naming it before the model loads, and one that is
    goes through: the image as its path (the pipeline decodes it), the audio decoded."""
    import numpy as np
    import soundfile
    from PIL import Image

    from hf_transfer.errors import HfTransferError
    from hf_transfer.tasks import TASKS

    read = TASKS[task].read_inputs
    good = tmp_path / ("ok.png" if task == "image-classification" else "ok.wav")
    if task == "image-classification":
        Image.new("RGB", (8, 8), "red").save(good)
    else:
        soundfile.write(good, np.zeros(160, dtype=np.float32), 16000)
    bad = tmp_path / good.name.replace("ok", "bad")
    # not media at all; for the image, its header whole and its end cut off (only PIL's verify sees that)
    bad.write_bytes(good.read_bytes()[:-12] if task == "image-classification" else b"not a media file")
    kind = "an image PIL" if task == "image-classification" else "audio soundfile"
    with pytest.raises(HfTransferError, match=f"^predict: {bad} is not {kind} can read \\("):
        read([str(good), str(bad)])
    read_good = read([str(good)])
    assert read_good == [str(good)] if task == "image-classification" else read_good[0]["sampling_rate"] == 16000


@pytest.mark.parametrize("key, streaming", [("text_column", False), ("text_pair_column", False), ("text_column", True)])
def test_a_column_that_is_both_input_and_label_is_refused_naming_the_key(tiny_bert, sentiment_files, tmp_path, key,
                                                                         streaming):
    """Label encoding replaces the label column, so a model input naming it stopped with a KeyError."""
    from hf_transfer import finetune
    from hf_transfer.errors import RecipeError
    from tests.tiny import text_recipe

    raw = text_recipe(tiny_bert, sentiment_files, tmp_path / "o")
    raw["data"] |= {key: "label", "streaming": streaming}
    raw["training"] |= {"max_steps": 2} if streaming else {}
    with pytest.raises(RecipeError, match=f"^data.{key}: column 'label' is also data.label_column; the model cannot "
                                          "read its own label$"):
        finetune(raw)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("task, metric, refused", [
    ("text-classification", "nonexistent", True), ("text-classification", "eval_f1_macro", False),
    ("text-classification", "loss", False), ("token-classification", "person_f1", False),
    ("token-classification", "persn", True), ("speech-recognition", "eval_cer", False),
])
def test_metric_for_best_model_names_a_metric_of_the_task_before_anything_loads(task, metric, refused):
    """Trainer looks the name up at the first evaluation, an epoch in: a name the task never reports is
    refused when the recipe is read (an entity type's <type>_f1 is one it reports)."""
    from hf_transfer.errors import RecipeError
    from hf_transfer.validate import load_recipe

    modality = {"speech-recognition": "speech"}.get(task, "text")
    raw = {"task": task, "model": {"name_or_path": "nowhere", "modality": modality},
           "data": {"path": "csv", "data_files": {"train": "nowhere.csv"}},
           "training": {"metric_for_best_model": metric}}
    if not refused:
        assert load_recipe(raw).training["metric_for_best_model"] == metric
        return
    with pytest.raises(RecipeError, match=f"^training.metric_for_best_model: '{metric}' is not a metric of task {task} "
                                          r"\(its metrics: .*, or loss\)$"):
        load_recipe(raw)


def test_a_metric_the_run_does_not_report_is_one_line_after_the_first_evaluation(run, tmp_path, capsys):
    """mse is a text-classification metric, but only for regression: Trainer's KeyError becomes one line."""
    out = tmp_path / "o"
    assert main(["finetune", str(run[1]), "training.metric_for_best_model=mse", f"training.output_dir={out}"]) == 2
    assert one_line_error(capsys).startswith("hf-transfer: error: training.metric_for_best_model: The "
                                             "`metric_for_best_model` training argument is set to 'eval_mse'")


def test_a_datasets_cache_that_cannot_be_written_is_named_as_such(sentiment_files, tmp_path, monkeypatch):
    """Not 'cannot read train.csv: NotADirectoryError …', which blamed the data file."""
    import datasets

    from hf_transfer.errors import DataError
    from hf_transfer.recipe.schema import DataConfig
    from hf_transfer.tasks.data import load_raw

    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "a-file" / "cache"))
    cfg = DataConfig(path="csv", data_files={"train": sentiment_files["train"]})
    with pytest.raises(DataError, match=r"^HF_DATASETS_CACHE: datasets cannot write its cache folder .*a-file/cache "
                                        r"\(Not a directory\); set HF_DATASETS_CACHE to a writable folder$"):
        load_raw(cfg)


def test_a_folder_of_runs_names_the_folders_that_hold_models_in_every_command(run, tmp_path, capsys):
    """A cv / seeds / multi-task root, a checkpoints folder: every command that reads one model said
    `config.json is missing` or `no metrics.json`; it now names the sub-folders that hold the models. A
    missing folder and a file are named as such (merge said 'holds no PEFT adapter')."""
    root = tmp_path / "cv"
    for i in (10, 2, 1, 0):  # natural order: fold-10 is listed last
        shutil.copytree(run[0], root / f"fold-{i}")
    (root / "cv.json").write_text("{}")
    (tmp_path / "a.csv").write_text("text,label\n")
    cases = {root: f"{root} holds no model itself; its sub-folders do: {root}/fold-0, {root}/fold-1, {root}/fold-2 "
                   "and 1 more",
             tmp_path / "nope": f"{tmp_path}/nope: no such folder",
             tmp_path / "a.csv": f"{tmp_path}/a.csv is a file, not a run folder"}
    for folder, message in cases.items():
        for command, prefix in [(["predict", str(folder), "good"], "predict: "), (["verify", str(folder)], ""),
                                (["evaluate", str(folder), str(tmp_path / "a.csv")], ""),
                                (["push", str(folder), "me/x"], ""), (["export", str(folder)], "export: "),
                                (["serve", str(folder)], "serve: "), (["merge", str(folder)], "merge: ")]:
            assert main(command) == 2, command
            assert one_line_error(capsys) == f"hf-transfer: error: {prefix}{message}", command
    assert sorted(p.name for p in root.iterdir()) == ["cv.json", "fold-0", "fold-1", "fold-10", "fold-2"]


@pytest.mark.parametrize("task", ["image-classification", "audio-classification", "text-classification"])
def test_predict_reads_a_folder_of_media_files_and_refuses_a_folder_as_text(task, tmp_path):
    """A folder of images / clips gives every one under it, in name order (it was 'input file not found'); a
    folder without any is one line; given to a text model a folder is refused (it was classified as the text
    of its name)."""
    import numpy as np
    import soundfile
    from PIL import Image

    from hf_transfer.errors import HfTransferError
    from hf_transfer.tasks import TASKS

    read, folder = TASKS[task].read_inputs, tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("a text file beside the media")
    if task == "text-classification":
        with pytest.raises(HfTransferError, match=f"^predict: {folder} is a folder; give texts, files of texts"):
            read([str(folder)])
        return
    names = ["b.png", "sub/a.png"] if task == "image-classification" else ["b.wav", "sub/a.wav"]
    for name in names:
        if task == "image-classification":
            Image.new("RGB", (8, 8), "red").save(folder / name)
        else:
            soundfile.write(folder / name, np.full(160, 0.1, dtype=np.float32), 16000)
    got = read([str(folder)])
    paths = got if task == "image-classification" else [g["path"] for g in got]
    assert paths == [str(folder / n) for n in names]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HfTransferError, match=f"^predict: {empty}: a folder with no (image|audio) files"):
        read([str(empty)])


def test_a_run_whose_base_model_folder_is_gone_verifies_and_an_adapter_names_its_base(tiny_bert, sentiment_files,
                                                                                       tmp_path, capsys):
    """A finished full run needs only its own folder: verify loaded the tokenizer from the recipe's base model
    folder and stopped when it was moved. An adapter needs its base: a missing folder is named (PEFT said
    "Repo id must be in the form 'repo_name' ...")."""
    from hf_transfer import finetune
    from tests.tiny import text_recipe

    base = Path(shutil.copytree(tiny_bert, tmp_path / "base"))
    finetune(text_recipe(base, sentiment_files, tmp_path / "full"))
    finetune(text_recipe(base, sentiment_files, tmp_path / "lora", strategy="lora", r=2))
    shutil.rmtree(base)
    assert main(["verify", str(tmp_path / "full")]) == 0
    assert "test: 6 metrics reproduced" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "lora"), "good"]) == 2
    assert one_line_error(capsys) == (
        f"hf-transfer: error: predict: {tmp_path / 'lora'}: the adapter's base model {base} (base_model_name_or_path "
        "in adapter_config.json) is not found; put it back, or set base_model_name_or_path to its folder or Hub id")
