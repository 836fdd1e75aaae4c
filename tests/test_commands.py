"""The commands a pip user starts from: recipes, init, evaluate, merge (tiny models, offline)."""

import csv
import json
import shutil

import pytest

from hf_transfer import finetune, shipped
from hf_transfer.cli import main
from hf_transfer.errors import HfTransferError
from hf_transfer.outputs.evaluate import evaluate
from tests.test_structure import PACKAGE
from tests.tiny import text_recipe

ROOT = PACKAGE.parent


# --------------------------------------------------------------------------- recipes, init


def test_recipes_lists_every_shipped_file_with_its_leading_comment(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out.splitlines()
    for kind in shipped.KINDS:
        for path in sorted((ROOT / kind).glob("*.yaml")):
            [line] = [ln for ln in out if ln.split()[:1] == [path.stem]]
            first = path.read_text().splitlines()[0].lstrip("# ").split(".")[0]
            assert first[:30] in line, (path.name, line)
    cpu = next(ln for ln in out if ln.split()[:1] == ["cpu"])
    assert cpu.split(None, 1)[1] == "One process on the CPU (laptops, CI, machines without a GPU)."


def test_summary_is_the_first_sentence_before_the_example_command(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# Model X on data Y: the first sentence,\n# over two lines. More text.\n#   run it\nmodel: {}\n")
    assert shipped.summary(path) == "Model X on data Y: the first sentence, over two lines."


def test_init_copies_a_recipe_and_refuses_to_overwrite_without_force(tmp_path, capsys):
    assert main(["init", "minilm_drugreview", str(tmp_path)]) == 0
    copied = tmp_path / "minilm_drugreview.yaml"
    assert copied.read_bytes() == (ROOT / "recipes" / "minilm_drugreview.yaml").read_bytes()
    copied.write_text("# my edits\n")
    assert main(["init", "minilm_drugreview", str(tmp_path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert copied.read_text() == "# my edits\n"  # nothing saved is overwritten
    assert main(["init", "minilm_drugreview.yaml", str(copied), "--force"]) == 0
    assert copied.read_bytes() == (ROOT / "recipes" / "minilm_drugreview.yaml").read_bytes()
    assert main(["init", "cpu_2proc", str(tmp_path / "launch.yaml")]) == 0
    assert (tmp_path / "launch.yaml").read_bytes() == (ROOT / "accelerate_configs" / "cpu_2proc.yaml").read_bytes()


def test_init_into_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    missing = f"{tmp_path / 'configs'}/"  # before: the recipe was written to a file named `configs`
    assert main(["init", "minilm_drugreview", missing]) == 2
    assert capsys.readouterr().err.strip() == f"hf-transfer: error: init: folder {missing} does not exist"
    assert not (tmp_path / "configs").exists()


def test_init_of_an_unknown_name_is_one_line_naming_what_exists(capsys):
    assert main(["init", "no_such_recipe"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'no_such_recipe'" in err and "minilm_drugreview" in err


# --------------------------------------------------------------------------- evaluate


def test_evaluate_on_the_test_file_reproduces_metrics_json(finished_run, sentiment_files):
    out, _ = finished_run
    saved = json.loads((out / "metrics.json").read_text())
    [found] = evaluate(out, [sentiment_files["test"]]).values()
    for key, value in found["metrics"].items():
        assert saved["test"][f"test_{key}"] == value, key
    assert found["per_class"] == saved["per_class"]["test"]


def test_evaluate_takes_a_dataframe_or_a_dataset_from_a_notebook(finished_run, sentiment_files):
    import datasets
    import pandas as pd

    frame = pd.read_csv(sentiment_files["test"])
    on_file = evaluate(finished_run[0], [sentiment_files["test"]])[sentiment_files["test"]]
    # before: the DataFrame was iterated as its column names ("evaluate: data not found: review")
    assert evaluate(finished_run[0], frame) == {"data[0]": on_file}
    both = evaluate(finished_run[0], [sentiment_files["test"], datasets.Dataset.from_pandas(frame)])
    assert list(both) == [sentiment_files["test"], "data[1]"] and both["data[1]"] == on_file
    with pytest.raises(HfTransferError, match=r"^data.text_column: column 'review' not in split 'data\[0\]' "
                                              r"\(columns: label\)$"):
        evaluate(finished_run[0], frame[["label"]])


def test_evaluate_matches_labels_by_name_and_prints_one_line_per_file(finished_run, tmp_path, capsys):
    out, _ = finished_run
    only_positive = tmp_path / "positive.csv"
    only_positive.write_text("review,label\nGreat, it works.,positive\nLoved it.,positive\n".replace(
        "Great, it works.", '"Great, it works."'))
    assert main(["evaluate", str(out), str(only_positive)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{only_positive}: accuracy ") and "samples 2" in line
    [found] = evaluate(out, [str(only_positive)]).values()
    assert found["per_class"]["per_class"]["positive"]["support"] == 2
    assert found["per_class"]["per_class"]["negative"]["support"] == 0


def test_evaluate_bad_data_is_one_line_naming_it(finished_run, tmp_path, capsys):
    out, _ = finished_run
    unknown = tmp_path / "unknown.csv"
    with unknown.open("w", newline="") as fh:
        csv.writer(fh).writerows([["review", "label"], ["fine", "neutral"]])
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("review\nfine\n")
    for path, message in ((unknown, "label 'neutral'"), (no_label, "column 'label' not in split"),
                          (tmp_path / "missing.csv", "data not found")):
        assert main(["evaluate", str(out), str(path)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "Loading weights" not in err  # refused before the model loads
        [line] = [ln for ln in err.splitlines() if ln.startswith("hf-transfer: error:")]
        assert message in line and str(path) in line, line


# --------------------------------------------------------------------------- merge


@pytest.fixture(scope="module")
def lora_run(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    finetune(text_recipe(tiny_bert, sentiment_files, out, strategy="lora", r=2))
    return out


def test_merge_writes_a_plain_model_that_predicts_as_the_adapter(lora_run, sentiment_files, tmp_path, capsys):
    from transformers import pipeline

    from hf_transfer.outputs.hubuser import load_pipeline
    from hf_transfer.outputs.verify import hub_user_task
    from hf_transfer.tasks import TASKS

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    assert main(["merge", str(run)]) == 0
    merged = run / "merged"
    assert capsys.readouterr().out.strip() == f"merged: {merged}"
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    texts = [row["review"] for row in csv.DictReader(open(sentiment_files["test"]))]
    adapter = load_pipeline(run, hub_user_task(TASKS["text-classification"]), "cpu")
    plain = pipeline("text-classification", model=str(merged), device="cpu")
    expected = [(r["label"], r["score"]) for r in adapter(texts)]
    got = [(r["label"], r["score"]) for r in plain(texts)]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-5)
    before = (merged / "model.safetensors").read_bytes()
    assert main(["merge", str(run)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["merge", str(run), str(tmp_path / "elsewhere")]) == 0
    assert main(["merge", str(run), "--force"]) == 0
    assert (merged / "model.safetensors").read_bytes() == before
    assert not list(run.glob(".merged.*"))  # no staging left behind
    # --force replaces a merged model only: never the run it reads, a folder around it, another run or other files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    capsys.readouterr()  # what the merges above printed (their progress bars)
    for dest, message in [(run, f"{run} is the folder {run}, which it reads"),
                          (run.parent, f"{run.parent} is a folder that holds {run}"),
                          (mine, "mine is not a merged model folder; --force replaces only a merged model folder")]:
        assert main(["merge", str(run), str(dest), "--force"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("hf-transfer: error: merge: ") and message in err
    assert (run / "adapter_config.json").is_file() and (mine / "notes.txt").read_text() == "mine"


def test_merge_of_a_full_model_is_refused(finished_run, capsys):
    out, _ = finished_run
    assert main(["merge", str(out)]) == 2
    assert "holds no PEFT adapter" in capsys.readouterr().err


def test_evaluate_an_audio_run_on_its_test_file_reproduces_metrics_json(tmp_path):
    """Audio through the same path (Whisper: exact, as `verify`), from a csv of clip paths."""
    from tests.tiny import save_tiny_audio_model, speech_recipe, write_audio_data

    files = write_audio_data(tmp_path / "tones")["csv"]
    out = tmp_path / "run"
    finetune(speech_recipe(save_tiny_audio_model(tmp_path / "whisper", "whisper"), files, out))
    saved = json.loads((out / "metrics.json").read_text())
    [found] = evaluate(out, [files["test"]]).values()
    assert found["metrics"] == {k: saved["test"][f"test_{k}"] for k in found["metrics"]}
    assert found["per_class"] == saved["per_class"]["test"]


def test_evaluate_a_speech_recognition_run_scores_the_pipelines_transcripts(tmp_path):
    """Speech recognition: WER / CER of the pipeline's transcripts, as verify scores them."""
    from tests.tiny_asr import asr_recipe, save_tiny_whisper_asr, write_transcribed_tones

    files = write_transcribed_tones(tmp_path / "data")
    out = tmp_path / "run"
    recipe = asr_recipe(save_tiny_whisper_asr(tmp_path / "whisper"), files, out)
    recipe["verify"] = False
    finetune(recipe)
    saved = json.loads((out / "metrics.json").read_text())
    [found] = evaluate(out, [files["test"]]).values()
    assert {"wer", "cer"} <= set(found["metrics"]) and found["per_class"] is None
    assert found["metrics"]["wer"] == pytest.approx(saved["test"]["test_wer"], abs=1e-9)
    assert found["metrics"]["cer"] == pytest.approx(saved["test"]["test_cer"], abs=1e-9)


@pytest.mark.parametrize("command", ["finetune", "launch", "rank", "tune"])
def test_a_missing_recipe_is_the_one_required_argument_named(command, capsys):
    """Overrides are optional: argparse listed them as required too ('required: recipe, overrides')."""
    with pytest.raises(SystemExit) as info:
        main([command])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"hf-transfer {command}: error: the following arguments are required: recipe")


def test_validate_applies_overrides_as_finetune_does(finished_run, capsys):
    """`validate recipe.yaml key=value` checks the recipe with the override (it read the override as a second
    recipe file: 'recipe file not found')."""
    _, recipe = finished_run
    assert main(["validate", str(recipe), "training.learning_rate=3e-5"]) == 0
    assert capsys.readouterr().out.strip() == f"{recipe}: ok (with 1 override)"
    assert main(["validate", str(recipe), "training.learning_rate=-1"]) == 2
    assert capsys.readouterr().err.strip() == "hf-transfer: error: training.learning_rate: must be > 0, got -1.0"
    assert main(["validate", "training.learning_rate=3e-5"]) == 2
    assert capsys.readouterr().err.strip() == "hf-transfer: error: validate: no recipe file given, only overrides"


@pytest.mark.parametrize("argv, dest", [
    (["export", "out", "--format", "onnx", "there"], "there"),  # argparse alone: `unrecognized arguments: there`
    (["export", "out", "there", "--quantize", "int8"], "there"),
    (["merge", "out", "--force", "merged-copy"], "merged-copy"),
    (["init", "minilm_drugreview", "--force", "mine.yaml"], "mine.yaml"),
    (["export", "out", "--overwrite"], None),
])
def test_an_optional_destination_may_follow_the_flags(argv, dest):
    from hf_transfer.cli import parse

    args = parse(argv)
    assert args.dest == dest
    assert getattr(args, "output_dir", getattr(args, "name", None)) == argv[1]


def test_a_second_destination_is_still_unrecognised(capsys):
    from hf_transfer.cli import parse

    with pytest.raises(SystemExit) as exit_info:
        parse(["export", "out", "a", "--overwrite", "b"])
    assert exit_info.value.code == 2 and "unrecognized arguments: b" in capsys.readouterr().err
