"""Statistics of scores: bootstrap intervals, rank and kappa agreement, paired comparisons."""
from __future__ import annotations

from kit.io import KitError

DIGITS = ("1", "2", "3", "4", "5")
# Two runs' scores are compared only when these match (score.json keys)
COMPARED_SETTINGS = ("judge_backend", "judge_model", "judge_mode", "prompt_hash", "judge_load_in_4bit",
                     "judge_temperature", "repeats")


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


MIN_PAIRED_TASKS = 10  # fewer paired tasks say nothing about a difference between trials
POWER_FACTOR = 2.8  # z(0.975) + z(0.80): a difference this many standard errors is found 80% of the time


def compare_scores(a: dict, b: dict, resamples: int = 10000, min_tasks: int = MIN_PAIRED_TASKS) -> dict:
    """B - A over the tasks both scored: the paired bootstrap's interval and a verdict (better,
    worse, not distinguishable), how many tasks were paired and left out, and the smallest
    difference these tasks could detect (80% power at the 5% level)."""
    import numpy as np

    result = paired_bootstrap(a, b, resamples)
    if result["n"] < min_tasks:
        raise KitError(f"only {result['n']} task(s) scored in both runs; a comparison needs at least {min_tasks}")
    common = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    diffs = np.array([b[k] - a[k] for k in common], dtype=float)
    low, high = result["ci95"]
    verdict = "not distinguishable" if low <= 0 <= high else "better" if result["difference"] > 0 else "worse"
    return {**result, "paired_tasks": len(common), "left_out": len(set(a) | set(b)) - len(common),
            "verdict": verdict,
            "smallest_detectable_difference": round(POWER_FACTOR * float(diffs.std(ddof=1)) / len(diffs) ** 0.5, 4)}


def paired_p_value(a: dict, b: dict) -> float:
    """Two-sided paired t-test p-value over the tasks both scored (1.0 when they never differ)."""
    import numpy as np
    from scipy.stats import ttest_rel

    common = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    x, y = np.array([a[k] for k in common], float), np.array([b[k] for k in common], float)
    if len(common) < 2 or np.allclose(x, y):
        return 1.0
    p = float(ttest_rel(x, y).pvalue)
    return 1.0 if p != p else p  # nan: no variation in the differences


def ties_with_best(score_sets: dict, alpha: float = 0.05) -> dict:
    """{trial: "best" | "tied" | "worse"}: a trial is worse than the best one only when their paired
    test (over common tasks) stands after Holm's correction over every pair of trials. The best is
    itself picked from the data, so the family is all m(m-1)/2 pairs, not the m-1 with the best:
    then a sweep of trials that differ only by judge noise comes out tied, not ranked."""
    import itertools

    means = {name: sum(v for v in s.values() if v is not None) / max(1, sum(v is not None for v in s.values()))
             for name, s in score_sets.items()}
    if not means:
        return {}
    best = max(means, key=means.get)
    pairs = sorted((paired_p_value(score_sets[x], score_sets[y]), x, y)
                   for x, y in itertools.combinations(sorted(means), 2))
    rejected, rejecting = set(), True
    for rank, (p, x, y) in enumerate(pairs):  # Holm: step down while p <= alpha / (m - rank)
        rejecting = rejecting and p <= alpha / (len(pairs) - rank)
        if rejecting:
            rejected.add(frozenset((x, y)))
    return {name: "best" if name == best else "worse" if frozenset((name, best)) in rejected else "tied"
            for name in means}
