"""judge.py and kit.judging: the hf judge on the tiny Gemma-2, the openai judge against a scripted
OpenAI-compatible server on 127.0.0.1 (the real `openai` client talks to it), compare and agree."""
import csv
import json

import pytest
from conftest import ROOT

import judge
from kit.io import KitError, write_jsonl
from kit.judging import parse_grade, quadratic_weighted_kappa, rule_flags
from kit.tasks import load_tasks
from kit.testing.stub_openai import StubJudgeServer

DEV = ROOT / "data" / "dev_tasks.jsonl"
KEY = "sk-judge-secret-for-tests-987"


def write_answers(path, answers):
    tasks = load_tasks(DEV)
    write_jsonl(path, [{"task_id": t["task_id"], "input": t["input"], "output": a}
                       for t, a in zip(tasks, answers)])
    return path


def scripted_answers():
    """Answer i carries the marker G<grade> the stub grades it by."""
    return [f"{t['output']} G{1 + i % 5}" for i, t in enumerate(load_tasks(DEV))]


def grade_from_marker(prompt):
    answer = prompt.split("# 回答")[-1]
    return int(answer.split(" G")[-1][0])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- hf backend ----------------------------------------------------------------------------

def test_hf_logprob_scores_rerun_and_cache(tiny_gemma2, tmp_path):
    answers = write_answers(tmp_path / "output.jsonl", [t["output"] for t in load_tasks(DEV)][:9] + [""])
    argv = ["--answers", str(answers), "--tasks", str(DEV), "--judge_backend", "hf",
            "--judge_model", str(tiny_gemma2), "--cache_dir", str(tmp_path / "cache")]
    first = judge.main(argv)
    rows = read_jsonl(tmp_path / "scores.jsonl")
    assert len(rows) == 10 and first["n"] == 10 and first["judge_calls"] > 0
    for row in rows[:9]:
        assert 1 <= row["score"] <= 5 and row["attempts"] == 1
        assert abs(sum(row["distribution"].values()) - 1) < 1e-4
        assert row["score"] == pytest.approx(sum(int(d) * p for d, p in row["distribution"].items()),
                                             abs=1e-4)
    assert rows[9]["score"] == 1.0 and rows[9]["flags"] == {"empty": True}  # no judge call for it
    second = judge.main(argv)
    assert second["judge_calls"] == 0  # every judgment came from the cache: no model was loaded
    assert [r["score"] for r in read_jsonl(tmp_path / "scores.jsonl")] == [r["score"] for r in rows]
    assert second["score"] == first["score"] and second["ci95"] == first["ci95"]
    saved = json.loads((tmp_path / "score.json").read_text(encoding="utf-8"))
    assert saved["prompt"] == "judge_elyza" and len(saved["prompt_hash"]) == 12
    assert sum(saved["histogram"].values()) == 10 and saved["judge_mode"] == "logprob"


def test_hf_digit_mode_records_parse_failures(tiny_gemma2, tmp_path):
    answers = write_answers(tmp_path / "output.jsonl", [t["output"] for t in load_tasks(DEV)][:2])
    summary = judge.main(["--answers", str(answers), "--tasks", str(DEV), "--judge_model", str(tiny_gemma2),
                          "--judge_mode", "digit", "--max_retries", "1", "--judge_max_new_tokens", "4",
                          "--cache_dir", str(tmp_path / "cache")])
    rows = read_jsonl(tmp_path / "scores.jsonl")
    for row in rows:  # a random tiny model rarely writes a digit: failed or graded, never invented
        assert (row["score"] is None and row["error"] and row["attempts"] == 2) or row["score"] in range(1, 6)
    assert summary["n"] + summary["n_failed"] == 2 and summary["n_unanswered"] == 8


# ---- openai backend ------------------------------------------------------------------------

def test_openai_backend_retries_and_never_leaks_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    answers = scripted_answers()
    answers[1] += " F429"
    answers[2] += " F500"
    answers[3] += " FMAL"
    answers[4] += " FTIME"
    path = write_answers(tmp_path / "output.jsonl", answers)
    faults = {"F429": ["429"], "F500": ["500"], "FMAL": ["malformed"], "FTIME": ["timeout"]}
    with StubJudgeServer(grade_from_marker, faults=faults, timeout_s=1.5, retry_after="0.3") as server:
        summary = judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai",
                              "--base_url", server.url, "--judge_model", "stub-judge", "--judge_mode",
                              "digit", "--workers", "4", "--judge_timeout", "0.8", "--backoff_s", "0.01",
                              "--cache_dir", str(tmp_path / "cache")])
    rows = {r["task_id"]: r for r in read_jsonl(tmp_path / "scores.jsonl")}
    assert [rows[i]["grade"] for i in range(10)] == [1 + i % 5 for i in range(10)]
    assert [rows[i]["attempts"] for i in range(10)] == [1, 2, 2, 2, 2, 1, 1, 1, 1, 1]
    assert summary["n_failed"] == 0 and summary["score"] == pytest.approx(3.0)
    tasks = load_tasks(DEV)
    for request in server.requests:
        body = request["body"]
        assert request["path"] == "/v1/chat/completions" and request["authorization"] == f"Bearer {KEY}"
        assert body["model"] == "stub-judge" and body["temperature"] == 0 and not body.get("logprobs")
        prompt = body["messages"][0]["content"]
        task = next(t for t in tasks if t["input"] in prompt)
        assert task["output"] in prompt and task["eval_aspect"] in prompt and "5段階" in prompt
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(encoding="utf-8", errors="ignore"), path


def test_openai_logprob_mode_asks_for_logprobs_and_falls_back(tmp_path):
    path = write_answers(tmp_path / "output.jsonl", scripted_answers()[:3])
    with StubJudgeServer(grade_from_marker) as server:
        summary = judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai",
                              "--base_url", server.url, "--judge_model", "stub",
                              "--cache_dir", str(tmp_path / "cache")])
    assert all(r["body"]["logprobs"] is True and r["body"]["top_logprobs"] == 20 for r in server.requests)
    rows = read_jsonl(tmp_path / "scores.jsonl")
    # the stub puts 70% on the grade and 15% on each neighbour
    assert rows[0]["score"] == pytest.approx((1 * 0.7 + 2 * 0.15) / 0.85, abs=1e-4)
    assert rows[1]["score"] == pytest.approx(2.0, abs=1e-4) and summary["judge_mode"] == "logprob"
    with StubJudgeServer(grade_from_marker, logprobs=False) as server:
        judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai", "--base_url",
                    server.url, "--judge_model", "stub", "--cache_dir", str(tmp_path / "cache2")])
    rows = read_jsonl(tmp_path / "scores.jsonl")
    assert [r["grade"] for r in rows] == [1, 2, 3] and all(r["logprob_fallback"] for r in rows)


def test_openai_client_errors_stop_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    path = write_answers(tmp_path / "output.jsonl", scripted_answers()[:2])
    for status in ("401", "400"):
        with StubJudgeServer(grade_from_marker, faults={"G": [status] * 2}) as server, \
                pytest.raises(KitError, match=f"judge endpoint .* refused the request \\({status}"):
            judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai",
                        "--base_url", server.url, "--judge_model", "stub", "--workers", "1",
                        "--cache_dir", str(tmp_path / "cache")])
        assert len(server.requests) == 1  # not retried
    assert KEY not in capsys.readouterr().err


# ---- refusals and flags --------------------------------------------------------------------

def test_task_file_without_references_is_refused(tmp_path):
    answers = tmp_path / "output.jsonl"
    answers.write_text(json.dumps({"task_id": 0, "input": "肉じゃがをおいしく作るコツを三つ教えてください。",
                                   "output": "x"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(KitError, match="no reference `output`.*never scores the leaderboard"):
        judge.main(["--answers", str(answers), "--tasks", str(ROOT / "data" / "sample_tasks.jsonl"),
                    "--judge_model", "any"])


def test_answer_for_another_input_names_the_line(tmp_path):
    answers = scripted_answers()
    path = write_answers(tmp_path / "output.jsonl", answers)
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    record["input"] = "別の質問"
    lines[2] = json.dumps(record, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(KitError, match=r"output\.jsonl:3: `input` of task 2 differs"):
        judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_model", "any"])


def test_rule_flags_see_what_the_rubric_deducts_for():
    assert rule_flags("") == {"empty": True}
    assert rule_flags("東京です。首都は東京にあります。") == {}
    assert "non_japanese" in rule_flags("The capital of Japan is Tokyo, a very large city in the east.")
    assert "repetition" in rule_flags("同じことを繰り返します。" * 20)
    assert rule_flags("答えです。\n### 質問: 次")["leaked_markers"] == ["### 質問"]
    assert rule_flags("申し訳ありませんが、その質問にはお答えできません。")["refusal"]
    assert rule_flags("途中で切れた回答", {"stop_reason": "length", "new_tokens": 1024})["truncated"] == 1024


def test_parse_grade():
    assert parse_grade("理由: よい。評価: 4", "digit") == 4
    assert parse_grade("10点満点ではなく5段階で3", "digit") == 3
    assert parse_grade("no digit", "digit") is None
    assert parse_grade('{"reason": "正しい", "grade": 5}', "json") == 5
    assert parse_grade('{"reason": "1から5", "grade": 7}', "json") is None


def test_tasks_without_ids_are_numbered_in_file_order(tmp_path):
    tasks = load_tasks(DEV)
    assert [t["task_id"] for t in tasks] == list(range(10))
    assert all(t["output"] and t["eval_aspect"] for t in tasks)
    table = tmp_path / "tasks.csv"
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "output", "eval_aspect"])
        writer.writerows([[t["input"], t["output"], t["eval_aspect"]] for t in tasks])
    assert [(t["task_id"], t["input"]) for t in load_tasks(table)] == [(t["task_id"], t["input"]) for t in tasks]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"input": t["input"], "output": t["output"]} for t in tasks]),
                   tmp_path / "tasks.parquet")
    assert [t["task_id"] for t in load_tasks(tmp_path / "tasks.parquet")] == list(range(10))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(KitError, match="bad.parquet: not a readable parquet file"):
        load_tasks(tmp_path / "bad.parquet")


# ---- compare and agree ---------------------------------------------------------------------

def test_compare_reports_a_known_difference(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    scores_a = [2.0, 3.0, 3.0, 4.0, 2.0, 3.0, 4.0, 3.0, 2.0, 3.0] * 4
    write_jsonl(a / "scores.jsonl", [{"task_id": i, "score": s} for i, s in enumerate(scores_a)])
    write_jsonl(b / "scores.jsonl", [{"task_id": i, "score": s + (1.0 if i % 2 else 0.0)}
                                     for i, s in enumerate(scores_a)])
    result = judge.main(["compare", str(a), str(b / "scores.jsonl")])
    assert result["n"] == 40 and result["difference"] == pytest.approx(0.5)
    assert result["better"] == 20 and result["same"] == 20 and result["worse"] == 0
    assert 0 < result["ci95"][0] < 0.5 < result["ci95"][1] and not result["interval_contains_zero"]
    assert "excludes 0" in capsys.readouterr().out
    write_jsonl(b / "scores.jsonl", [{"task_id": i, "score": s + (0.5 if i % 2 else -0.5)}
                                     for i, s in enumerate(scores_a)])
    result = judge.main(["compare", str(a), str(b)])
    assert result["difference"] == pytest.approx(0.0) and result["interval_contains_zero"]
    assert "contains 0" in capsys.readouterr().out


def write_human_csv(path, models, grades):
    """ELYZA's layout: input, output, eval_aspect, then <model>, eval_<model>, eval_<model>_mean."""
    tasks = load_tasks(DEV)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "output", "eval_aspect"]
                        + [c for m in models for c in (m, f"eval_{m}", f"eval_{m}_mean")])
        for t, row in zip(tasks, grades):
            cells = []
            for model, (judge_grade, human) in zip(models, row):
                cells += [f"{model}の回答 G{judge_grade}", f"[{human}, {human}, {human}]", human]
            writer.writerow([t["input"], t["output"], t["eval_aspect"]] + cells)


def test_agree_on_elyza_layout_with_known_correlations(tmp_path):
    models = ["model-a", "model-b", "model-c"]
    # judge grade == human mean everywhere: perfect agreement
    grades = [[((i + j) % 5 + 1, (i + j) % 5 + 1) for j in range(3)] for i in range(10)]
    write_human_csv(tmp_path / "human.csv", models, grades)
    argv = ["agree", "--human", str(tmp_path / "human.csv"), "--judge_backend", "openai",
            "--judge_model", "stub", "--judge_mode", "digit", "--out", str(tmp_path / "agree.json")]
    with StubJudgeServer(grade_from_marker) as server:
        result = judge.main(argv + ["--base_url", server.url, "--cache_dir", str(tmp_path / "c1")])
    assert result["n"] == 30 and result["spearman"] == 1.0 and result["qwk"] == 1.0
    assert set(result["model_means"]) == set(models)
    assert json.loads((tmp_path / "agree.json").read_text())["qwk"] == 1.0
    # the judge reverses every rating: 6 - human
    grades = [[(6 - ((i + j) % 5 + 1), (i + j) % 5 + 1) for j in range(3)] for i in range(10)]
    write_human_csv(tmp_path / "human.csv", models, grades)
    with StubJudgeServer(grade_from_marker) as server:
        result = judge.main(argv + ["--base_url", server.url, "--cache_dir", str(tmp_path / "c2")])
    assert result["spearman"] == -1.0 and result["qwk"] == -1.0


def test_quadratic_weighted_kappa_known_values():
    assert quadratic_weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == 1.0
    assert quadratic_weighted_kappa([1, 5], [5, 1]) == -1.0
    assert quadratic_weighted_kappa([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7, abs=1e-4)


def test_an_endpoint_that_never_answers_stops_the_run_quickly(tmp_path):
    import socket
    import time

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_answers(tmp_path / "output.jsonl", scripted_answers()[:4])
    start = time.perf_counter()
    with pytest.raises(KitError, match="cannot reach the judge endpoint .*is the server running"):
        judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai", "--base_url",
                    f"http://127.0.0.1:{port}/v1", "--judge_model", "stub", "--backoff_s", "0.01",
                    "--cache_dir", str(tmp_path / "cache")])
    assert time.perf_counter() - start < 30
