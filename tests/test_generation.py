"""kit.generation on the tiny Gemma-2 with the demo adapter: banned strings, stop reasons, cleaning."""
import pytest
from conftest import ROOT

from kit.generation import Sampling, banned_sequences, clean_answer, generate_batch
from kit.models import load_for_generation
from kit.tasks import load_tasks

TASKS = ROOT / "data" / "sample_tasks.jsonl"


@pytest.fixture(scope="module")
def loaded(tiny_gemma2, tiny_adapter):
    return load_for_generation(str(tiny_gemma2), str(tiny_adapter))


def test_banned_strings_never_generated(loaded):
    model, tokenizer = loaded
    sampling = Sampling(max_new_tokens=24, repetition_penalty=1.1)
    prompts = ["### 質問:\n" + t["input"] + "\n\n### 回答:\n" for t in load_tasks(TASKS)]
    free = [g.text for g in generate_batch(model, tokenizer, prompts, sampling)]
    # ban what this model likes to say most: the commonest character it produced unbanned
    favourite = max({c for t in free for c in t if not c.isspace() and c != "\ufffd"},
                    key=lambda c: sum(t.count(c) for t in free))
    banned = [favourite, "###"]
    bad_words = banned_sequences(tokenizer, banned)
    texts = [g.text for g in generate_batch(model, tokenizer, prompts, sampling, bad_words)]
    assert sum(t.count(favourite) for t in free) > 5
    assert not any(word in text for text in texts for word in banned)


def test_cut_after_keeps_the_text_after_the_marker():
    assert clean_answer("思考...<|response|> 答えです。\n### 質問: 次", ["\n### 質問"],
                        ["### 回答"], "<|response|>") == "答えです。"
    assert clean_answer("  答え ### 回答 \n", [], ["### 回答"], None) == "答え"


