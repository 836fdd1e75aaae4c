"""`hf-transfer rank`: the scores against hand-computed values, and the command end to end on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_transfer.selection.scores import evidence, leep, logme, logme_fits, nce

# --------------------------------------------------------------------------- LEEP / NCE by hand

LABELS = np.array([0, 0, 1, 1])


def test_nce_of_a_hand_written_joint():
    # source predictions z = 0, 0, 1, 0 -> P(y, z): (0,0) 2/4, (1,1) 1/4, (1,0) 1/4; P(z=0) 3/4, P(z=1) 1/4
    expected = 2 / 4 * math.log(2 / 3) + 1 / 4 * math.log(1 / 3) + 1 / 4 * math.log(1)
    assert nce(np.array([0, 0, 1, 0]), LABELS) == pytest.approx(expected)
    assert nce(np.array([5, 5, 9, 9]), LABELS) == pytest.approx(0.0)  # source classes that decide the label
    assert nce(np.array([3, 3, 3, 3]), LABELS) == pytest.approx(math.log(1 / 2))  # that say nothing


def test_leep_of_hand_written_soft_predictions():
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    # P(y, z) = 1/4 sum of theta over each label's rows: y0: .35, .15; y1: .2, .3; P(z) = .55, .45
    p = {(0, 0): 0.35 / 0.55, (0, 1): 0.15 / 0.45, (1, 0): 0.2 / 0.55, (1, 1): 0.3 / 0.45}  # P(y | z)
    eep = [sum(p[(y, z)] * theta[i, z] for z in (0, 1)) for i, y in enumerate(LABELS)]
    assert leep(theta, LABELS) == pytest.approx(np.mean(np.log(eep)))


def test_leep_of_one_hot_predictions_is_nce():
    z = np.array([0, 0, 1, 0])
    assert leep(np.eye(2)[z], LABELS) == pytest.approx(nce(z, LABELS))


# --------------------------------------------------------------------------- LogME


@pytest.mark.parametrize("n, d", [(60, 8), (20, 30)])  # more examples than features, and fewer
def test_logme_is_the_evidence_at_its_maximum(n, d):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = f[:, 0] + 0.5 * rng.normal(size=n)
    fit = logme_fits(f, y)[0]
    assert fit.value == pytest.approx(evidence(f, y, fit.alpha, fit.beta) / n, rel=1e-9)
    for da, db in ((1.2, 1), (1 / 1.2, 1), (1, 1.2), (1, 1 / 1.2)):  # the fixed point maximises the evidence
        assert evidence(f, y, fit.alpha * da, fit.beta * db) / n < fit.value


def test_logme_by_hand_for_one_feature():
    """d = 1: evidence = log N(y; 0, F F'/alpha + I/beta), the marginal of y, evaluated without the posterior."""
    rng = np.random.default_rng(1)
    f = rng.normal(size=(12, 1))
    y = 2 * f[:, 0] + rng.normal(size=12)
    fit = logme_fits(f, y)[0]
    cov = f @ f.T / fit.alpha + np.eye(12) / fit.beta
    _, logdet = np.linalg.slogdet(cov)
    marginal = -0.5 * (12 * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y))
    assert fit.value == pytest.approx(marginal / 12, rel=1e-9)


def test_logme_prefers_informative_features():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    informative = np.c_[np.eye(3)[labels] + 0.3 * rng.normal(size=(300, 3)), rng.normal(size=(300, 13))]
    noise = rng.normal(size=(300, 16))
    assert logme(informative, labels) > logme(noise, labels) + 0.3
    per_class = [e.value for e in logme_fits(informative, np.eye(3)[labels])]
    assert logme(informative, labels) == pytest.approx(np.mean(per_class))


# --------------------------------------------------------------------------- the command


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _recipe_file(path, recipe):
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_rank_two_tiny_text_candidates(tmp_path, tiny_bert, sentiment_files, cache, capsys):
    from tests.tiny import save_tiny_bert, text_recipe

    from hf_transfer.cli import main

    other = save_tiny_bert(tmp_path / "other-bert", seed=1)
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "run")
    recipe["rank"] = {"candidates": [str(tiny_bert), str(other)], "sample": 40, "batch_size": 16}
    assert main(["rank", _recipe_file(tmp_path / "r.yaml", recipe), f"rank.output_dir={tmp_path / 'rank'}"]) == 0
    report = json.loads((tmp_path / "rank" / "rank.json").read_text())
    rows = report["candidates"]
    assert {r["candidate"] for r in rows} == {str(tiny_bert), str(other)}
    assert rows[0]["logme"] >= rows[1]["logme"] and report["best"] == rows[0]["candidate"]
    for r in rows:
        assert r["feature_size"] == 32 and r["samples"] == 40 and 0 <= r["probe"] <= 1
        assert r["leep"] is None and r["nce"] is None  # plain backbones: no source classifier
    md = (tmp_path / "rank" / "rank.md").read_text()
    assert str(other) in md and "LogME" in md
    assert str(other) in capsys.readouterr().out
    assert len(list(cache.rglob("*.safetensors"))) == 4  # features of 2 candidates x (sample, validation)


@pytest.mark.parametrize("library", ["timm", "transformers"])
def test_rank_reads_the_source_classifier_of_a_vision_candidate(tmp_path, cache, library):
    from tests.tiny_vision import save_tiny_timm, save_tiny_vit, vision_recipe, write_imagefolder

    from hf_transfer.runs.rank import rank
    from hf_transfer.validate import load_recipe

    if library == "timm":
        model, classes = save_tiny_timm(tmp_path / "timm", num_classes=7), 7
    else:
        model, classes = save_tiny_vit(tmp_path / "vit"), 5  # ViTForImageClassification, 5 source classes
    files = write_imagefolder(tmp_path / "images", n_train=6, n_test=2)
    recipe = load_recipe(vision_recipe(model, files, tmp_path / "run", library=library))
    report = rank(recipe, candidates=[str(model)], sample=12, out=str(tmp_path / "rank"))
    row = report["candidates"][0]
    assert row["source_classes"] == classes and row["leep"] is not None and row["nce"] is not None
    assert row["leep"] <= 0 and row["nce"] <= 0  # log-probabilities
    assert row["samples"] == 12


def test_a_bad_candidate_is_one_line_naming_it(tmp_path, tiny_bert, sentiment_files, cache, capsys):
    from tests.tiny import text_recipe

    from hf_transfer.cli import main

    path = _recipe_file(tmp_path / "r.yaml", text_recipe(tiny_bert, sentiment_files, tmp_path / "run"))
    missing = str(tmp_path / "no-such-model")
    assert main(["rank", path, "--candidates", str(tiny_bert), missing]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing in err and err.startswith("hf-transfer: error: rank.candidates")
    assert not (tmp_path / "run-rank").exists()  # refused before anything loaded or was written

    (tmp_path / "empty").mkdir()  # a folder that is no model: the loader's reason, with the candidate named
    assert main(["rank", path, "--candidates", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err  # the data are loaded first: datasets may print its progress bars
    lines = [ln for ln in err.splitlines() if ln.startswith("hf-transfer: error:")]
    assert "Traceback" not in err and len(lines) == 1 and f"candidate {str(tmp_path / 'empty')!r}" in lines[0]


def test_a_candidate_shorter_than_max_length_is_one_line_naming_it(tmp_path, tiny_bert, sentiment_files, cache, capsys):
    """Its position embeddings cover fewer tokens than model.max_length: said before any feature is computed."""
    import shutil

    from transformers import AutoConfig, BertModel

    from tests.tiny import text_recipe

    from hf_transfer.cli import main

    short = Path(shutil.copytree(tiny_bert, tmp_path / "short"))
    config = AutoConfig.from_pretrained(short)
    config.max_position_embeddings = 8
    BertModel(config).save_pretrained(short)
    path = _recipe_file(tmp_path / "r.yaml", text_recipe(tiny_bert, sentiment_files, tmp_path / "run"))  # 16 tokens
    assert main(["rank", path, "--candidates", str(tiny_bert), str(short)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("hf-transfer: error:")]
    assert "Traceback" not in err and lines == [
        f"hf-transfer: error: rank: candidate {str(short)!r}: model.max_length: 16 tokens, but {str(short)!r} has "
        "position embeddings for 8; set model.max_length to 8 or less"]


@pytest.mark.parametrize("section, message", [
    ({"sample": 1}, "rank.sample: must be >= 2"),
    ({"candidates": ["a/b", "a/b"]}, "rank.candidates: 'a/b' listed twice"),
    ({"bogus": 1}, "rank.bogus"),
])
def test_the_rank_section_is_validated(tiny_bert, sentiment_files, tmp_path, section, message):
    from tests.tiny import text_recipe

    from hf_transfer.errors import RecipeError
    from hf_transfer.validate import load_recipe

    with pytest.raises(RecipeError, match=message):
        load_recipe({**text_recipe(tiny_bert, sentiment_files, tmp_path / "run"), "rank": section})


def test_rank_without_candidates_says_where_to_name_them(tiny_bert, sentiment_files, tmp_path, capsys):
    from tests.tiny import text_recipe

    from hf_transfer.cli import main

    path = _recipe_file(tmp_path / "r.yaml", text_recipe(tiny_bert, sentiment_files, tmp_path / "run"))
    assert main(["rank", path]) == 2
    assert "rank.candidates: name at least one candidate" in capsys.readouterr().err


def test_rank_speech_candidates(tmp_path, cache):
    """wav2vec2 (projector -> mean pool -> classifier) and the Whisper encoder: the classifier's input is scored."""
    from tests.tiny import save_tiny_audio_model, speech_recipe, write_audio_data

    from hf_transfer.runs.rank import rank
    from hf_transfer.validate import load_recipe

    models = [save_tiny_audio_model(tmp_path / family, family) for family in ("wav2vec2", "whisper")]
    files = write_audio_data(tmp_path / "audio", n_train=12, n_test=4)["csv"]
    report = rank(load_recipe(speech_recipe(models[0], files, tmp_path / "run")),
                  candidates=[str(m) for m in models], sample=10, out=str(tmp_path / "rank"))
    rows = {r["candidate"]: r for r in report["candidates"]}
    assert set(rows) == {str(m) for m in models}
    assert all(r["feature_size"] == 16 and r["samples"] == 10 and r["leep"] is None for r in rows.values())
