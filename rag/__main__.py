"""Inspect retrieval before spending GPU time.

    python -m rag --reference data/sample_reference_qa.jsonl --query "カレーの作り方は？" --k 3
    python -m rag --reference qa.jsonl --query "..." --retriever colbert --model bclavie/JaColBERTv2

Prints one JSON line per hit, best first: {"rank", "score", "input", "output"}.
"""
import argparse
import json

from kit.io import KitError, run_main
from rag import RETRIEVERS, load_references, make_retriever


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rag", description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="JSONL with input/output pairs")
    parser.add_argument("--query", required=True)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--retriever", choices=RETRIEVERS, default=None,
                        help="default: colbert when --model is given, else bm25")
    parser.add_argument("--model", help="ColBERT checkpoint (JaColBERT layout)")
    parser.add_argument("--cache_dir", default=".cache/rag")
    args = parser.parse_args(argv)
    if args.k < 1:
        raise KitError(f"--k must be at least 1 (got {args.k})")
    references = load_references(args.reference)
    retriever = make_retriever(args.retriever, args.model, args.cache_dir)
    retriever.index([r["input"] for r in references])
    for rank, (index, score) in enumerate(retriever.search(args.query, args.k), 1):
        print(json.dumps({"rank": rank, "score": round(score, 4), **references[index]},
                         ensure_ascii=False))


if __name__ == "__main__":
    run_main(main)
