"""Batched inference ahead of training (distill's teacher logits, the probe's features): no autograd graph,
outputs in order, the model's train/eval mode restored."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_transfer.objectives.distill import predict_logits
from hf_transfer.strategies.probe import _compute, probe_head

TEXTS = ["good great drug", "awful terrible pain", "the drug was fine", "worst day bad", "fine", "great"]


@pytest.fixture()
def bert_split(tiny_bert):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).train()
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    split = Dataset.from_dict({"text": TEXTS, "labels": [1, 0, 1, 0, 1, 1]})
    split = split.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"]).with_format("torch")
    grad_enabled = []  # autograd state seen by every forward
    model.register_forward_pre_hook(lambda m, args: grad_enabled.append(torch.is_grad_enabled()))
    return model, split, DataCollatorWithPadding(tok), grad_enabled


def expected_logits(model, split, collator):
    model.eval()
    with torch.no_grad():
        rows = [model(**{k: v for k, v in collator([split[i]]).items() if k != "labels"}).logits for i in range(len(split))]
    return torch.cat(rows)


def test_teacher_logits_are_computed_without_gradients_in_order(bert_split):
    model, split, collator, grad_enabled = bert_split
    logits = predict_logits(model, split, collator, batch_size=4, device="cpu")
    assert grad_enabled == [False, False]  # two batches, neither recording a graph
    assert logits.grad_fn is None and not logits.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # restored
    assert torch.allclose(logits, expected_logits(model, split, collator), atol=1e-5)


def test_probe_features_are_computed_without_gradients_and_mode_is_restored(bert_split):
    model, split, collator, grad_enabled = bert_split
    head = probe_head(model)
    feats = _compute(model, head, split, collator, batch_size=4, device="cpu")
    assert grad_enabled == [False, False]
    assert feats.grad_fn is None and feats.shape == (len(TEXTS), model.config.hidden_size)
    assert model.training
    assert not head[0]._forward_pre_hooks  # the capture hook is removed
    with torch.no_grad():
        assert torch.allclose(head.eval()(feats), expected_logits(model, split, collator), atol=1e-5)
