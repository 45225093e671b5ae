"""Filter throughput: fast path vs the naive per-word rules vs the floor (JSON + two pycld2 calls).

    python bench/bench_filter.py                      # 100k records of ~1 KB, about 10 minutes
    python bench/bench_filter.py --records 20000      # quicker

Writes results/bench/filter.json (bench/results/ with --update_committed). The naive reference runs
on the same corpus and must give the same output; its throughput is what the 5× target is
measured against.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


import pycld2  # noqa: E402
import yaml  # noqa: E402

from kit.io import pair_from_record, write_json  # noqa: E402
from kit.runs import bench_result  # noqa: E402
from kit.testing.bench import bench_parser  # noqa: E402
from kit.testing.filter_oracle import make_corpus, reference_filter, write_corpus  # noqa: E402


def floor(path: Path) -> float:
    """Seconds to parse every line and run pycld2 twice per record, nothing else."""
    start = time.perf_counter()
    with open(path, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            pair = pair_from_record(record) or ("", "")
            for text in pair:
                try:
                    pycld2.detect(text)
                except (pycld2.error, ValueError):
                    pass
    return time.perf_counter() - start


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip_naive", action="store_true")
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / "configs" / "filter_ja.yaml").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        records = make_corpus(args.records, seed=0)
        source = write_corpus(Path(tmp) / "corpus.jsonl", records)
        size_mb = source.stat().st_size / 1e6
        print(f"{args.records} records, {size_mb:.1f} MB ({size_mb * 1e3 / args.records:.2f} KB each)")
        floor_s = floor(source)
        print(f"floor (json + 2× pycld2, 1 process): {floor_s:.2f} s")
        output = Path(tmp) / "out.jsonl"
        start = time.perf_counter()
        # the script as a user runs it: its process start and imports are part of the time
        subprocess.run([sys.executable, str(ROOT / "filter_data.py"), "--input", str(source),
                        "--output", str(output), "--workers", str(args.workers)], check=True)
        fast_s = time.perf_counter() - start
        print(f"fast path ({args.workers} workers): {fast_s:.2f} s")
        result = {"records": args.records, "mb": round(size_mb, 1), "floor_s": round(floor_s, 2),
                  "fast_s": round(fast_s, 2), "fast_over_floor": round(fast_s / floor_s, 2),
                  "fast_records_per_s": round(args.records / fast_s)}
        if not args.skip_naive:
            start = time.perf_counter()
            expected = reference_filter(json.loads(source.read_text(encoding="utf-8").replace(
                "\n", ",").rstrip(",").join("[]")), config)
            naive_s = time.perf_counter() - start
            kept = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
            result.update(naive_s=round(naive_s, 2), speedup_vs_naive=round(naive_s / fast_s, 1),
                          identical_output=kept == expected, kept=len(kept))
            print(f"naive reference: {naive_s:.2f} s; identical output: {kept == expected}")
    write_json(bench_result("filter.json", args.update_committed), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
