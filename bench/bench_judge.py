"""Judge throughput: the hf backend on the tiny Gemma-2 (logprob mode, one forward pass per batch),
and the openai backend against a local stub with 100 ms simulated latency at 1 vs 8 workers.

    python bench/bench_judge.py                 # about a minute; writes results/bench/judge.json
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kit.io import write_json  # noqa: E402
from kit.runs import bench_result  # noqa: E402
from kit.testing.bench import bench_parser, one_thread  # noqa: E402


def answers_file(folder: Path, tasks, copies: int) -> Path:
    from kit.io import write_jsonl

    rows = [{"task_id": t["task_id"], "input": t["input"], "output": f"{t['output']}（{n}）"}
            for n in range(copies) for t in tasks]
    for i, row in enumerate(rows):
        row["task_id"] = i
    write_jsonl(folder / "output.jsonl", rows)
    return folder / "output.jsonl"


def timed_score(folder: Path, tasks, settings) -> tuple[float, dict]:
    from kit.judging import score_answers

    start = time.perf_counter()
    summary = score_answers(folder / "output.jsonl", tasks, settings, folder)
    return time.perf_counter() - start, summary


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="answers to judge per run")
    parser.add_argument("--latency_ms", type=float, default=100.0)
    args = parser.parse_args()
    one_thread()
    from kit.judging import JudgeSettings
    from kit.tasks import load_tasks
    from kit.testing.stub_openai import StubJudgeServer
    from kit.tiny import build_tiny_gemma2

    dev = load_tasks(ROOT / "data" / "dev_tasks.jsonl")
    copies = -(-args.tasks // len(dev))
    tasks = [dict(t, task_id=n * len(dev) + i, input=t["input"]) for n in range(copies)
             for i, t in enumerate(dev)][: args.tasks]
    result = {"tasks": len(tasks), "stub_latency_ms": args.latency_ms}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        answers_file(tmp, dev, copies)
        lines = (tmp / "output.jsonl").read_text(encoding="utf-8").splitlines()[: len(tasks)]
        (tmp / "output.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        model = build_tiny_gemma2(tmp / "tiny-gemma2")
        for batch in (1, 8):
            settings = JudgeSettings(judge_backend="hf", judge_model=str(model), judge_batch_size=batch,
                                     cache_dir=str(tmp / f"cache-hf-{batch}"))
            seconds, summary = timed_score(tmp, tasks, settings)
            result[f"hf_batch{batch}_tasks_per_s"] = round(len(tasks) / seconds, 2)
            print(f"hf backend, tiny Gemma-2, batch {batch}: {len(tasks) / seconds:.1f} tasks/s "
                  "(model load included)")
        with StubJudgeServer(lambda prompt: 4, latency_s=args.latency_ms / 1000) as server:
            for workers in (1, 8):
                settings = JudgeSettings(judge_backend="openai", judge_model="stub", base_url=server.url,
                                         workers=workers, cache_dir=str(tmp / f"cache-openai-{workers}"))
                seconds, summary = timed_score(tmp, tasks, settings)
                result[f"openai_workers{workers}_s"] = round(seconds, 2)
                print(f"openai backend, stub at {args.latency_ms:.0f} ms, {workers} worker(s): "
                      f"{seconds:.2f} s for {len(tasks)} tasks")
        result["openai_speedup_8_vs_1"] = round(result["openai_workers1_s"] / result["openai_workers8_s"], 2)
    write_json(bench_result("judge.json", args.update_committed), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
