"""Which training rows a run keeps: a cross-validation fold (`cv.fold`: the rest trains, the fold is
held out as validation) or a learning-curve point (`curve.fraction`: a nested, stratified share). Both
are seeded; load_data applies them to the encoded training split (`fold_of`, `subset_of`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np

from hf_transfer.errors import DataError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- cross-validation folds


def fold_indices(n: int, strata: list[int] | None, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out row indices of each fold: disjoint, together all n rows, class-balanced when
    `strata` (a class per row) is given."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if n < folds:
        raise DataError(f"cv.folds: {folds} folds need at least {folds} training rows, the split has {n}")
    x = np.zeros(n)
    if strata is not None:
        try:  # scikit-learn warns when a class has fewer rows than folds, and refuses when all do
            return [held for _, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, strata)]
        except ValueError as err:
            log.warning("cv: folds not stratified (%s)", str(err).splitlines()[0])
    return [held for _, held in KFold(folds, shuffle=True, random_state=seed).split(x)]


def select_fold(train, stratify: str | None, folds: int, seed: int, index: int):
    """(training part, held-out fold `index`) of the encoded training split."""
    strata = list(train[stratify]) if stratify else None
    held = fold_indices(len(train), strata, folds, seed)[index]
    rest = np.setdiff1d(np.arange(len(train)), held)
    log.info("cv: fold %d of %d: %d training rows, %d held out", index, folds, len(rest), len(held))
    return train.select(rest), train.select(np.sort(held))


def fold_of(cv):
    """The `fold` argument of load_data for a one-fold recipe (`cv.fold` set); None otherwise."""
    if cv is None or cv.fold is None:
        return None
    return partial(select_fold, folds=cv.folds, seed=cv.seed, index=cv.fold)


# --------------------------------------------------------------------------- learning-curve subsets


def share(count: int, fraction: float) -> int:
    """Rows of a class (or of an unstratified split) kept at `fraction`: the nearest whole number, at
    least one. Never smaller at a larger fraction, so the subsets nest."""
    return min(count, max(1, int(np.floor(fraction * count + 0.5))))


def curve_groups(strata: list[int] | None, n: int, seed: int) -> dict[Any, np.ndarray]:
    """{class: its row indices in the order the curve draws them at `seed`} (one group `None` without strata)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return {None: rng.permutation(n)}
    strata = np.asarray(strata)
    return {c.item(): rng.permutation(np.flatnonzero(strata == c)) for c in np.unique(strata)}


def subset_indices(strata: list[int] | None, n: int, fraction: float, seed: int) -> np.ndarray:
    """The training rows of the learning-curve point at `fraction` (sorted): the first share(n_c, fraction)
    rows of every class in the seed's order. A smaller fraction's rows are among a larger one's (nested);
    every class keeps its share, and at least one row (stratified); another seed draws other rows."""
    groups = curve_groups(strata, n, seed).values()
    return np.sort(np.concatenate([g[: share(len(g), fraction)] for g in groups]))


def too_small(strata: list[int] | None, fraction: float) -> list[Any]:
    """Classes that `fraction` of their rows would leave without a row (each keeps one)."""
    if strata is None:
        return []
    values, counts = np.unique(np.asarray(strata), return_counts=True)
    return [v.item() for v, c in zip(values, counts) if np.floor(fraction * c + 0.5) < 1]


def select_share(train, stratify: str | None, fraction: float, seed: int):
    """The encoded training split cut to the learning-curve point at `fraction` (seeded by `seed`)."""
    strata = list(train[stratify]) if stratify else None
    rows = subset_indices(strata, len(train), fraction, seed)
    missing = too_small(strata, fraction)
    if missing:
        log.warning("curve: %g of the training split leaves classes %s without an example; each keeps one",
                    fraction, ", ".join(map(str, missing)))
    log.info("curve: training on %d of %d rows (fraction %g%s, seed %d)", len(rows), len(train), fraction,
             ", stratified by label" if strata is not None else "", seed)
    return train.select(rows)


def subset_of(curve, seed: int):
    """The `subset` argument of load_data for a learning-curve point (`curve.fraction` set); None otherwise."""
    if curve is None or curve.fraction is None:
        return None
    return partial(select_share, fraction=curve.fraction, seed=seed)
