"""Few-shot retrieval: find the reference QAs nearest to a task's input.

    from rag import load_references, make_retriever
    references = load_references("data/sample_reference_qa.jsonl")
    retriever = make_retriever("bm25")                         # or ("colbert", "bclavie/JaColBERTv2")
    retriever.index([r["input"] for r in references])
    hits = retriever.search("カレーの作り方は？", k=20)         # [(reference index, score)], best first

Two backends: `colbert` (PyLate ColBERT over a JaColBERT checkpoint, in-memory MaxSim, encoded
references cached on disk) and `bm25` (bm25s over NFKC character unigrams + bigrams: bm25s' own
tokenizer does not split Japanese).
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
import warnings
from pathlib import Path

from kit.io import KitError, atomic_open, read_pairs

RETRIEVERS = ("bm25", "colbert")


def load_references(path) -> list[dict]:
    """[{input, output}] from JSONL with input/output or instruction/response."""
    return [{"input": row["instruction"], "output": row["response"]} for row in read_pairs(path)]


def char_ngrams(text: str) -> list[str]:
    """NFKC, lower-cased character unigrams and bigrams, whitespace dropped."""
    chars = [c for c in unicodedata.normalize("NFKC", text).lower() if not c.isspace()]
    return chars + [a + b for a, b in zip(chars, chars[1:])]


class BM25Retriever:
    name = "bm25"

    def index(self, documents: list[str]) -> None:
        import bm25s

        self.size = len(documents)
        self.engine = bm25s.BM25()
        self.engine.index([char_ngrams(d) for d in documents], show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        k = min(k, self.size)
        tokens = char_ngrams(query) or [" "]
        ids, scores = self.engine.retrieve([tokens], k=k, show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0])]


class ColBERTRetriever:
    name = "colbert"

    def __init__(self, model: str, cache_dir: str | Path | None = None, batch_size: int = 32):
        self.model_name, self.batch_size = model, batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        config = Path(model) / "config.json"
        if config.exists():
            architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
            if "HF_ColBERT" not in architectures:
                warnings.warn(f"{model} does not declare the HF_ColBERT architecture "
                              f"({architectures}); PyLate will give it a random projection layer", stacklevel=2)
        elif model.startswith((".", "/")):
            raise KitError(f"{model}: no such ColBERT checkpoint")
        import logging

        from pylate import models
        from transformers.utils import logging as transformers_logging

        # A JaColBERT checkpoint is no sentence-transformers folder and keeps its projection in
        # `linear.weight`, which PyLate loads itself: the libraries' notices about both (a
        # 12-line load report) are expected, so they are silenced for this load only.
        verbosity = transformers_logging.get_verbosity()
        loader_log = logging.getLogger("pylate.models.colbert")
        level = loader_log.level
        transformers_logging.set_verbosity_error()
        loader_log.setLevel(logging.ERROR)
        try:
            self.model = models.ColBERT(model_name_or_path=model, device=None)
        finally:
            transformers_logging.set_verbosity(verbosity)
            loader_log.setLevel(level)

    def _cache_key(self, documents: list[str]) -> str:
        digest = hashlib.sha256(self.model_name.encode())
        for name in ("config.json", "tokenizer.json", "vocab.txt", "artifact.metadata",
                     "model.safetensors"):
            path = Path(self.model_name) / name
            if path.exists():  # size and first MiB: enough to tell checkpoints apart, fast
                digest.update(f"{name}:{path.stat().st_size}".encode())
                with open(path, "rb") as handle:
                    digest.update(handle.read(1 << 20))
        for document in documents:
            digest.update(document.encode("utf-8", "surrogatepass") + b"\0")
        return digest.hexdigest()[:24]

    def index(self, documents: list[str]) -> None:
        import torch

        path = self.cache_dir / f"colbert-{self._cache_key(documents)}.pt" if self.cache_dir else None
        self.from_cache = False
        if path is not None and path.exists():
            try:
                self.documents = torch.load(path)
                self.from_cache = len(self.documents) == len(documents)
            except Exception:  # a damaged cache file is as good as none: encode again
                self.from_cache = False
        if not self.from_cache:
            self.documents = [torch.as_tensor(e) for e in self.model.encode(
                documents, is_query=False, batch_size=self.batch_size, show_progress_bar=False)]
            if path is not None:
                with atomic_open(path, "wb") as handle:
                    torch.save(self.documents, handle)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        from pylate import rank

        query_embeddings = self.model.encode([query], is_query=True, show_progress_bar=False)
        ranked = rank.rerank(documents_ids=[list(range(len(self.documents)))],
                             queries_embeddings=query_embeddings,
                             documents_embeddings=[self.documents])[0]
        return [(int(hit["id"]), float(hit["score"])) for hit in ranked[:k]]


def make_retriever(kind: str | None, model: str | None = None, cache_dir=None):
    """kind None: colbert when a model is given, else bm25."""
    kind = kind or ("colbert" if model else "bm25")
    if kind == "bm25":
        return BM25Retriever()
    if kind == "colbert":
        if not model:
            raise KitError("the colbert retriever needs --retriever_model (e.g. bclavie/JaColBERTv2)")
        return ColBERTRetriever(model, cache_dir=cache_dir)
    raise KitError(f"unknown retriever {kind!r}; choose one of {', '.join(RETRIEVERS)}")
