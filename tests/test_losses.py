"""The losses of class weighting, distillation and domain adaptation against hand-computed values,
and the schema of their recipe sections."""

import json
import math

import pytest
import torch

from hf_transfer import validate as config
from hf_transfer.objectives.distill import check_label_space
from hf_transfer.errors import DataError, ModelError, RecipeError
from hf_transfer.objectives.losses import (
    class_weights, dann_lambda, distillation_loss, grad_reverse, mmd2, resolve_class_weights, task_loss_function,
)


def test_auto_class_weights_are_inverse_frequency_with_mean_one():
    # counts 3 and 1: inverse 1/3 and 1, mean 2/3 -> 0.5 and 1.5
    assert class_weights([0, 0, 1, 0], 2) == pytest.approx([0.5, 1.5])
    # counts 1, 2, 5: inverse 1, 1/2, 1/5, mean 17/30
    assert class_weights([0, 1, 1, 2, 2, 2, 2, 2], 3) == pytest.approx([30 / 17, 15 / 17, 6 / 17])
    with pytest.raises(DataError, match="data.class_weights: label 2 has no training example"):
        class_weights([0, 1], 3)
    with pytest.raises(DataError, match="data.class_weights: 3 weights for 2 labels"):
        resolve_class_weights([1.0, 2.0, 3.0], [0, 1], ["a", "b"])


def test_weighted_cross_entropy_by_hand():
    loss = task_loss_function("single_label_classification", None, torch.tensor([0.5, 1.5]))
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # p = (1/4, 3/4) and (1/2, 1/2)
    labels = torch.tensor([0, 1])  # losses ln 4 (weight 0.5) and ln 2 (weight 1.5)
    expected = (0.5 * math.log(4) + 1.5 * math.log(2)) / 2.0
    assert loss({"logits": logits}, labels).item() == pytest.approx(expected)
    soft = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # mixup targets: weighted, averaged over the batch
    assert loss({"logits": logits}, soft).item() == pytest.approx((0.5 * math.log(4) + 1.5 * math.log(2)) / 2)
    modality = object()
    assert task_loss_function("single_label_classification", modality, None) is modality


def test_kd_at_t1_alpha0_is_cross_entropy_on_teacher_probabilities():
    torch.manual_seed(0)
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3)
    p = teacher.softmax(-1)
    kd = distillation_loss(torch.tensor(7.0), student, teacher, alpha=0.0, temperature=1.0)
    soft_ce = -(p * student.log_softmax(-1)).sum(-1).mean()
    entropy = -(p * p.log()).sum(-1).mean()
    assert kd.item() == pytest.approx((soft_ce - entropy).item(), abs=1e-6)  # KL = CE - H(teacher)
    grad_kd, = torch.autograd.grad(kd, student)
    grad_ce, = torch.autograd.grad(soft_ce, student)
    assert torch.allclose(grad_kd, grad_ce, atol=1e-6)  # same gradient: H(teacher) is a constant


def test_kd_with_temperature_and_alpha_by_hand():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # teacher / 2 -> probabilities 1/(1+√3), √3/(1+√3)
    q = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    kl = sum(qi * math.log(qi / 0.5) for qi in q)
    loss = distillation_loss(torch.tensor(1.0), student, teacher, alpha=0.25, temperature=2.0)
    assert loss.item() == pytest.approx(0.25 * 1.0 + 0.75 * 4 * kl)


def test_gradient_reversal_flips_the_sign_and_scales_by_lambda():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 2.0, -1.0])
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0) == pytest.approx(0.9999092)


def test_mmd_on_known_samples():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0]])
    # k = exp(-d^2): Kxx mean (2 + 2/e)/4, Kyy 1, Kxy mean (e^-4 + e^-1)/2
    expected = (1 + math.exp(-1)) / 2 + 1 - (math.exp(-4) + math.exp(-1))
    assert mmd2(x, y, bandwidths=[1.0]).item() == pytest.approx(expected)
    # two kernels add up
    two = mmd2(x, y, bandwidths=[1.0, 4.0]).item()
    k4 = (1 + math.exp(-1 / 4)) / 2 + 1 - (math.exp(-1) + math.exp(-1 / 4))
    assert two == pytest.approx(expected + k4)
    # median heuristic: off-diagonal squared distances of {0, 1, 2} are 1,1,1,1,4,4 -> median 1
    assert mmd2(x, y, multipliers=[1.0]).item() == pytest.approx(expected)
    same = torch.randn(5, 3)
    assert mmd2(same, same).item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_label_space_is_checked(tmp_path):
    def teacher(cfg):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(cfg))
        return str(folder)

    check_label_space(teacher({"id2label": {"0": "negative", "1": "positive"}}), ["negative", "positive"])
    check_label_space(teacher({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}), ["negative", "positive"])
    check_label_space(teacher({"label_names": ["a", "b"], "num_classes": 2}), ["a", "b"])  # timm
    with pytest.raises(ModelError, match="predicts 3 labels, the student 2"):
        check_label_space(teacher({"num_classes": 3}), ["a", "b"])
    with pytest.raises(ModelError, match=r"has labels \['positive', 'negative'\], the student"):
        check_label_space(teacher({"id2label": {"0": "positive", "1": "negative"}}), ["negative", "positive"])
    with pytest.raises(ModelError, match=f"^distill.teacher: '{tmp_path}/missing': no such folder \\(and not a Hub id\\)$"):
        check_label_space(str(tmp_path / "missing"), ["a"])
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match=f"^distill.teacher: '{tmp_path}/weights.bin' is a file, not a model folder$"):
        check_label_space(str(tmp_path / "weights.bin"), ["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="^distill.teacher: cannot read the config.json of .*empty'"):
        check_label_space(str(tmp_path / "empty"), ["a"])


BASE = {"model": {"name_or_path": "m"}, "data": {"path": "csv"}}


@pytest.mark.parametrize("extra, message", [
    ({"data": {"path": "csv", "class_weights": "often"}}, "data.class_weights: expected 'auto'"),
    ({"data": {"path": "csv", "class_weights": [1, -1]}}, "data.class_weights: expected `auto` or non-negative"),
    ({"data": {"path": "csv", "class_weights": [1, 2, 3], "label_names": ["a", "b"]}},
     "data.class_weights: 3 weights for 2 labels"),
    ({"data": {"path": "csv", "class_weights": "auto", "problem_type": "regression"}},
     "data.class_weights: needs problem_type single_label_classification"),
    ({"distill": {"alpha": 0.5}}, "distill.teacher: required key is missing"),
    ({"distill": {"teacher": "t", "alpha": 1.5}}, r"distill.alpha: must be in \[0, 1\]"),
    ({"distill": {"teacher": "t", "temperature": 0}}, "distill.temperature: must be positive"),
    ({"distill": {"teacher": "t", "tau": 2}}, "distill.tau: unknown key"),
    ({"distill": {"teacher": "t"}, "data": {"path": "csv", "problem_type": "regression"}},
     "distill: needs data.problem_type single_label_classification"),
    ({"domain": {"method": "coral", "target": {"path": "csv"}}}, "domain.method: expected one of 'dann', 'mmd'"),
    ({"domain": {"method": "dann"}}, "domain.target: required key is missing"),
    ({"domain": {"method": "mmd", "target": {"data_files": {}}}}, "domain.target.path: required key is missing"),
    ({"domain": {"method": "mmd", "target": {"path": "csv"}, "weight": -1}}, "domain.weight: must be non-negative"),
    ({"domain": {"method": "mmd", "target": {"path": "csv"}, "kernel_multipliers": []}},
     "domain.kernel_multipliers: expected positive numbers"),
    ({"domain": {"method": "dann", "target": {"path": "csv"}}, "finetune": {"strategy": "partial"}},
     "domain: the backbone is frozen"),
    ({"distill": {"teacher": "t"}, "finetune": {"strategy": "partial", "cache_features": True}},
     "finetune.cache_features: not available with distill or domain"),
    ({"model": {"name_or_path": "m", "config_overrides": [1]}}, "model.config_overrides: expected dict"),
])
def test_schema_errors_name_the_key(extra, message):
    with pytest.raises(RecipeError, match=message):
        config.validate({**BASE, **extra})


def test_sections_validate_and_round_trip():
    raw = {**BASE, "model": {"name_or_path": "m", "config_overrides": {"num_hidden_layers": 2}},
           "data": {"path": "csv", "class_weights": "auto"},
           "distill": {"teacher": "t"}, "domain": {"method": "mmd", "target": {"path": "csv", "split": "test"}}}
    recipe = config.validate(raw)
    assert recipe.distill.alpha == 0.5 and recipe.distill.temperature == 2.0
    assert recipe.domain.target.split == "test" and recipe.domain.kernel_multipliers == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert config.load_recipe(recipe) == recipe  # the saved recipe.yaml reloads to the same sections
