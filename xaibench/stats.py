"""Statistics for leaderboards: bootstrap CIs, paired Wilcoxon tests with Holm correction, ranks.

Bootstrap: 1,000 resamples with a fixed seed, 95% percentile interval (scipy.stats.bootstrap).
Holm's step-down correction is five lines, so it is written here rather than adding
statsmodels as a dependency for it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

N_RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
ALPHA = 0.05


def bootstrap_ci(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) with fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    if np.all(values == values[0]):
        return (float(values[0]), float(values[0]))
    result = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=LEVEL,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when all are zero."""
    differences = np.asarray(differences, dtype=float)
    if len(differences) < 2 or np.all(differences == 0):
        return 1.0
    return float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(1.0, running)
    return adjusted.tolist()


def ranks(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """1 = best; ties share the best (minimum) rank."""
    keyed = -np.asarray(means, dtype=float) if higher_is_better else np.asarray(means, dtype=float)
    return stats.rankdata(keyed, method="min", axis=-1)


def bootstrap_mean_ranks(
    tables: list[tuple[np.ndarray, bool]], n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean rank across metrics and its 95% bootstrap interval.

    ``tables``: per metric an (items x methods) array of complete cases and its direction.
    Each replicate resamples the items of every metric, ranks the methods' means and averages
    the ranks across metrics. Returns (point estimate, low, high), one value per method.
    """
    rng = np.random.default_rng(seed)
    point = np.mean([ranks(x.mean(0), hib) for x, hib in tables], axis=0)
    replicates = np.zeros((n_resamples, tables[0][0].shape[1]))
    for x, hib in tables:
        index = rng.integers(0, len(x), size=(n_resamples, len(x)))
        replicates += ranks(x[index].mean(1), hib)
    replicates /= len(tables)
    tail = (1 - LEVEL) / 2 * 100
    return (
        point,
        np.percentile(replicates, tail, axis=0),
        np.percentile(replicates, 100 - tail, axis=0),
    )
