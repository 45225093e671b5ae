"""The local judge: ELYZA-rubric scores of answers, and the statistics that decide between trials.

settings   JudgeSettings (judge.py's flags, the keys of a judge config)
flags      rule flags calibrated on graded answers (no judge needed)
backends   the hf (local model) and openai (any OpenAI-compatible endpoint) judges, reply parsing
scoring    rule flags, the judgment cache, scores.jsonl and score.json
stats      bootstrap intervals, Spearman, Pearson, quadratic-weighted kappa, paired comparisons
agreement  judge vs. rated answers (judge.py agree)
"""
from kit.judging.backends import parse_grade
from kit.judging.flags import rule_flags
from kit.judging.scoring import judge_items, score_answers, warn_self_preference
from kit.judging.settings import JudgeSettings
from kit.judging.stats import bootstrap_ci, paired_bootstrap, pearson, quadratic_weighted_kappa, spearman, summarize

__all__ = ["JudgeSettings", "bootstrap_ci", "judge_items", "paired_bootstrap", "parse_grade", "pearson",
           "quadratic_weighted_kappa", "rule_flags", "score_answers", "spearman", "summarize",
           "warn_self_preference"]
