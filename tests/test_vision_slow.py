"""Real-asset checks of the offline vision default (`make test-slow`; needs `make assets-vision`)."""

from collections import Counter
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"

pytestmark = pytest.mark.slow


def test_efficientnet_asset_keeps_its_imagenet_knowledge():
    """The packaged weights, mapped onto timm, still recognise a real photo (a Chinese temple)."""
    import timm
    from sklearn.datasets import load_sample_image
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    folder = ASSETS / "efficientnet-lite0"
    assert (folder / "model.safetensors").is_file(), "run: make assets-vision"
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    tf = create_transform(**resolve_data_config(model=model))
    with torch.no_grad():
        top = model(tf(Image.fromarray(load_sample_image("china.jpg"))).unsqueeze(0)).topk(3).indices[0].tolist()
    assert 698 in top  # ImageNet class 698: palace


def test_fashion_mnist_asset_has_the_documented_splits():
    import datasets

    folder = ASSETS / "fashion-mnist"
    files = {split: str(folder / f"{split}.parquet") for split in ("train", "validation", "test")}
    ds = datasets.load_dataset("parquet", data_files=files)
    assert {k: len(v) for k, v in ds.items()} == {"train": 5000, "validation": 1000, "test": 10000}
    assert ds["train"].features["label"].names[0] == "T-shirt/top"
    assert set(Counter(ds["train"]["label"]).values()) == {500}
    assert ds["test"][0]["image"].size == (28, 28)
