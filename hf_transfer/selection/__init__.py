"""Choosing before training: transferability scores of frozen features (scores.py), computed by
`hf-transfer rank` (hf_transfer/runs/rank.py). Pure numpy; nothing here loads a model or a recipe."""
