"""Task `token-classification`: the CoNLL reader, BIO repair, tag alignment with sub-tokens, entity F1,
one-line data errors, and 2-step runs (full, lora, staged) that reload through `pipeline` and pass verify."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from hf_transfer import finetune
from hf_transfer.cli import main
from hf_transfer.errors import DataError
from hf_transfer.validate import load_recipe, validate
from hf_transfer.recipe.yaml import parse_yaml
from hf_transfer.tasks import TASKS, resolve
from hf_transfer.tasks import token_classification as tc
from hf_transfer.tasks.readers import read_conll
from hf_transfer.train import load_splits
from tests.tiny import FILLER, NEGATIVE, POSITIVE, SPECIALS

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- tiny NER data


def sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """Filler words (O) around one `pos` entity (1-2 positive words) and maybe one `neg` (a negative word)."""
    words = rng.sample(FILLER, 4)
    tags = ["O"] * 4
    span = rng.sample(POSITIVE, rng.choice([1, 2]))
    at = rng.randrange(5)
    words[at:at] = span
    tags[at:at] = ["B-pos"] + ["I-pos"] * (len(span) - 1)
    if rng.random() < 0.5:
        words.append(rng.choice(NEGATIVE))
        tags.append("B-neg")
    return words, tags


def write_conll(path: Path, sentences) -> str:
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s)) for s in sentences) + "\n",
                    encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    rng = random.Random(0)
    return {split: write_conll(folder / f"{split}.conll", [sentence(rng) for _ in range(n)])
            for split, n in (("train", 32), ("validation", 12), ("test", 12))}


def ner_recipe(model_dir, files, out, **finetune_options) -> dict:
    return {
        "task": "token-classification",
        "model": {"name_or_path": str(model_dir), "max_length": 16},
        "data": {"path": "conll", "data_files": files},
        "finetune": {"strategy": "full", **finetune_options},
        "verify": True,
        "training": {"output_dir": str(out), "max_steps": 2, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 5, "learning_rate": 1e-2, "eval_strategy": "steps",
                     "eval_steps": 2, "save_steps": 2, "seed": 0, "disable_tqdm": True},
    }


# --------------------------------------------------------------------------- CoNLL and BIO


def test_conll_reader_reads_tab_and_space_separated_sentences(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- O\n\nKate\tB-person\nruns\tO\n\n\nin NN B-NP O\nSeattle NNP B-NP B-geo-loc\n",
                    encoding="utf-8")
    ds = read_conll(str(path))
    assert ds["tokens"] == [["Kate", "runs"], ["in", "Seattle"]]
    assert ds["ner_tags"] == [["B-person", "O"], ["O", "B-geo-loc"]]


def test_conll_reader_reads_every_file_a_glob_matches_a_bom_and_trailing_tabs(tmp_path):
    """A glob of shards read whole, in name order (only the first match was read); a byte-order mark is no part
    of the first token; trailing spaces or tabs are no empty tag; Latin-1 is one line naming the byte."""
    (tmp_path / "part-1.conll").write_bytes("\ufeffKate\tB-person \nruns\tO\t\n".encode("utf-8"))
    (tmp_path / "part-2.conll").write_text("in\tO\nSeattle\tB-geo-loc\n", encoding="utf-8")
    ds = read_conll(str(tmp_path / "part-*.conll"))
    assert ds["tokens"] == [["Kate", "runs"], ["in", "Seattle"]]
    assert ds["ner_tags"] == [["B-person", "O"], ["O", "B-geo-loc"]]
    (tmp_path / "latin.conll").write_bytes("caf\xe9\tO\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.conll: not UTF-8 text \(byte b'\\xe9' at position 3\)"):
        read_conll(str(tmp_path / "latin.conll"))


def test_conll_reader_names_the_file_and_line_of_a_bad_line(tmp_path):
    path = tmp_path / "b.conll"
    path.write_text("Kate\tB-person\nruns\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.conll:2: expected `token<TAB>tag`, got 'runs'"):
        read_conll(str(path))


def test_bio_repair_makes_an_orphan_inside_tag_a_beginning():
    assert tc.repair_bio(["O", "I-per", "I-per", "B-loc", "I-per", "I-loc"]) == (
        ["O", "B-per", "I-per", "B-loc", "B-per", "B-loc"], 3)
    assert tc.repair_bio(["B-per", "I-per", "O"]) == (["B-per", "I-per", "O"], 0)


def _loaded(tmp_path, rows: dict, **section):
    """Splits as load_data builds them from json files of {tokens, ner_tags} rows."""
    files = {}
    for split, data in rows.items():
        files[split] = str(tmp_path / f"{split}.json")
        Path(files[split]).write_text("\n".join(json.dumps({"tokens": w, "ner_tags": t}) for w, t in data))
    raw = {"task": "token-classification", "model": {"name_or_path": "x"},
           "data": {"path": "json", "data_files": files}, "token_classification": section,
           "training": {"output_dir": str(tmp_path / "out")}}
    return load_splits(validate(raw), 0)


GOOD = [(["good", "day"], ["B-pos", "O"]), (["bad"], ["B-neg"])]


def test_bio_refuse_names_the_row_and_repair_counts(tmp_path, caplog):
    rows = {"train": GOOD + [(["the", "good"], ["O", "I-pos"])], "validation": GOOD, "test": GOOD}
    with pytest.raises(DataError, match=r"split 'train' row 2: tag 'I-pos' of word 1 \('good'\)") as err:
        _loaded(tmp_path, rows, bio="refuse")
    assert "\n" not in str(err.value)
    loaded = _loaded(tmp_path, rows)  # repair (the default)
    names = loaded.label_names
    assert names == ["B-neg", "B-pos", "I-pos", "O"]
    assert loaded.splits["train"]["labels"][2] == [names.index("O"), names.index("B-pos")]
    assert "repaired 1 I- tags" in caplog.text


@pytest.mark.parametrize("rows, message", [
    ({"train": GOOD + [(["good", "day"], ["B-pos"])]}, r"split 'train' row 2 has 1 tags for 2 words"),
    ({"validation": GOOD + [(["good"], ["B-loc"])]}, r"tag 'B-loc' in split 'validation' row 2 is not one of"),
    ({"test": [([], [])]}, r"split 'test' row 0 is an empty sentence"),
])
def test_bad_rows_are_one_line_errors_naming_split_and_row(tmp_path, rows, message):
    rows = {"train": GOOD, "validation": GOOD, "test": GOOD} | rows
    with pytest.raises(DataError, match=message) as err:
        _loaded(tmp_path, rows)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- alignment


def test_align_labels_the_first_sub_token_of_each_word():
    # [CLS] w0 w1 w1 w1 w2 [SEP]: word 1 split into three pieces
    ids = [None, 0, 1, 1, 1, 2, None]
    assert tc.align(ids, [3, 0, 2]) == [-100, 3, 0, -100, -100, 2, -100]
    assert tc.align(ids, [3, 0, 2], every=True) == [-100, 3, 0, 0, 0, 2, -100]
    # label_all_subtokens continues B-X as I-X (tag ids: 0 B-pos, 1 I-pos, 2 O)
    assert tc.align(ids, [2, 0, 2], every=True, inside={0: 1}) == [-100, 2, 0, 1, 1, 2, -100]


@pytest.fixture(scope="module")
def piece_tokenizer(tmp_path_factory):
    """A WordPiece tokenizer whose words split into many pieces: wonderful = won ##der ##ful."""
    from transformers import BertTokenizer, BertTokenizerFast

    folder = tmp_path_factory.mktemp("pieces")
    vocab = SPECIALS + ["the", "day", "won", "##der", "##ful", "sea", "##hawk", "##s"]
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(folder)
    tok = BertTokenizerFast.from_pretrained(folder)
    assert tok.tokenize("wonderful seahawks") == ["won", "##der", "##ful", "sea", "##hawk", "##s"]
    return folder


def _spec(model_dir, max_length: int, **section):
    raw = {"task": "token-classification", "model": {"name_or_path": str(model_dir), "max_length": max_length},
           "data": {"path": "conll", "label_names": ["B-pos", "I-pos", "O"]}, "token_classification": section,
           "training": {"output_dir": "unused"}}
    return resolve(validate(raw))[1]


def test_preprocess_aligns_many_piece_words_and_counts_words_cut_by_truncation(piece_tokenizer, caplog):
    import datasets

    words = ["the", "wonderful", "seahawks", "day"]
    tags = [2, 0, 1, 2]  # O B-pos I-pos O
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"tokens": [words], "labels": [tags]}),
                                   "test": datasets.Dataset.from_dict({"tokens": [words], "labels": [tags]})})
    spec = _spec(piece_tokenizer, 16, label_all_subtokens=True)
    tok = tc.load_processor(spec)
    out = tc.preprocess(splits, tok, spec)
    # [CLS] the won ##der ##ful sea ##hawk ##s day [SEP]
    assert out["test"]["labels"][0] == [-100, 2, 0, -100, -100, 1, -100, -100, 2, -100]
    assert out["train"]["labels"][0] == [-100, 2, 0, 1, 1, 1, 1, 1, 2, -100]  # every sub-token, B- continued as I-
    spec = _spec(piece_tokenizer, 6)  # [CLS] the won ##der ##ful [SEP]: seahawks and day are cut
    out = tc.preprocess(splits, tc.load_processor(spec), spec)
    assert out["test"]["labels"][0] == [-100, 2, 0, -100, -100, -100]
    assert "cuts 2 words of split 'test'" in caplog.text


# --------------------------------------------------------------------------- metrics


def test_entity_scores_match_hand_computed_values():
    refs = [["B-per", "I-per", "O", "B-loc"], ["B-loc", "O", "B-per"]]
    hyps = [["B-per", "I-per", "O", "O"], ["B-loc", "O", "B-loc"]]
    # gold entities: per(0:2), loc(3), loc(0), per(2) = 4; predicted: per(0:2), loc(0), loc(2) = 3; correct 2
    s = tc.entity_scores(refs, hyps)
    assert s["overall_precision"] == pytest.approx(2 / 3) and s["overall_recall"] == pytest.approx(2 / 4)
    assert s["overall_f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert s["overall_accuracy"] == pytest.approx(5 / 7)
    assert s["per_precision"] == 1.0 and s["per_recall"] == 0.5  # per: 1 of 1 predicted right, 1 of 2 found
    assert s["loc_precision"] == 0.5 and s["loc_recall"] == 0.5


def test_compute_metrics_scores_words_only(monkeypatch):
    from transformers import EvalPrediction

    monkeypatch.setattr(tc, "run_tag_names", lambda spec: ["B-x", "I-x", "O"])
    labels = np.array([[-100, 0, -100, 1, 2, -100], [-100, 2, 0, -100, -100, -100]])
    logits = np.eye(3)[np.array([[2, 0, 2, 1, 2, 0], [1, 2, 0, 0, 0, 0]])]  # -100 positions: anything
    out = tc.compute_metrics(None)(EvalPrediction(predictions=logits, label_ids=labels))
    assert out["overall_f1"] == 1.0 and out["overall_accuracy"] == 1.0 and out["samples"] == 2


# --------------------------------------------------------------------------- class weights


def test_weighted_token_loss_by_hand_skips_ignored_positions():
    import math

    import torch

    from hf_transfer.objectives.losses import task_loss_function

    loss = task_loss_function("single_label_classification", None, torch.tensor([0.5, 2.0]))
    # two sentences of three positions; p = (1/4, 3/4) where the logits are (0, ln 3), else (1/2, 1/2)
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [9.0, -9.0]],
                           [[0.0, 0.0], [0.0, math.log(3.0)], [0.0, 0.0]]])
    labels = torch.tensor([[0, 1, -100], [-100, 1, 0]])
    # kept: ln 4 (weight 0.5), ln 2 (2.0), ln(4/3) (2.0), ln 2 (0.5): a weighted mean over the kept positions
    expected = (0.5 * math.log(4) + 2.0 * math.log(2) + 2.0 * math.log(4 / 3) + 0.5 * math.log(2)) / 5.0
    assert loss({"logits": logits}, labels).item() == pytest.approx(expected)
    plain = task_loss_function("single_label_classification", None, torch.tensor([1.0, 1.0]))
    unweighted = torch.nn.functional.cross_entropy(logits.view(-1, 2), labels.view(-1))  # the model's own loss
    assert plain({"logits": logits}, labels).item() == pytest.approx(unweighted.item())


def test_auto_class_weights_count_every_word_tag():
    from hf_transfer.objectives.losses import class_weights

    # tags of words: 0 once, 1 three times -> inverse 1 and 1/3, mean 2/3
    assert class_weights([[0, 1, 1], [1]], 2) == pytest.approx([1.5, 0.5])


def test_two_steps_with_class_weights_train_on_the_word_tag_frequencies(tiny_bert, ner_files, tmp_path):
    from collections import Counter

    import torch

    recipe = ner_recipe(tiny_bert, ner_files, tmp_path / "weighted")
    recipe["data"]["class_weights"] = "auto"
    recipe["verify"] = False
    result = finetune(recipe)
    assert result.trainer.state.global_step == 2
    names = ["B-neg", "B-pos", "I-pos", "O"]
    counts = Counter(t for tags in read_conll(ner_files["train"])["ner_tags"] for t in tags)
    inverse = torch.tensor([1 / counts[n] for n in names])
    weights = inverse / inverse.mean()
    logits = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[-100, 3, 0, 1, 2], [1, 2, 3, -100, -100]])
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 4), labels.view(-1), weight=weights)
    assert result.trainer.compute_loss_func({"logits": logits}, labels).item() == pytest.approx(expected.item())
    assert weights.max() > 2 * weights.min()  # the tags are unbalanced: the weighting is not the plain loss


@pytest.mark.parametrize("data, message", [
    ({"class_weights": [1.0, 2.0, 3.0]}, r"^data.class_weights: 3 weights for 4 labels \['B-neg', 'B-pos', 'I-pos', 'O'\]$"),
    ({"class_weights": "auto", "label_names": ["B-loc", "B-neg", "B-pos", "I-pos", "O"]},
     r"^data.class_weights: label 0 \('B-loc'\) has no training example; give the weights as a list$"),
])
def test_class_weights_that_do_not_fit_the_tags_are_one_line_errors(tiny_bert, ner_files, tmp_path, data, message):
    recipe = ner_recipe(tiny_bert, ner_files, tmp_path / "bad")
    recipe["data"] |= data
    with pytest.raises(DataError, match=message):
        finetune(recipe)


# --------------------------------------------------------------------------- runs


def _entities(pipe, texts):
    return [[(e["entity_group"], e["start"], e["end"], round(float(e["score"]), 5)) for e in row]
            for row in pipe(texts, aggregation_strategy="simple")]


TEXTS = ["the good day was great", "bad pain after the best day"]


@pytest.mark.parametrize("variant", ["full", "lora", pytest.param("staged", marks=pytest.mark.slow)])
def test_two_steps_reload_through_pipeline_and_verify(variant, tiny_bert, ner_files, tmp_path, capsys):
    from transformers import pipeline

    options = {"full": {}, "lora": {"strategy": "lora", "r": 2},
               "staged": {"strategy": "staged", "head_epochs": 0, "unfreeze": 1}}[variant]
    recipe = ner_recipe(tiny_bert, ner_files, tmp_path / variant, **options)
    recipe["verify"] = variant == "full"  # the round-trip check after training; the others: `hf-transfer verify`
    if variant == "staged":
        recipe["training"] |= {"max_steps": -1, "num_train_epochs": 1, "eval_strategy": "epoch",
                               "save_strategy": "epoch"}
    result = finetune(recipe)  # verify: true raises VerifyError when the check fails
    out = result.output_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["test_overall_f1"] <= 1 and "test_pos_f1" in metrics["test"]
    capsys.readouterr()
    if not recipe["verify"]:
        assert main(["verify", str(out)]) == 0, capsys.readouterr().err
        assert "metrics reproduced" in capsys.readouterr().out
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    if variant == "lora":  # as the card's snippet loads it
        from peft import AutoPeftModelForTokenClassification

        assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"
        config = AutoConfig.from_pretrained(out)
        model = AutoPeftModelForTokenClassification.from_pretrained(
            str(out), num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)
        assert model.config.id2label == {0: "B-neg", 1: "B-pos", 2: "I-pos", 3: "O"}
        hub = pipeline("token-classification", model=model.eval(), tokenizer=tokenizer, device="cpu")
    else:  # the folder loads without hf-transfer
        hub = pipeline("token-classification", model=str(out), device="cpu")
    ours = pipeline("token-classification", model=result.trainer.model.eval(), tokenizer=tokenizer, device="cpu")
    assert _entities(hub, TEXTS) == _entities(ours, TEXTS)  # the reloaded folder answers as the trained model
    assert main(["predict", str(out), *TEXTS]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 2 and shown[0].endswith(TEXTS[0])
    card = (out / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and 'aggregation_strategy="simple"' in card
    page = (out / "report.html").read_text()  # entity scores per type; no classes, no confusion matrix
    assert '<section id="entities">' in page and "<td>pos</td>" in page and 'id="classes"' not in page


def test_token_features_are_the_labelled_positions_and_batches_put_them_back(tiny_bert):
    import datasets
    import torch
    from transformers import AutoModelForTokenClassification

    from hf_transfer.strategies.probe import _compute, probe_head, token_batches

    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3).eval()
    spec = _spec(tiny_bert, 16)
    raw = datasets.DatasetDict({"test": datasets.Dataset.from_dict({
        "tokens": [["the", "good", "day"], ["bad"], ["my", "pain", "was", "awful", "today"]],
        "labels": [[2, 0, 2], [0], [2, 2, 2, 0, 2]]})})  # "today" is not in the vocabulary: [UNK]
    split = tc.preprocess(raw, tc.load_processor(spec), spec)["test"]
    collator = tc.collator(tc.load_processor(spec))
    head = probe_head(model)
    feats = _compute(model, head, split, collator, batch_size=2, device="cpu", per_token=True)
    assert feats.shape == (9, 32)  # one vector per labelled word, row after row
    batch = collator([split[i] for i in range(3)])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        keep = batch["labels"] != -100
        assert torch.allclose(head(feats), logits[keep], atol=1e-5)
        rows = [{"features": f.reshape(-1), "labels": torch.tensor(split[i]["labels"])}
                for i, f in enumerate(feats.split([3, 1, 5]))]
        rebuilt = token_batches(32)(rows)
        assert torch.equal(rebuilt["labels"], batch["labels"])
        assert torch.allclose(head(rebuilt["features"])[keep], logits[keep], atol=1e-5)


def test_cached_probe_caches_labelled_tokens_and_matches_the_probe_through_the_backbone(
    tiny_bert, ner_files, tmp_path, monkeypatch
):
    import torch
    from safetensors.torch import load_file

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    runs = {}
    for name, cache in (("cached", None), ("through", False)):
        recipe = ner_recipe(tiny_bert, ner_files, tmp_path / name, strategy="partial", freeze="backbone",
                            cache_features=cache)
        recipe["verify"] = name == "cached"  # the saved folder reproduces its metrics through the full model
        recipe["training"] |= {"max_steps": -1, "num_train_epochs": 2, "eval_strategy": "epoch",
                               "save_strategy": "epoch", "train_sampling_strategy": "group_by_length"}
        runs[name] = finetune(recipe)
    cached, through = runs["cached"].metrics, runs["through"].metrics
    assert cached["cached_features"]["cache_hits"] == 0 and "cached_features" not in through
    assert runs["cached"].trainer.state.global_step == runs["through"].trainer.state.global_step == 8
    a, b = load_file(tmp_path / "cached/model.safetensors"), load_file(tmp_path / "through/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # the same head training (dropout included), up to float noise
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert cached["train"]["train_loss"] == pytest.approx(through["train"]["train_loss"], abs=1e-5)
    losses = [e["eval_loss"] for e in runs["cached"].trainer.state.log_history if "eval_loss" in e]
    assert abs(losses[0] - losses[1]) > 1e-3  # after epoch 1 and 2: the head did train
    for role, prefix in (("validation", "eval"), ("test", "test")):
        for key in (f"{prefix}_overall_f1", f"{prefix}_overall_accuracy", f"{prefix}_samples"):
            assert cached[role][key] == through[role][key], key
        assert cached[role][f"{prefix}_loss"] == pytest.approx(through[role][f"{prefix}_loss"], abs=1e-5)
    # one vector per labelled word of the 32 training sentences, cached to disk
    words = sum(len(w) for w in read_conll(ner_files["train"])["tokens"])
    sizes = sorted(len(load_file(f)["features"]) for f in (tmp_path / "cache" / "features").glob("*.safetensors"))
    assert words in sizes and all(s < words for s in sizes if s != words)

    again = ner_recipe(tiny_bert, ner_files, tmp_path / "again", strategy="partial", freeze="backbone")
    again["verify"] = False
    assert finetune(again).metrics["cached_features"]["cache_hits"] == 3  # train, validation, test from disk


@pytest.mark.slow
def test_linear_probe_caches_token_features_in_compare_and_majority_is_all_o(tiny_bert, ner_files, tmp_path):
    recipe = ner_recipe(tiny_bert, ner_files, tmp_path / "probe")
    recipe["verify"] = False
    recipe["compare"] = ["linear_probe", "majority"]
    result = finetune(recipe)
    report = result.report or json.loads((tmp_path / "probe" / "report.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert runs["linear_probe"]["cached_features"] and "majority" in runs


def test_two_fold_cv_splits_by_sentence_and_summarises_entity_f1(tiny_bert, ner_files, tmp_path):
    import statistics

    from hf_transfer.runs import cv

    out = tmp_path / "cv"
    recipe = ner_recipe(tiny_bert, ner_files, out) | {"cv": {"folds": 2, "seed": 3}}
    recipe["verify"] = False
    held = []
    for i in range(2):  # whole sentences held out, each once; no stratification by tag
        splits = load_splits(cv.fold_recipe(load_recipe(recipe), out, i), seed=0).splits
        train, val = ({" ".join(w) for w in splits[r]["tokens"]} for r in ("train", "validation"))
        assert not train & val and len(splits["train"]) + len(splits["validation"]) == 32
        held += [" ".join(w) for w in splits["validation"]["tokens"]]
    assert sorted(held) == sorted(" ".join(w) for w in read_conll(ner_files["train"])["tokens"])
    result = finetune(recipe)
    summary = json.loads((out / "cv.json").read_text())
    assert result.metrics == summary and [r["fold"] for r in summary["runs"]] == [0, 1]
    for role, prefix in (("validation", "eval"), ("test", "test")):
        per_fold = [json.loads((out / f"fold-{i}" / "metrics.json").read_text())[role] for i in range(2)]
        for key in (f"{prefix}_overall_f1", f"{prefix}_overall_accuracy", f"{prefix}_pos_f1"):
            values = [m[key] for m in per_fold]
            assert summary[role][key]["values"] == values
            assert summary[role][key]["mean"] == pytest.approx(statistics.fmean(values))
            assert summary[role][key]["std"] == pytest.approx(statistics.stdev(values))
    assert summary["validation"]["eval_samples"]["values"] == [16, 16]
    assert "| overall_f1 |" in (out / "cv.md").read_text()


def test_hub_recipe_validates_and_runs_two_steps_on_a_tiny_stand_in(tiny_bert, ner_files, tmp_path):
    name = "bert_wnut17_ner.yaml"
    raw = parse_yaml((ROOT / "recipes" / name).read_text(), name)
    assert load_recipe(ROOT / "recipes" / name).task == "token-classification"
    raw["model"]["name_or_path"] = str(tiny_bert)
    raw["model"]["max_length"] = 16
    raw["data"] = {**raw["data"], "path": "conll", "data_files": ner_files}
    raw["verify"] = False  # verified above for this task
    raw["training"] |= {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 4,
                        "per_device_eval_batch_size": 8, "eval_strategy": "steps", "eval_steps": 2,
                        "save_steps": 2, "disable_tqdm": True}
    result = finetune(raw)
    assert result.trainer.state.global_step == 2
    assert "test_overall_f1" in json.loads((tmp_path / "out" / "metrics.json").read_text())["test"]


def test_the_record_is_registered():
    task = TASKS["token-classification"]
    assert task.peft_task_type == "TOKEN_CLS" and task.entities and "majority" in task.baselines
    assert "person_f1" in task.metric_names and task.metric_names["person_f1"][0] == "f1"


@pytest.mark.parametrize("section, value, key", [
    ("distill", {"teacher": "somewhere"}, "distill"),
    ("domain", {"method": "mmd", "target": {"path": "conll"}}, "domain"),
])
def test_objectives_the_task_does_not_support_are_refused_in_one_line(section, value, key):
    from hf_transfer.errors import RecipeError
    from hf_transfer.validate import load_recipe

    raw = {"task": "token-classification", "model": {"name_or_path": "m"}, "data": {"path": "conll"}}
    raw[section] = {**raw.get(section, {}), **value}
    with pytest.raises(RecipeError, match=rf"^{key}: not available for task token-classification"):
        load_recipe(raw)


def test_conll_reader_takes_a_list_of_files_in_its_order(tmp_path):
    (tmp_path / "b.conll").write_text("Kate\tB-person\n", encoding="utf-8")
    (tmp_path / "a.conll").write_text("in\tO\n", encoding="utf-8")
    ds = read_conll([str(tmp_path / "b.conll"), str(tmp_path / "a.conll")])
    assert ds["tokens"] == [["Kate"], ["in"]]
