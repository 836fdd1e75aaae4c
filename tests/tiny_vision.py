"""Tiny vision models and images built in code (no download): timm and transformers."""

from __future__ import annotations

import random
from pathlib import Path

CLASSES = ["horizontal", "plain", "vertical"]
SIZE = 32
PATTERN_ORDER = ["vertical", "plain", "horizontal"]  # a ClassLabel's own order


def save_tiny_timm(folder: Path, arch: str = "test_resnet", seed: int = 0, **kwargs) -> Path:
    """A randomly initialised timm model (1000 classes, as a pretrained one), saved in timm's format."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def save_tiny_vit(folder: Path, seed: int = 0) -> Path:
    """A 2-layer ViT (hidden 32, 32x32 images, 8x8 patches) with a 5-class head and its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=5,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    return folder


def pattern(kind: str, rng: random.Random, grey: bool):
    """Stripes (horizontal / vertical) or a plain square with noise; grey images are mode L."""
    from PIL import Image

    img = Image.new("L", (SIZE, SIZE))
    base = rng.randint(40, 90)
    for y in range(SIZE):
        for x in range(SIZE):
            band = {"horizontal": y // 4 % 2, "vertical": x // 4 % 2, "plain": 0}[kind]
            img.putpixel((x, y), min(255, base + 140 * band + rng.randint(0, 20)))
    return img if grey else Image.merge("RGB", (img, img.point(lambda v: v // 2), img))


def write_imagefolder(folder: Path, n_train: int = 8, n_test: int = 4, seed: int = 0) -> dict[str, str]:
    """`train/<class>/*.png` and `test/<class>/*.png`, half of them greyscale; returns data_files globs."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for kind in CLASSES:
            (folder / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pattern(kind, rng, grey=i % 2 == 0).save(folder / split / kind / f"{i}.png")
    return {split: str(folder / split / "**") for split in ("train", "test")}


def vision_recipe(model_dir: Path, files: dict[str, str], out: Path, library: str = "timm", **finetune) -> dict:
    """A recipe dict for a tiny vision model on the imagefolder: 2 training steps, batch 8."""
    return {
        "model": {"name_or_path": str(model_dir), "modality": "vision"},
        "vision": {"library": library, "image_size": SIZE, "scale": [0.5, 1.0]},
        "data": {"path": "imagefolder", "data_files": files, "validation_size": 0.25},
        "finetune": {"strategy": "full", **finetune},
        "training": {
            "output_dir": str(out),
            "max_steps": 2,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 16,
            "learning_rate": 1e-2,
            "eval_strategy": "steps",
            "eval_steps": 2,
            "save_steps": 2,
            "seed": 0,
            "disable_tqdm": True,
        },
    }


def write_multitask_images(folder: Path, n_train: int = 24, n_test: int = 12, seed: int = 0) -> dict[str, str]:
    """Parquet splits with two labels per image: `pattern` (the stripes; a ClassLabel named in
    PATTERN_ORDER, not alphabetically) and `colour` (grey or colour, strings; blank on every 5th row);
    returns data_files."""
    import datasets

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"image": datasets.Image(), "pattern": datasets.ClassLabel(names=PATTERN_ORDER),
                                  "colour": datasets.Value("string")})
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = {"image": [], "pattern": [], "colour": []}
        for i in range(n):
            kind, grey = CLASSES[i % 3], (i // 3) % 2 == 0
            rows["image"].append(pattern(kind, rng, grey=grey))
            rows["pattern"].append(PATTERN_ORDER.index(kind))
            rows["colour"].append("" if i % 5 == 4 else "grey" if grey else "colour")
        files[split] = str(folder / f"{split}.parquet")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(files[split])
    return files


def multitask_vision_recipe(model_dir: Path, files: dict[str, str], out: Path, library: str = "timm") -> dict:
    """vision_recipe on the parquet images with two tasks: pattern and colour (weight 0.5)."""
    recipe = vision_recipe(model_dir, files, out, library=library)
    recipe["data"]["path"] = "parquet"
    recipe["tasks"] = [{"name": "pattern", "label_column": "pattern"},
                       {"name": "colour", "label_column": "colour", "weight": 0.5}]
    return recipe
