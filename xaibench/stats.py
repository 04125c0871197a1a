"""Statistics for leaderboards: bootstrap CIs, paired Wilcoxon tests with Holm correction, ranks.

Bootstrap: 1,000 resamples with a fixed seed, 95% percentile interval: the numbers of
``scipy.stats.bootstrap(..., method="percentile", vectorized=True)`` with the same generator,
bit for bit (tests/test_stats.py compares them), drawn with numpy directly. Boards call it once
per method and cell, and scipy's version spends most of its ~4 ms a call on input validation
and array-API dispatch around the same few numpy operations.
Holm's step-down correction is five lines, so it is written here rather than adding
statsmodels as a dependency for it.

scipy.stats is imported inside the functions that use it: importing it takes ~0.8 s, which a
board that needs no test (or a command that only imports this module) should not pay.

Undefined input gives undefined output, never an exception or a RuntimeWarning: an empty or
non-finite sample has no interval, an empty or NaN sample has no test (NaN p-value), NaN
p-values are left out of Holm's correction, and a NaN or infinite mean gets no rank.
"""

from __future__ import annotations

import functools

import numpy as np

N_RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
ALPHA = 0.05
# Resamples per chunk in bootstrap_mean_ranks: memory is chunk x items x methods, not 1000 x ...
RESAMPLE_CHUNK = 50
# Largest resample index block kept between bootstrap_ci calls (int64 elements: 8 MB), 4 kept.
INDEX_CACHE_ELEMENTS = 2**20


def bootstrap_ci(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) with fewer than two values or any non-finite one."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.isfinite(values).all():
        return (float("nan"), float("nan"))
    if np.all(values == values[0]):
        return (float(values[0]), float(values[0]))
    index = _resample_index(len(values), n_resamples, seed)
    low, high = _linear_quantiles(np.sort(values[index].mean(axis=-1)), (1 - LEVEL) / 2)
    return float(low), float(high)


def _resample_index(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Indices of the resamples, as scipy.stats.bootstrap draws them: one (n_resamples, n) block
    from a fresh generator. The same for every sample of n values, and the draw is most of a
    bootstrap's time: a board bootstraps every method of a cell over the same n items, so recent
    blocks of up to 8 MB are kept (read-only)."""
    if n * n_resamples > INDEX_CACHE_ELEMENTS:
        return np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    return _cached_resample_index(n, n_resamples, seed)


@functools.lru_cache(maxsize=4)
def _cached_resample_index(n: int, n_resamples: int, seed: int) -> np.ndarray:
    index = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    index.flags.writeable = False
    return index


def _linear_quantiles(ordered: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``alpha`` and ``1 - alpha`` quantiles of sorted values, with the arithmetic of
    scipy.stats.quantile's default "linear" method (Hyndman & Fan type 7), so the same floats."""
    p = np.asarray(alpha, dtype=float)
    p = np.stack([p, 1 - p])
    n = np.asarray(len(ordered), dtype=float)
    position = p * n + (1 - p)  # 1-based position of the quantile
    upper = position // 1
    lower = upper - 1
    weight = position % 1
    weight[lower < 0] = 0
    lower = np.clip(lower, 0.0, n - 1).astype(np.int64)
    upper = np.clip(upper, 0.0, n - 1).astype(np.int64)
    result = (1 - weight) * ordered[lower] + weight * ordered[upper]
    return result[0], result[1]


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences.

    1.0 when there is a single difference or all are zero; NaN (no test) when there are none or
    any is NaN.
    """
    differences = np.asarray(differences, dtype=float)
    if len(differences) == 0 or np.isnan(differences).any():
        return float("nan")
    if len(differences) < 2 or np.all(differences == 0):
        return 1.0
    from scipy import stats  # ~0.8 s to import: only when a test is run

    return float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    NaN p-values (no test) stay NaN and do not count towards the number of tests.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(1.0, running)
    return adjusted.tolist()


def ranks(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """1 = best; ties share the best (minimum) rank. Only finite means are ranked: NaN or
    infinite means get a NaN rank and do not take a place. Ranks along the last axis."""
    means = np.asarray(means, dtype=float)
    keyed = np.where(np.isfinite(means), -means if higher_is_better else means, np.nan)
    from scipy import stats  # ~0.8 s to import: only when something is ranked

    return stats.rankdata(keyed, method="min", axis=-1, nan_policy="omit")


def bootstrap_mean_ranks(
    tables: list[tuple[np.ndarray, bool]],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    chunk: int = RESAMPLE_CHUNK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean rank across metrics and its 95% bootstrap interval.

    ``tables``: per metric an (items x methods) array of complete cases and its direction.
    Each replicate resamples the items of every metric, ranks the methods' means and averages
    the ranks across metrics. Returns (point estimate, low, high), one value per method.

    Resamples are evaluated ``chunk`` at a time, so memory is chunk x items x methods rather than
    n_resamples x items x methods. The indices are drawn metric by metric and, within a metric,
    chunk by chunk from one generator: numpy's generator gives the same stream whether an
    (n_resamples, items) block is drawn at once or in consecutive row chunks, so the result does
    not depend on ``chunk`` and equals the single-shot computation.
    """
    rng = np.random.default_rng(seed)
    point = np.mean([ranks(x.mean(0), hib) for x, hib in tables], axis=0)
    replicates = np.zeros((n_resamples, tables[0][0].shape[1]))
    for x, hib in tables:
        for start in range(0, n_resamples, chunk):
            stop = min(start + chunk, n_resamples)
            index = rng.integers(0, len(x), size=(stop - start, len(x)))
            replicates[start:stop] += ranks(x[index].mean(1), hib)
    replicates /= len(tables)
    tail = (1 - LEVEL) / 2 * 100
    return (
        point,
        np.percentile(replicates, tail, axis=0),
        np.percentile(replicates, 100 - tail, axis=0),
    )
