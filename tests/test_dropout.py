"""`model.fast_dropout` (hf_transfer/dropout.py): dropout's distribution from cheaper random numbers, attention
computed as torch computes it, torch's own path wherever the mode does not apply, and the trainer switch."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from hf_transfer import dropout, train
from hf_transfer.validate import load_recipe
from tests.tiny import text_recipe


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_keep_each_element_with_probability_1_minus_p(p):
    torch.manual_seed(0)
    mask, keep = dropout.keep_mask(torch.Size([64, 128, 128]), 1 - p)
    assert mask.dtype == torch.bool and mask.shape == (64, 128, 128)
    assert abs(keep - (1 - p)) <= 2 ** -17
    sigma = math.sqrt(keep * (1 - keep) / mask.numel())
    assert abs(mask.float().mean().item() - keep) < 5 * sigma
    # neighbouring lanes of one 64-bit draw are independent: pairs kept together as often as chance says
    pairs = (mask.flatten()[0::2] & mask.flatten()[1::2]).float().mean().item()
    assert abs(pairs - keep * keep) < 5 * math.sqrt(keep * keep * (1 - keep * keep) / (mask.numel() / 2))


def test_masks_follow_torchs_seed_and_differ_between_draws():
    torch.manual_seed(3)
    first, _ = dropout.keep_mask(torch.Size([1000]), 0.9)
    second, _ = dropout.keep_mask(torch.Size([1000]), 0.9)
    torch.manual_seed(3)
    again, _ = dropout.keep_mask(torch.Size([1000]), 0.9)
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_dropout_keeps_the_expectation_and_its_gradient_is_the_same_mask():
    torch.manual_seed(0)
    x = torch.ones(256, 1024, requires_grad=True)
    with dropout.FastDropout():
        y = F.dropout(x, p=0.25, training=True)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75), rtol=1e-4)
    assert abs(y.mean().item() - 1) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())


def test_the_backward_keeps_the_mask_in_one_byte_an_element():
    """torch keeps a float mask for dropout's backward; the mode keeps the bool mask's bytes, and nothing else."""
    x = torch.randn(64, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t), dropout.FastDropout():
        F.dropout(x, p=0.1, training=True)
    assert saved and all(t.shape == x.shape and t.element_size() == 1 for t in saved)


def _qkv(dtype=torch.float32):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    return q, k, v


def _masks():
    pad = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    pad[0, ..., 3:] = False
    additive = torch.zeros(2, 1, 1, 5).masked_fill(~pad, torch.finfo(torch.float32).min)
    return [None, pad, additive]


@pytest.mark.parametrize("mask", range(3))
@pytest.mark.parametrize("scale", [None, 0.3])
def test_attention_with_every_element_kept_equals_torchs_attention(monkeypatch, mask, scale):
    """With masks that keep everything, the mode's attention is torch's, outputs and gradients."""
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, keep: (torch.ones(shape, dtype=torch.bool), 1.0))
    attn_mask = _masks()[mask]
    results = []
    for mode in (dropout.FastDropout(), None):
        q, k, v = _qkv()
        with mode or contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.1 if mode else 0.0,
                                                 scale=scale)
        out.pow(2).sum().backward()
        results.append((out.detach(), q.grad, k.grad, v.grad))
    for mine, torchs in zip(*results):
        torch.testing.assert_close(mine, torchs)


def test_a_mask_larger_than_the_scores_gets_torchs_own_error():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 5, 8) for _ in range(3))
    mask = torch.ones(2, 3, 5, 5, dtype=torch.bool)
    with pytest.raises(RuntimeError) as torchs:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1)
    with dropout.FastDropout(), pytest.raises(RuntimeError) as mine:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1)
    assert str(mine.value) == str(torchs.value)


def test_attention_drops_the_probabilities_it_is_given_the_mask_for(monkeypatch):
    """softmax(q k^T s + mask) * M / k @ v, with the M the mode drew."""
    drawn = []

    def fixed(shape, keep):
        mask = torch.rand(shape) < keep
        drawn.append(mask)
        return mask, keep

    monkeypatch.setattr(dropout, "keep_mask", fixed)
    q, k, v = _qkv()
    attn_mask = _masks()[2]
    with dropout.FastDropout():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.2)
    probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8) + attn_mask, dim=-1)
    expected = (probs * drawn[0] / 0.8) @ v
    torch.testing.assert_close(out, expected)


def test_bf16_attention_under_autocast_matches_torchs_within_bf16_precision(monkeypatch):
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, keep: (torch.ones(shape, dtype=torch.bool), 1.0))
    q, k, v = _qkv()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with dropout.FastDropout():
            mine = F.scaled_dot_product_attention(q, k, v, attn_mask=_masks()[1], dropout_p=0.1)
        torchs = F.scaled_dot_product_attention(q, k, v, attn_mask=_masks()[1])
    assert mine.dtype == torchs.dtype == torch.bfloat16
    torch.testing.assert_close(mine.float(), torchs.float(), rtol=2e-2, atol=2e-2)


def _counting(monkeypatch):
    calls = []
    real = dropout.keep_mask

    def counted(shape, keep):
        calls.append(tuple(shape))
        return real(shape, keep)

    monkeypatch.setattr(dropout, "keep_mask", counted)
    return calls


@pytest.mark.parametrize("call", [
    lambda x: F.dropout(x, 0.1, training=False),
    lambda x: F.dropout(x.clone(), 0.1, inplace=True),
    lambda x: F.dropout(x, 0.0),
    lambda x: F.dropout(x, 1.0),
    lambda x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.1, is_causal=True),
    lambda x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.0),
    # a query that may attend to no key: torch's attention gives it zeros, an unguarded softmax NaN
    lambda x: F.scaled_dot_product_attention(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.bool), dropout_p=0.1),
    lambda x: F.scaled_dot_product_attention(x, x, x, attn_mask=torch.full((4, 4), float("-inf")), dropout_p=0.1),
    lambda x: F.dropout(x.int(), 0.1),
])
def test_what_the_mode_does_not_handle_goes_to_torch(monkeypatch, call):
    calls = _counting(monkeypatch)
    x = torch.randn(2, 4, 4)
    with dropout.FastDropout():
        try:
            call(x)
        except RuntimeError:  # torch's own answer (dropout of an int tensor), which the mode must not replace
            pass
    assert calls == []


def test_a_bert_training_step_draws_every_dropout_mask_through_the_mode(tiny_bert, monkeypatch):
    """The tiny BERT (2 layers, dropout 0.1): per layer the attention probabilities and two hidden dropouts,
    plus the embeddings' and the classifier's; none in evaluation."""
    from transformers import AutoModelForSequenceClassification

    calls = _counting(monkeypatch)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).train()
    ids = torch.randint(5, 20, (4, 12))
    with dropout.FastDropout():
        model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
        attention = [c for c in calls if len(c) == 4]
        assert len(attention) == 2 and len(calls) == 2 * 3 + 2, calls
        calls.clear()
        model.eval()(input_ids=ids)
    assert calls == []


def _trainer(tiny_bert, files, out, **training):
    raw = text_recipe(tiny_bert, files, out)
    raw["training"] |= {"eval_strategy": "no", "save_strategy": "no", **training}
    return raw


@pytest.mark.parametrize("overrides, applies", [
    ({}, True),
    ({"model": {"fast_dropout": False}}, False),
    ({"training": {"activation_checkpointing": True}}, False),
])
def test_the_trainer_holds_the_mode_where_it_applies(tiny_bert, sentiment_files, tmp_path, monkeypatch,
                                                     overrides, applies):
    raw = _trainer(tiny_bert, sentiment_files, tmp_path, **overrides.get("training", {}))
    raw["model"] |= overrides.get("model", {})
    trainer, _ = train.build_trainer(load_recipe(raw), tmp_path)
    assert trainer.fast_dropout is applies
    calls = _counting(monkeypatch)
    trainer.train()  # with checkpointing: no CheckpointError, the recomputed masks are torch's as the first
    assert bool(calls) is applies


def test_a_seed_fixes_a_run_with_the_mode(tiny_bert, sentiment_files, tmp_path):
    weights = []
    for run in ("a", "b"):
        trainer, _ = train.build_trainer(load_recipe(_trainer(tiny_bert, sentiment_files, tmp_path / run)), tmp_path / run)
        trainer.train()
        weights.append([p.detach().clone() for p in trainer.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
