"""Transferability scores: how well a frozen backbone's features (or its source classifier) suit a
target task, computed from one forward pass over the target data, without training.

- **LogME** (You et al., ICML 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning"): the log marginal likelihood (evidence) of the targets under Bayesian linear regression on
  the features, w ~ N(0, 1/alpha I), y | w ~ N(Fw, 1/beta), with alpha and beta set by evidence
  maximisation (MacKay's fixed-point updates), divided by the number of examples; averaged over the
  targets (one column per class for classification, the one-hot labels). Higher is better.
- **LEEP** (Nguyen et al., ICML 2020): log of the expected empirical prediction: the source classifier's
  soft predictions over source classes z, turned into target predictions through the empirical P(y | z).
- **NCE** (Tran et al., ICCV 2019): negative conditional entropy -H(Y | Z) of the target labels given the
  source classifier's hard predictions.

All three use natural logarithms. The SVD form of LogME below costs one thin SVD of the features and
O(min(n, d)) per iteration; `evidence` is the same quantity evaluated directly (d x d matrices), for checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_TINY = 1e-12


@dataclass(frozen=True)
class Evidence:
    """LogME of one target column: evidence / n at the maximising alpha (prior precision) and beta
    (noise precision), and the number of fixed-point iterations taken."""

    value: float
    alpha: float
    beta: float
    iterations: int


def evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of Bayesian linear regression, evaluated directly:

    n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 ||F m - y||^2 - alpha/2 m'm - 1/2 log|A|,
    with A = alpha I + beta F'F and m = beta A^-1 F'y (the posterior mean of w)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    residual = float(np.sum((f @ m - y) ** 2))
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * residual - alpha / 2 * float(m @ m) - logdet / 2)


def _svd(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, singular values) of the thin SVD of the features, in float64."""
    u, s, _ = np.linalg.svd(np.asarray(features, dtype=np.float64), full_matrices=False)
    return u, s


def _fit(u: np.ndarray, s: np.ndarray, d: int, y: np.ndarray, tol: float, max_iter: int) -> Evidence:
    """Evidence maximisation for one target column, in the basis of the features' singular vectors.

    With F = U S V', sigma = s^2 and z = U'y, the posterior mean in V's basis is m_i = beta s_i z_i / t_i
    (t_i = alpha + beta sigma_i), the residual ||Fm - y||^2 = sum (alpha z_i / t_i)^2 + ||y||^2 - ||z||^2,
    gamma = sum beta sigma_i / t_i, and the fixed point is alpha = gamma / m'm, beta = (n - gamma) / residual."""
    n, r = len(y), len(s)
    sigma = s**2
    z = u.T @ y
    outside = max(float(y @ y) - float(z @ z), 0.0)  # the part of y the features cannot reach
    alpha, beta = 1.0, 1.0
    for iteration in range(1, max_iter + 1):
        t = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / t))
        mm = float(np.sum((beta * s * z / t) ** 2))
        residual = float(np.sum((alpha * z / t) ** 2)) + outside
        new_alpha = gamma / max(mm, _TINY)
        new_beta = max(n - gamma, _TINY) / max(residual, _TINY)
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    t = alpha + beta * sigma
    mm = float(np.sum((beta * s * z / t) ** 2))
    residual = float(np.sum((alpha * z / t) ** 2)) + outside
    value = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
             - beta / 2 * residual - alpha / 2 * mm - (np.sum(np.log(t)) + (d - r) * math.log(alpha)) / 2)
    return Evidence(value / n, alpha, beta, iteration)


def logme_fits(features: np.ndarray, targets: np.ndarray, tol: float = 1e-6, max_iter: int = 1000) -> list[Evidence]:
    """One Evidence per target column; `targets` is (n,) or (n, k) real values."""
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if len(y) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(y)} targets")
    u, s = _svd(features)
    d = np.shape(features)[1]
    return [_fit(u, s, d, y[:, k], tol, max_iter) for k in range(y.shape[1])]


def logme(features: np.ndarray, labels: np.ndarray, classification: bool = True) -> float:
    """LogME: the mean over targets of evidence / n. Classification: `labels` are class ids, one target
    per class present (its one-hot column); otherwise `labels` are real targets, (n,) or (n, k)
    (regression, or multi-label 0/1 columns)."""
    labels = np.asarray(labels)
    if classification:
        classes = np.unique(labels)
        labels = (labels[:, None] == classes[None, :]).astype(np.float64)
    return float(np.mean([e.value for e in logme_fits(features, labels)]))


def _joint(labels: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Empirical joint P(y, z): (target classes present) x (source classes); `source` is (n, Z) probabilities."""
    labels = np.asarray(labels)
    onehot = (labels[:, None] == np.unique(labels)[None, :]).astype(np.float64)
    return onehot.T @ np.asarray(source, dtype=np.float64) / len(labels)


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: mean over examples of log sum_z P(y_i | z) theta(x_i)_z, with P(y | z) = P(y, z) / P(z) from the
    empirical joint P(y, z) = 1/n sum_i theta(x_i)_z [y_i = y]. `source_probs` rows sum to 1."""
    probs = np.asarray(source_probs, dtype=np.float64)
    labels = np.asarray(labels)
    joint = _joint(labels, probs)
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), _TINY)  # P(y | z)
    rows = np.searchsorted(np.unique(labels), labels)
    eep = np.sum(conditional[rows] * probs, axis=1)
    return float(np.mean(np.log(np.maximum(eep, _TINY))))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE: -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z), from the counts of (target label, source prediction)."""
    source_labels = np.asarray(source_labels)
    z = np.searchsorted(np.unique(source_labels), source_labels)
    joint = _joint(labels, np.eye(z.max() + 1)[z])
    marginal = joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log((joint / np.maximum(marginal, _TINY))[mask])))


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)
