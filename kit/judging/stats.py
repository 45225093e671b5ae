"""Statistics of scores: bootstrap intervals, rank and kappa agreement, paired comparisons."""
from __future__ import annotations

from kit.io import KitError

DIGITS = ("1", "2", "3", "4", "5")


def bootstrap_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """95% percentile interval of the mean, resampling tasks."""
    import numpy as np

    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def summarize(rows: list[dict]) -> dict:
    from collections import Counter

    scored = [r for r in rows if r.get("score") is not None]
    values = [r["score"] for r in scored]
    flags = Counter(flag for r in rows for flag in r["flags"])
    histogram = Counter(str(min(5, max(1, int(round(v))))) for v in values)
    summary = {"score": round(sum(values) / len(values), 4) if values else None,
               "ci95": bootstrap_ci(values), "n": len(values), "n_failed": len(rows) - len(values),
               "histogram": {d: histogram.get(d, 0) for d in DIGITS}, "flag_counts": dict(flags),
               "length_score_spearman": spearman([r["answer_chars"] for r in scored], values)}
    return summary


def spearman(a, b) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import spearmanr

    return round(float(spearmanr(a, b).statistic), 4)


def pearson(a, b) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import pearsonr

    return round(float(pearsonr(a, b).statistic), 4)


def quadratic_weighted_kappa(a: list[int], b: list[int], low: int = 1, high: int = 5) -> float | None:
    import numpy as np

    k = high - low + 1
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[x - low, y - low] += 1
    if observed.sum() == 0:
        return None
    weights = np.array([[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)])
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    denominator = (weights * expected).sum()
    return None if denominator == 0 else round(float(1 - (weights * observed).sum() / denominator), 4)


def paired_bootstrap(a: dict, b: dict, resamples: int = 10000, seed: int = 0) -> dict:
    """B - A over the tasks both scored: mean difference, its 95% interval, better/worse/same."""
    import numpy as np

    common = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    if not common:
        raise KitError("the two score sets share no scored task")
    diffs = np.array([b[k] - a[k] for k in common], dtype=float)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    low, high = float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
    return {"n": len(common), "mean_a": round(float(np.mean([a[k] for k in common])), 4),
            "mean_b": round(float(np.mean([b[k] for k in common])), 4),
            "difference": round(float(diffs.mean()), 4), "ci95": [round(low, 4), round(high, 4)],
            "better": int((diffs > 1e-9).sum()), "worse": int((diffs < -1e-9).sum()),
            "same": int((np.abs(diffs) <= 1e-9).sum()), "interval_contains_zero": low <= 0 <= high}
