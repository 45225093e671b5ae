"""Inspect retrieval before spending GPU time.

    python -m rag --reference data/sample_reference_qa.jsonl --query "カレーの作り方は？" --k 3
    python -m rag --reference qa.jsonl --query "..." --retriever colbert --model bclavie/JaColBERTv2

Prints one JSON line per hit, best first: {"rank", "score", "input", "output"}.
"""
import json
from dataclasses import dataclass

from kit.io import KitError, run_main
from kit.settings import existing_file, opt, parse_settings
from rag import RETRIEVERS, load_references, make_retriever


@dataclass
class RetrieveSettings:
    """what to search"""
    reference: str = opt(None, "JSONL with input/output pairs", required=True)
    query: str = opt(None, "the text to find references for", required=True)
    k: int = opt(5, "hits to print")
    retriever: str | None = opt(None, "default: colbert when --model is given, else bm25", choices=RETRIEVERS)
    model: str | None = opt(None, "ColBERT checkpoint (JaColBERT layout)")
    cache_dir: str = opt("results/.cache/rag", "encoded references are kept here")

    def check(self) -> None:
        if self.k < 1:
            raise KitError(f"--k must be at least 1 (got {self.k})")
        existing_file(self.reference, "--reference")


def main(argv=None):
    settings, _ = parse_settings(RetrieveSettings, argv, prog="-m rag", doc=__doc__)
    references = load_references(settings.reference)
    retriever = make_retriever(settings.retriever, settings.model, settings.cache_dir)
    retriever.index([r["input"] for r in references])
    for rank, (index, score) in enumerate(retriever.search(settings.query, settings.k), 1):
        print(json.dumps({"rank": rank, "score": round(score, 4), **references[index]}, ensure_ascii=False))


if __name__ == "__main__":
    run_main(main)
