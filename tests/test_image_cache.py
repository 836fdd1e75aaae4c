"""The vision fast paths on tiny timm models built in code: the uint8 image cache (`vision.image_cache`,
tasks/image_cache.py) is reused and rebuilt as data and sizes say, its evaluation tensors are the saved
folder's (pipeline()'s) preprocessing, training batches are augmented as timm's transform would, a
recipe that could use it does; channels-last (`vision.channels_last`) touches training batches only."""

import json
from types import SimpleNamespace

import pytest
import torch

from hf_transfer import finetune
from hf_transfer.errors import RecipeError
from hf_transfer.tasks import image_cache, images, resolve
from hf_transfer.tasks.data import load_data
from hf_transfer.validate import load_recipe
from tests.test_vision import images as image_files, tiny_resnet, tiny_vit  # noqa: F401 - module fixtures
from tests.tiny_vision import save_tiny_timm, vision_recipe, write_imagefolder


def _preprocessed(raw: dict):
    recipe = load_recipe(raw)
    task, spec = resolve(recipe)
    loaded = load_data(recipe.data, task.input_columns(spec), 0, task.labeler(spec))
    processor = task.load_processor(spec)
    return task.preprocess(loaded.splits, processor, spec), loaded, processor


def _cache_files(splits) -> dict[str, list[str]]:
    return {role: [f["filename"] for f in ds.cache_files] for role, ds in splits.items()}


def test_cache_is_reused_and_rebuilt_when_the_size_or_the_data_change(tiny_resnet, image_files, tmp_path):
    raw = vision_recipe(tiny_resnet, image_files, tmp_path / "out")
    first, _, _ = _preprocessed(raw)
    second, _, _ = _preprocessed(raw)
    assert set(first) == {"train", "validation", "test"}
    for role in first:
        assert "pixels" in first[role].column_names, role  # the cache, not the images
        assert first[role]._fingerprint == second[role]._fingerprint, role
    assert _cache_files(first) == _cache_files(second)
    assert all(any("/cache-" in f for f in files) for files in _cache_files(first).values())

    raw["vision"]["image_size"] = 24
    smaller, _, _ = _preprocessed(raw)
    assert all(smaller[r]._fingerprint != first[r]._fingerprint for r in first)
    assert tuple(smaller["test"][0]["pixel_values"].shape) == (3, 24, 24)
    assert tuple(smaller["train"][0]["pixel_values"].shape) == (3, 24, 24)

    other = write_imagefolder(tmp_path / "other-images", seed=1)  # same names and classes, other pixels
    changed, _, _ = _preprocessed(vision_recipe(tiny_resnet, other, tmp_path / "out2"))
    assert all(changed[r]._fingerprint != first[r]._fingerprint for r in first)
    assert not torch.equal(changed["test"][0]["pixel_values"], first["test"][0]["pixel_values"])


@pytest.mark.parametrize("crop_pct", [1.0, 0.875])
def test_evaluation_tensors_are_the_saved_processors(tiny_resnet, image_files, tmp_path, crop_pct):
    """What the trained model is evaluated on equals what pipeline() gives the saved folder, and the
    round-trip check (verify: tolerance 0, bit-identical logits) passes."""
    from transformers import AutoImageProcessor, pipeline

    raw = vision_recipe(tiny_resnet, image_files, tmp_path / "out")
    raw["vision"]["crop_pct"] = crop_pct
    result = finetune(raw)
    assert "pixels" in result.trainer.train_dataset.column_names  # the run used the cache
    fast, loaded, _ = _preprocessed(raw)
    test = loaded.splits["test"]
    rgb = [images.rgb_image(im, "image") for im in test["image"]]
    saved = AutoImageProcessor.from_pretrained(tmp_path / "out")
    expected = saved(rgb, return_tensors="pt")["pixel_values"]
    got = torch.stack([e["pixel_values"] for e in fast["test"].__getitems__(list(range(len(test))))])
    assert torch.equal(got, expected)
    clf = pipeline("image-classification", model=str(tmp_path / "out"), device="cpu")
    model = result.trainer.model.eval()
    with torch.no_grad():
        top = model(pixel_values=got).logits.argmax(-1).tolist()
    names = [model.label_names[i] for i in top]
    assert [r[0]["label"] for r in clf(rgb)] == names


def test_default_recipe_trains_through_the_cache_with_augmentation(tmp_path, image_files, monkeypatch):
    """The shipped default (timm, random resized crop + flip, image_cache unset) must take the fast path:
    the per-image path is made to fail here, so falling back to it silently fails the test."""
    from tests.test_vision import stand_in

    def per_image(*args, **kwargs):
        raise AssertionError("the per-image path ran where the image cache applies")

    monkeypatch.setattr(images, "preprocess", per_image)
    effnet = save_tiny_timm(tmp_path / "tiny-effnet", "test_efficientnet")
    raw = stand_in("efficientnet_lite0_fashion_mnist.yaml", effnet, image_files, tmp_path / "out")
    assert raw["vision"].get("image_cache") is None
    result = finetune(raw)
    train = result.trainer.train_dataset
    assert {"pixels", "size"} <= set(train.column_names)
    assert result.trainer.model.channels_last  # vision.channels_last: on by default for timm models
    a, b = (torch.stack([e["pixel_values"] for e in train.__getitems__(list(range(8)))]) for _ in range(2))
    assert a.dtype == torch.float32 and not torch.equal(a, b)  # augmented afresh each time
    assert result.metrics["train"]["train_loss"] > 0


def test_switch_off_and_where_it_does_not_apply_use_the_per_image_path(tiny_resnet, tiny_vit, image_files, tmp_path):
    raw = vision_recipe(tiny_resnet, image_files, tmp_path / "a")
    raw["vision"]["image_cache"] = False
    off, _, _ = _preprocessed(raw)
    assert "image" in off["train"].column_names and "pixels" not in off["train"].column_names
    raw = vision_recipe(tiny_resnet, image_files, tmp_path / "b")
    raw["vision"]["color_jitter"] = 0.4  # a per-image PIL operation: null falls back
    jitter, _, _ = _preprocessed(raw)
    assert "pixels" not in jitter["train"].column_names
    transformers, _, _ = _preprocessed(vision_recipe(tiny_vit, image_files, tmp_path / "c", library="transformers"))
    assert "pixels" not in transformers["train"].column_names


@pytest.mark.parametrize("value, message", [
    ("yes", r"^vision.image_cache: expected bool or null, got 'yes'$"),
    (1, r"^vision.image_cache: expected bool or null, got 1$"),
])
def test_a_bad_switch_value_is_a_one_line_error_naming_the_key(tiny_resnet, image_files, tmp_path, value, message):
    raw = vision_recipe(tiny_resnet, image_files, tmp_path)
    raw["vision"]["image_cache"] = value
    with pytest.raises(RecipeError, match=message):
        load_recipe(raw)


def test_switch_on_where_it_cannot_apply_is_a_one_line_error(tiny_resnet, tiny_vit, image_files, tmp_path):
    raw = vision_recipe(tiny_resnet, image_files, tmp_path)
    raw["vision"] |= {"image_cache": True, "auto_augment": "rand-m9-mstd0.5"}
    with pytest.raises(RecipeError, match=r"^vision.image_cache: true does not apply with vision.auto_augment"):
        load_recipe(raw)
    raw = vision_recipe(tiny_vit, image_files, tmp_path, library="transformers")
    raw["vision"]["image_cache"] = True
    with pytest.raises(RecipeError, match=r"^vision.image_cache: true needs vision.library timm") as err:
        load_recipe(raw)
    assert "\n" not in str(err.value)


def test_crop_boxes_follow_timms_random_resized_crop():
    torch.manual_seed(0)
    sizes = torch.tensor([[28, 28], [300, 100], [64, 48]]).repeat(400, 1)
    boxes = image_cache.crop_boxes(sizes, (0.3, 1.0))
    assert boxes.min() >= 0 and boxes.max() <= 1
    w = (boxes[:, 2] - boxes[:, 0]) * sizes[:, 0]
    h = (boxes[:, 3] - boxes[:, 1]) * sizes[:, 1]
    assert torch.allclose(w, w.round(), atol=1e-3) and torch.allclose(h, h.round(), atol=1e-3)  # whole pixels
    drawn = (w * h / (sizes[:, 0] * sizes[:, 1]))[: 3 * 400 : 3]  # the square images: no fallback
    assert drawn.min() > 0.27 and drawn.max() <= 1.0 and drawn.std() > 0.1
    aspect = (w / h)[::3]
    assert aspect.min() > 0.65 and aspect.max() < 1.55 and aspect.std() > 0.1  # 3/4..4/3, then rounded to pixels
    # a 3:1 image where no try fits the range falls back to the centred crop of aspect 4/3
    wide = image_cache.crop_boxes(torch.tensor([[300, 100]]), (1.0, 1.0))
    assert torch.allclose(wide, torch.tensor([[(300 - 133) // 2 / 300, 0.0, ((300 - 133) // 2 + 133) / 300, 1.0]]))


def test_augment_without_crop_only_flips_and_a_whole_image_box_is_the_image():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    flips = SimpleNamespace(random_resized_crop=False, hflip=1.0, vflip=0.0, scale=[1.0, 1.0])
    assert torch.equal(image_cache.augment(x, None, flips, "bilinear"), x.flip(-1).float())
    # scale 1 on square images: every draw (or the fallback) is the whole image, so the crop is the identity
    whole = SimpleNamespace(random_resized_crop=True, hflip=0.0, vflip=1.0, scale=[1.0, 1.0])
    out = image_cache.augment(x, torch.tensor([[8, 8]] * 6), whole, "bicubic")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.flip(-2).float(), atol=1e-3, rtol=0)


def test_mixup_and_cutmix_mix_cached_training_batches(tiny_resnet, image_files, tmp_path):
    raw = vision_recipe(tiny_resnet, image_files, tmp_path)
    raw["vision"] |= {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1}
    splits, _, _ = _preprocessed(raw)
    assert "pixels" in splits["train"].column_names
    batch = images.collate(splits["train"].__getitems__([0, 1, 2, 3]))
    assert batch["labels"].shape == (4, 3) and torch.allclose(batch["labels"].sum(-1), torch.ones(4))
    assert images.collate(splits["test"].__getitems__([0, 1]))["labels"].dtype == torch.long


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_applies_to_training_batches_only(channels_last):
    from hf_transfer.tasks.image_classification import TimmClassifier

    seen = []
    conv = torch.nn.Conv2d(3, 4, 3)
    conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    model = TimmClassifier(torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), None,
                           "single_label_classification", channels_last=channels_last)
    x = torch.rand(2, 3, 8, 8)
    model.train()(x)
    model.eval()(x)
    assert seen == [channels_last, False]  # evaluation keeps the layout pipeline() uses
    assert conv.weight.is_contiguous()  # the weights (and so checkpoints) keep theirs


# --------------------------------------------------------------------------- vision.train_image_size


@pytest.mark.parametrize("cache, until, small", [(True, 0.5, 2), (False, 1.0, 4)])
def test_train_image_size_resizes_the_first_part_of_training_only(tiny_resnet, image_files, tmp_path, monkeypatch,
                                                                  cache, until, small):
    """Progressive resizing: training batches reach the backbone at train_image_size for the first `until` of
    the steps (both image paths), then at image_size; evaluation, the saved data config and pipeline() keep
    image_size."""
    from hf_transfer.tasks.image_classification import TimmClassifier

    seen = []  # (training?, height) of each batch the timm backbone receives
    forward = TimmClassifier.forward

    def spy(self, pixel_values, labels=None):
        hook = self.model.register_forward_pre_hook(lambda m, a: seen.append((m.training, a[0].shape[-1])))
        try:
            return forward(self, pixel_values, labels)
        finally:
            hook.remove()

    monkeypatch.setattr(TimmClassifier, "forward", spy)
    raw = vision_recipe(tiny_resnet, image_files, tmp_path / "out")
    raw["vision"] |= {"train_image_size": 24, "train_image_size_until": until, "image_cache": cache}
    raw["training"] |= {"max_steps": 4, "eval_steps": 4, "save_steps": 4}
    result = finetune(raw)
    training = [h for t, h in seen if t]
    assert training == [24] * small + [32] * (4 - small)
    assert {h for t, h in seen if not t} == {32}
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert result.trainer.model.train_crop is None  # after training: image_size again


@pytest.mark.parametrize("key, value, message", [
    ("train_image_size", 0, r"^vision.train_image_size: must be >= 1, got 0$"),
    ("train_image_size_until", 0, r"^vision.train_image_size_until: must be in \(0, 1\], got 0.0$"),
    ("train_image_size_until", 1.5, r"^vision.train_image_size_until: must be in \(0, 1\], got 1.5$"),
    ("image_size", 0, r"^vision.image_size: must be >= 1, got 0$"),
    ("image_size", -3, r"^vision.image_size: must be >= 1, got -3$"),
])
def test_sizes_out_of_range_are_refused_naming_the_key(tiny_resnet, image_files, tmp_path, key, value, message):
    raw = vision_recipe(tiny_resnet, image_files, tmp_path)
    raw["vision"][key] = value
    with pytest.raises(RecipeError, match=message):
        load_recipe(raw)


def test_train_image_size_is_refused_where_the_model_takes_one_size(tiny_vit, image_files, tmp_path):
    raw = vision_recipe(tiny_vit, image_files, tmp_path / "a", library="transformers")
    raw["vision"]["train_image_size"] = 24
    with pytest.raises(RecipeError, match=r"^vision.train_image_size needs vision.library timm"):
        load_recipe(raw)
    vit = save_tiny_timm(tmp_path / "timm-vit", "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                         embed_dim=32, num_heads=2)
    raw = vision_recipe(vit, image_files, tmp_path / "b")
    raw["vision"]["train_image_size"] = 24
    with pytest.raises(RecipeError, match=r"^vision.train_image_size: .* takes one fixed input size"):
        finetune(raw)
