import json
import subprocess
import sys
import warnings

import pytest

from kit.io import KitError
from rag import char_ngrams, load_references, make_retriever

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "data" / "sample_reference_qa.jsonl"
# queries reworded from the bundled references, with the topic each should retrieve
LABELLED = [("会議を短く終わらせるには？", "work"), ("江戸時代について教えて", "history"),
            ("よく眠るにはどうしたらいい？", "health"), ("虹はどうしてできるの？", "science"),
            ("京都の観光の回り方は？", "travel"), ("天ぷらを揚げるコツは？", "cooking"),
            ("肩こりを和らげたい", "health"), ("地震はなぜ起こる？", "science"),
            ("ビジネスメールの書き方", "work"), ("明治維新とは", "history"),
            ("温泉旅館のマナー", "travel"), ("卵焼きの巻き方", "cooking")]


def topics():
    return [json.loads(line)["topic"] for line in REFERENCE.read_text(encoding="utf-8").splitlines()]


def test_char_ngrams_normalize_and_split_japanese():
    assert char_ngrams("ＡＢ 日本") == ["a", "b", "日", "本", "ab", "b日", "日本"]


@pytest.mark.parametrize("kind", ["bm25", "colbert"])
def test_same_topic_references_for_same_topic_queries(kind, tiny_colbert, tmp_path):
    references = load_references(REFERENCE)
    retriever = make_retriever(kind, str(tiny_colbert) if kind == "colbert" else None, tmp_path)
    retriever.index([r["input"] for r in references])
    labels = topics()
    hits = {query: retriever.search(query, 3) for query, _ in LABELLED}
    assert all(len(h) == 3 and h[0][1] >= h[1][1] >= h[2][1] for h in hits.values())
    top1 = sum(labels[hits[q][0][0]] == topic for q, topic in LABELLED)
    assert top1 >= len(LABELLED) - 1, f"{kind}: {top1}/{len(LABELLED)} top-1 hits on topic"


def test_colbert_embeddings_are_cached_by_content_and_model(tiny_colbert, tmp_path):
    documents = [r["input"] for r in load_references(REFERENCE)]
    first = make_retriever("colbert", str(tiny_colbert), tmp_path)
    first.index(documents)
    assert not first.from_cache and len(list(tmp_path.glob("colbert-*.pt"))) == 1
    second = make_retriever("colbert", str(tiny_colbert), tmp_path)
    second.index(documents)
    assert second.from_cache
    assert second.search("カレーの作り方", 5) == first.search("カレーの作り方", 5)
    third = make_retriever("colbert", str(tiny_colbert), tmp_path)
    third.index(documents[:-1])  # other content → other key
    assert not third.from_cache and len(list(tmp_path.glob("colbert-*.pt"))) == 2


def test_warns_when_checkpoint_is_not_hf_colbert(tiny_colbert, tmp_path):
    import shutil

    copy = tmp_path / "plain-bert"
    shutil.copytree(tiny_colbert, copy)
    config = json.loads((copy / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (copy / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_retriever("colbert", str(copy))
    assert any("HF_ColBERT" in str(w.message) for w in caught)


def test_reference_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "ref.jsonl"
    bad.write_text('{"input": "質問", "output": "回答"}\n{"question": "x"}\n', encoding="utf-8")
    with pytest.raises(KitError, match=r"ref\.jsonl:2: record needs"):
        load_references(bad)
    with pytest.raises(KitError, match="needs --retriever_model"):
        make_retriever("colbert")


def test_cli_prints_hits_as_json_lines():
    result = subprocess.run([sys.executable, "-m", "rag", "--reference", str(REFERENCE), "--query",
                             "カレーをおいしく作りたい", "--k", "2"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["score"] >= hits[1]["score"]
    assert hits[0]["input"] == "カレーをおいしく作るコツを教えてください。" and hits[0]["output"]
