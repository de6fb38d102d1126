"""Intervals of evaluation figures: a seeded percentile bootstrap, shared by evaluation and the judge."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same answers always give the same intervals


def bootstrap_interval(values: Sequence[float], *, seed: int = BOOTSTRAP_SEED,
                       resamples: int = BOOTSTRAP_RESAMPLES) -> list[float] | None:
    """Percentile bootstrap 95% interval of the mean of `values`; None without values."""
    if not len(values):
        return None
    data = np.asarray(values, dtype=float)
    means = data[np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return [round(float(low), 4), round(float(high), 4)]
