"""infer.py end to end on the tiny Gemma-2 with a LoRA adapter from train.py."""
import json
import shutil

import pytest

import common
import infer
import train
from common import KitError
from submission import load_tasks, validate_output

ROOT = infer.Path(infer.__file__).parent
TASKS = str(ROOT / "data" / "sample_tasks.jsonl")
REFERENCE = str(ROOT / "data" / "sample_reference_qa.jsonl")


@pytest.fixture(scope="module")
def adapter(tiny_gemma2, tmp_path_factory):
    """The demo recipe's adapter: trained enough for the tiny model to answer in text."""
    results = tmp_path_factory.mktemp("runs")
    metrics = train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path",
                          str(tiny_gemma2), "--data_files", REFERENCE, "--results_dir", str(results),
                          "--report_to", "none"])
    return results / metrics["run"] / "adapter"


def infer_args(model, adapter, out, *extra):
    return ["--model", str(model), "--adapter", str(adapter), "--tasks", TASKS, "--reference",
            REFERENCE, "--k", "3", "--max_new_tokens", "24", "--output", str(out),
            "--results_dir", str(out.parent / "results"), *extra]


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("retriever", ["bm25", "colbert"])
def test_end_to_end_output_passes_validator(tiny_gemma2, adapter, tiny_colbert, tmp_path, retriever):
    out = tmp_path / "output.jsonl"
    extra = ["--retriever", retriever] + (["--retriever_model", str(tiny_colbert)]
                                          if retriever == "colbert" else [])
    metrics = infer.main(infer_args(tiny_gemma2, adapter, out, *extra, "--csv", str(tmp_path / "o.csv")))
    rows = read(out)
    tasks = load_tasks(TASKS)
    assert [r["task_id"] for r in rows] == [t["task_id"] for t in tasks]
    assert [r["input"] for r in rows] == [t["input"] for t in tasks]
    assert all(r["output"].strip() for r in rows)
    assert validate_output(TASKS, out) == []
    assert "\\u" not in out.read_text(encoding="utf-8")  # real Japanese, not escapes
    assert metrics["tokens_per_s"] > 0 and metrics["projected_100_tasks_s"] > 0
    saved = json.loads((tmp_path / "results" / adapter.parent.name / "infer_metrics.json").read_text())
    assert len(saved["task_latency_s"]) == len(tasks) and "projection_assumption" in saved
    assert (tmp_path / "o.csv").read_text(encoding="utf-8").startswith("task_id,input,output")


def test_batched_greedy_equals_sequential(tiny_gemma2, adapter, tmp_path):
    batched, single = tmp_path / "b.jsonl", tmp_path / "s.jsonl"
    infer.main(infer_args(tiny_gemma2, adapter, batched, "--batch_size", "8"))
    infer.main(infer_args(tiny_gemma2, adapter, single, "--batch_size", "1"))
    assert read(batched) == read(single)


def test_banned_strings_never_generated(tiny_gemma2, adapter, tmp_path):
    args = infer.parse_args(infer_args(tiny_gemma2, adapter, tmp_path / "o.jsonl"))
    model, tokenizer = infer.load_for_inference(args, "hf")
    prompts = ["### 質問:\n" + t["input"] + "\n\n### 回答:\n" for t in load_tasks(TASKS)]
    free, _ = infer.generate_batch(model, tokenizer, prompts, args, [], [])
    # ban what this model likes to say most: the commonest character it produced unbanned
    favourite = max({c for t in free for c in t if not c.isspace() and c != "\ufffd"},
                    key=lambda c: sum(t.count(c) for t in free))
    banned = [favourite, "###"]
    bad_words = infer.banned_sequences(tokenizer, banned)
    texts, _ = infer.generate_batch(model, tokenizer, prompts, args, bad_words, [])
    assert sum(t.count(favourite) for t in free) > 5
    assert not any(word in text for text in texts for word in banned)


def test_resume_after_interruption_gives_the_same_file(tiny_gemma2, adapter, tmp_path, monkeypatch):
    straight = tmp_path / "straight.jsonl"
    infer.main(infer_args(tiny_gemma2, adapter, straight, "--batch_size", "3"))
    out = tmp_path / "output.jsonl"
    real, calls = infer.generate_batch, []

    def killed_after_first_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies during the second batch
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "generate_batch", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        infer.main(infer_args(tiny_gemma2, adapter, out, "--batch_size", "3"))
    partial = read(out)  # the file on disk is whole JSONL with the first batch only
    assert len(partial) == 3 and not list(tmp_path.glob(".output.jsonl*"))
    monkeypatch.setattr(infer, "generate_batch", real)
    metrics = infer.main(infer_args(tiny_gemma2, adapter, out, "--batch_size", "3", "--resume"))
    assert metrics["generated"] == 5
    assert out.read_bytes() == straight.read_bytes()


def test_dry_run_writes_prompts_without_loading_a_model(tiny_gemma2, adapter, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "load_model", lambda *a, **k: pytest.fail("model was loaded"))
    run_config = adapter.parent / "config.yaml"
    copy = tmp_path / "run"
    shutil.copytree(adapter.parent, copy, ignore=shutil.ignore_patterns("checkpoints"))
    config = run_config.read_text(encoding="utf-8").replace("template: alpaca_ja", "template: gemma_chat")
    (copy / "config.yaml").write_text(config, encoding="utf-8")
    result = infer.main(infer_args(tiny_gemma2, copy / "adapter", tmp_path / "o.jsonl", "--dry_run"))
    prompts = read(infer.Path(result["prompts"]))
    assert len(prompts) == 8 and not (tmp_path / "o.jsonl").exists()
    first = prompts[0]["prompt"]  # the adapter's template, the task last, 3 examples before it
    assert first.count("<start_of_turn>user") == 4
    assert first.endswith("肉じゃがをおいしく作るコツを三つ教えてください。<end_of_turn>\n<start_of_turn>model\n")
    # most similar last: the cooking reference closest to 肉じゃが sits right before the task
    last_example = first.split("<start_of_turn>user\n")[-2]
    assert any(word in last_example for word in ("料理", "作る", "コツ", "炊く", "焼き", "揚げる"))


def test_examples_dropped_to_fit_the_context(tiny_gemma2, adapter, tmp_path):
    result = infer.main(infer_args(tiny_gemma2, adapter, tmp_path / "o.jsonl", "--dry_run",
                                   "--k", "10", "--context_length", "700", "--max_new_tokens", "200"))
    assert result["examples_dropped_to_fit"] > 0 and result["tasks_with_examples_dropped"] > 0
    prompts = read(infer.Path(result["prompts"]))
    assert all(p["prompt_tokens"] <= 500 for p in prompts)
    with pytest.raises(KitError, match=r"sample_tasks\.jsonl:1: task 0 does not fit"):
        infer.main(infer_args(tiny_gemma2, adapter, tmp_path / "o.jsonl", "--dry_run",
                              "--context_length", "60", "--max_new_tokens", "40"))


def test_cut_after_keeps_the_text_after_the_marker():
    assert infer.clean_answer("思考...<|response|> 答えです。\n### 質問: 次", ["\n### 質問"],
                              ["### 回答"], "<|response|>") == "答えです。"
    assert infer.clean_answer("  答え ### 回答 \n", [], ["### 回答"], None) == "答え"


# ---- task loader -------------------------------------------------------------------------

def test_task_loader_accepts_broken_records_bom_and_blank_lines(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(
        "\ufeff{\"task_id\": 0, \"input\": \"一行目\"}\n\n"
        "{\"task_id\": 1,\n \"input\": \"複数行に\n分かれた入力 }\"\n}\n"
        "{\"task_id\": \"x-2\", \"input\": \"文字列のID\"}\n".encode("utf-8"))
    tasks = load_tasks(path)
    assert [(t["task_id"], t["input"], t["line"]) for t in tasks] == [
        (0, "一行目", 1), (1, "複数行に\n分かれた入力 }", 3), ("x-2", "文字列のID", 7)]


@pytest.mark.parametrize("content,message", [
    ('{"task_id": 0, "input": "a"}\n{"task_id": 0, "input": "b"}\n', r":2: duplicate task_id 0 \(first at line 1\)"),
    ('{"task_id": 0, "input": "a"}\n{"task_id": 1}\n', r":2: task record needs a string `input`"),
    ('{"task_id": 0, "input": "a"}\n{"task_id": 1, "input": "b"\n', r":2: record "),
    ('\n\n', "no tasks"),
])
def test_task_loader_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "tasks.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(KitError, match=r"tasks\.jsonl" + message if message.startswith(":") else message):
        load_tasks(path)


# ---- validator ---------------------------------------------------------------------------

def good_output(tmp_path):
    lines = [json.dumps({"task_id": t["task_id"], "input": t["input"], "output": "答えです。"},
                        ensure_ascii=False) for t in load_tasks(TASKS)]
    return lines


def u(text):
    return text.encode("utf-8")


@pytest.mark.parametrize("plant,message", [
    (lambda L: L[:2] + [b"{not json"] + L[3:], ":3: not valid JSON"),
    (lambda L: L[:2] + [b"\xff\xfe{}"] + L[3:], ":3: not valid UTF-8"),
    (lambda L: L + [L[0]], ":9: task_id 0 again (first at line 1)"),
    (lambda L: L[:7], "task_id 7 (task file line 8) has no output"),
    (lambda L: [L[0].replace(u("肉じゃが"), u("カレー"))] + L[1:], ":1: `input` differs"),
    (lambda L: [L[0].replace(u("答えです。"), b"")] + L[1:], ":1: `output` must be a non-empty string"),
    (lambda L: [L[0].replace(u("答えです。"), u("答え\\n### 回答:\\n"))] + L[1:],
     ":1: output leaks prompt markers"),
    (lambda L: [L[0].replace(b'"task_id": 0', b'"task_id": 99')] + L[1:], ":1: task_id 99 is not in"),
])
def test_each_validator_rule_catches_its_defect(tmp_path, plant, message):
    lines = [u(line) for line in good_output(tmp_path)]
    out = tmp_path / "output.jsonl"
    out.write_bytes(b"\n".join(lines) + b"\n")
    assert validate_output(TASKS, out) == []
    out.write_bytes(b"\n".join(plant(lines)) + b"\n")
    problems = validate_output(TASKS, out)
    assert any(message in p for p in problems), problems


def test_validate_subcommand_exit_status(tmp_path, capsys):
    out = tmp_path / "output.jsonl"
    out.write_text("\n".join(good_output(tmp_path)[:7]) + "\n", encoding="utf-8")
    with pytest.raises(KitError, match="1 problem"):
        infer.main(["validate", "--tasks", TASKS, "--output", str(out)])
    assert "has no output" in capsys.readouterr().out


def test_bad_adapter_and_template_fail_before_loading(tiny_gemma2, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "load_model", lambda *a, **k: pytest.fail("model was loaded"))
    with pytest.raises(KitError, match="no adapter_config.json"):
        infer.main(infer_args(tiny_gemma2, tmp_path, tmp_path / "o.jsonl"))
    with pytest.raises(KitError, match="unknown prompt template"):
        infer.main(infer_args(tiny_gemma2, tmp_path, tmp_path / "o.jsonl", "--template", "nope"))
