"""Batched vs one-at-a-time greedy generation on the tiny Gemma-2, and BM25 retrieval speed.

    python bench/bench_infer.py [--prompts 32] [--batch_size 16] [--max_new_tokens 64]

Same prompts, greedy, same outputs required; writes results/bench/infer.json
(bench/results/ with --update_committed).
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

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    args = parser.parse_args()
    one_thread()
    from kit.generation import Sampling, generate_batch
    from kit.models import load_for_generation
    from kit.tiny import build_tiny_gemma2
    from prompts import load_template
    from rag import load_references, make_retriever

    references = load_references(ROOT / "data" / "sample_reference_qa.jsonl")
    template = load_template("alpaca_ja")
    questions = [r["input"] for r in references]
    prompts = [template.prompt(questions[i % len(questions)] + "。" * (i // len(questions)))
               for i in range(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_gemma2(Path(tmp) / "tiny-gemma2")
        sampling = Sampling(max_new_tokens=args.max_new_tokens)
        model, tokenizer = load_for_generation(str(model_dir))
        generate_batch(model, tokenizer, prompts[:2], sampling)  # warm-up
        start = time.perf_counter()
        sequential = [generate_batch(model, tokenizer, [p], sampling)[0].text for p in prompts]
        sequential_s = time.perf_counter() - start
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        batched = [None] * len(prompts)
        start = time.perf_counter()
        for b in range(0, len(order), args.batch_size):
            chunk = order[b:b + args.batch_size]
            generations = generate_batch(model, tokenizer, [prompts[i] for i in chunk], sampling)
            for i, generation in zip(chunk, generations):
                batched[i] = generation.text
        batched_s = time.perf_counter() - start
    retriever = make_retriever("bm25")
    documents = [r["input"] + r["output"] for r in references]
    documents = (documents * 3)[:100]
    queries = [(q + "について教えてください。") for q in (questions * 3)[:100]]
    start = time.perf_counter()
    retriever.index(documents)
    for query in queries:
        retriever.search(query, 20)
    bm25_s = time.perf_counter() - start
    result = {"prompts": args.prompts, "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens, "sequential_s": round(sequential_s, 2),
              "batched_s": round(batched_s, 2), "speedup": round(sequential_s / batched_s, 2),
              "identical_outputs": batched == sequential,
              "bm25_100_refs_100_queries_s": round(bm25_s, 3)}
    write_json(bench_result("infer.json", args.update_committed), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
