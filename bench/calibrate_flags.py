"""Each rule flag's precision and recall against a reference judge's grades, on the models the
thresholds were set on and on models held out from that.

    python bench/calibrate_flags.py --graded ../shared/data/elyza_graded

The graded folder (not shipped: real answers under their own licences) holds answers_<model>.jsonl
({task_id, input, output}), grades_<model>.jsonl ({task_id, grade}) and elyza_tasks_100.jsonl.
Precision: the share of flagged answers graded 1-2. Recall: the share of answers graded 1-2 that
are flagged. Also: how many answers graded 5 each flag fires on (the target is at most 1%).
Writes results/bench/flags.json (bench/results/flags.json with --update_committed).
"""
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kit.io import read_jsonl, write_json  # noqa: E402
from kit.judging.flags import rule_flags  # noqa: E402
from kit.runs import bench_result  # noqa: E402
from kit.testing.bench import bench_parser  # noqa: E402

HELD_OUT = ("gemma-2-9b-it-Q8_0", "Swallow-7b-instruct")  # never looked at while setting thresholds


def graded_answers(folder: Path) -> list[dict]:
    rows = []
    for answers in sorted(folder.glob("answers_*.jsonl")):
        model = answers.stem[len("answers_"):]
        grades = {g["task_id"]: g["grade"] for g in read_jsonl(folder / f"grades_{model}.jsonl")}
        rows += [{"model": model, "input": r["input"], "output": r["output"], "grade": grades[r["task_id"]]}
                 for r in read_jsonl(answers)]
    return rows


def flag_table(rows: list[dict]) -> dict:
    low_total = sum(r["grade"] <= 2 for r in rows)
    five_total = sum(r["grade"] == 5 for r in rows)
    counts = defaultdict(lambda: {"fired": 0, "graded_1_2": 0, "graded_5": 0})
    for row in rows:
        for flag in rule_flags(row["output"], row["input"]):
            counts[flag]["fired"] += 1
            counts[flag]["graded_1_2"] += row["grade"] <= 2
            counts[flag]["graded_5"] += row["grade"] == 5
    return {flag: {**c, "precision": round(c["graded_1_2"] / c["fired"], 3),
                   "recall": round(c["graded_1_2"] / max(1, low_total), 3),
                   "share_of_grade_5": round(c["graded_5"] / max(1, five_total), 4)}
            for flag, c in sorted(counts.items())}


def main(argv=None):
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--graded", required=True, help="folder of answers_*.jsonl and grades_*.jsonl")
    args = parser.parse_args(argv)
    rows = graded_answers(Path(args.graded))
    parts = {"calibration": [r for r in rows if r["model"] not in HELD_OUT],
             "held_out": [r for r in rows if r["model"] in HELD_OUT], "all": rows}
    result = {"held_out_models": list(HELD_OUT), "answers": {k: len(v) for k, v in parts.items()}}
    for part, selected in parts.items():
        result[part] = flag_table(selected)
        print(f"{part} ({len(selected)} answers, {sum(r['grade'] <= 2 for r in selected)} graded 1-2, "
              f"{sum(r['grade'] == 5 for r in selected)} graded 5)")
        for flag, c in result[part].items():
            print(f"  {flag:18} fired {c['fired']:3}  precision {c['precision']:.2f}  recall {c['recall']:.3f}  "
                  f"graded 5: {c['graded_5']} ({c['share_of_grade_5']:.1%})")
    out = bench_result("flags.json", args.update_committed)
    write_json(out, result)
    print(f"→ {out}")
    return result


if __name__ == "__main__":
    main()
