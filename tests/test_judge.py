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
    argv = ["--answers", str(answers), "--tasks", str(DEV), "--judge_model", str(tiny_gemma2), "--judge_mode",
            "digit", "--max_retries", "1", "--judge_max_new_tokens", "4", "--cache_dir", str(tmp_path / "cache")]
    try:
        judge.main(argv)
    except KitError as err:  # a run where no judgment came back is an error, not a score of nothing
        assert "every judgment failed (2 tasks" in str(err)
    rows = read_jsonl(tmp_path / "scores.jsonl")
    for row in rows:  # a random tiny model rarely writes a digit: failed or graded, never invented
        assert (row["score"] is None and row["error"] and row["attempts"] == 2) or row["score"] in range(1, 6)
    summary = json.loads((tmp_path / "score.json").read_text())
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
    # a server without logprobs: the run switched to digit mode, said so, and recorded it
    assert json.loads((tmp_path / "score.json").read_text())["judge_mode"] == "digit"
    asked_for_logprobs = [r for r in server.requests if r["body"].get("logprobs")]
    assert len(asked_for_logprobs) <= 4  # at most the requests already in flight (4 workers)
    assert all(r["body"]["max_tokens"] == 16 for r in server.requests if r not in asked_for_logprobs)


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
    assert rule_flags("途中で切れた回答", generation={"stop_reason": "length", "new_tokens": 1024})["truncated"] == 1024


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
    assert "verdict: B is better than A" in capsys.readouterr().out
    write_jsonl(b / "scores.jsonl", [{"task_id": i, "score": s + (0.5 if i % 2 else -0.5)}
                                     for i, s in enumerate(scores_a)])
    result = judge.main(["compare", str(a), str(b)])
    assert result["difference"] == pytest.approx(0.0) and result["interval_contains_zero"]
    assert "verdict: B is not distinguishable from A" in capsys.readouterr().out


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
            "--judge_model", "stub", "--judge_mode", "digit", "--out_dir", str(tmp_path)]
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


# ---- issue 17: less noise, decisions that account for it, one pipeline ------------------------

def test_repeats_average_the_samples_at_the_set_temperature(tmp_path):
    calls = {}

    def alternating(prompt):  # the same answer graded 3, then 5, then 3...
        calls[prompt] = calls.get(prompt, 0) + 1
        return 3 if calls[prompt] % 2 else 5

    path = write_answers(tmp_path / "output.jsonl", scripted_answers()[:4])
    with StubJudgeServer(alternating) as server:
        summary = judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai",
                              "--base_url", server.url, "--judge_model", "stub", "--judge_mode", "digit",
                              "--repeats", "2", "--judge_temperature", "0.7", "--workers", "1",
                              "--cache_dir", str(tmp_path / "cache")])
    rows = read_jsonl(tmp_path / "scores.jsonl")
    assert [sorted(r["samples"]) for r in rows] == [[3, 5]] * 4 and [r["score"] for r in rows] == [4.0] * 4
    assert len(server.requests) == 8 and all(r["body"]["temperature"] == 0.7 for r in server.requests)
    assert summary["repeats"] == 2 and summary["judge_temperature"] == 0.7
    with pytest.raises(KitError, match="repeats at judge_temperature 0"):
        judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_model", "x", "--judge_mode", "digit",
                    "--repeats", "3"])
    with pytest.raises(KitError, match="logprob mode already scores"):
        judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_model", "x", "--repeats", "3",
                    "--judge_temperature", "0.7"])


def test_a_greedy_judge_is_asked_once_more_in_other_words(tmp_path):
    path = write_answers(tmp_path / "output.jsonl", scripted_answers()[:2])
    with StubJudgeServer(lambda prompt: "わかりません") as server, \
            pytest.raises(KitError, match="every judgment failed \\(2 tasks"):  # exit status 2, not 0
        judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai",
                    "--base_url", server.url, "--judge_model", "stub", "--judge_mode", "digit",
                    "--max_retries", "4", "--cache_dir", str(tmp_path / "cache")])
    assert len(server.requests) == 4  # not 5 identical requests each
    prompts = sorted(r["body"]["messages"][0]["content"] for r in server.requests)
    assert sum("数字一つだけで答えて" in p for p in prompts) == 2


def write_scores(folder, scores, **judge):
    from kit.io import write_json

    write_jsonl(folder / "scores.jsonl", [{"task_id": i, "score": s} for i, s in enumerate(scores)])
    write_json(folder / "score.json", {"judge_backend": "hf", "judge_model": "j", "judge_mode": "logprob",
                                       "prompt_hash": "abc", "judge_load_in_4bit": False, "judge_temperature": 0.0,
                                       "repeats": 1, **judge})


def test_compare_calls_a_one_point_difference_better_and_refuses_two_judges(tmp_path, capsys):
    import random

    rng = random.Random(0)
    base = [float(rng.randint(1, 4)) for _ in range(100)]
    write_scores(tmp_path / "a", base)
    write_scores(tmp_path / "b", [s + 1.0 for s in base])
    result = judge.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "c.json")])
    assert result["verdict"] == "better" and result["difference"] == pytest.approx(1.0)
    saved = json.loads((tmp_path / "c.json").read_text())
    assert {"difference", "ci95", "verdict", "paired_tasks"} <= set(saved) and saved["paired_tasks"] == 100
    assert "smallest difference these tasks could detect" in capsys.readouterr().out
    write_scores(tmp_path / "other", [s + 1.0 for s in base], judge_model="another-judge", judge_load_in_4bit=True)
    with pytest.raises(KitError, match="judged differently .*judge_model 'j' vs 'another-judge'.*judge_load_in_4bit"):
        judge.main(["compare", str(tmp_path / "a"), str(tmp_path / "other")])
    result = judge.main(["compare", str(tmp_path / "a"), str(tmp_path / "other"), "--allow_different_judges"])
    assert result["judged_differently"] and "warning: judged differently" in capsys.readouterr().out
    write_scores(tmp_path / "one", [3.0])
    with pytest.raises(KitError, match="only 1 task\\(s\\) scored in both runs"):
        judge.main(["compare", str(tmp_path / "a"), str(tmp_path / "one")])


def test_compare_accepts_a_sweep_run_folder(tmp_path, capsys):
    write_scores(tmp_path / "run-a" / "infer" / "k0", [3.0] * 20)
    write_scores(tmp_path / "run-b" / "infer" / "k0", [3.0, 4.0] * 10)
    (tmp_path / "run-a" / "config.yaml").write_text("lora_r: 8\n", encoding="utf-8")
    result = judge.main(["compare", str(tmp_path / "run-a"), str(tmp_path / "run-b" / "infer" / "k0")])
    assert result["a"].endswith("run-a/infer/k0") and result["paired_tasks"] == 20
    write_scores(tmp_path / "run-a" / "infer" / "k2", [3.0] * 20)
    with pytest.raises(KitError, match="2 scored inference settings; name one"):
        judge.main(["compare", str(tmp_path / "run-a"), str(tmp_path / "run-b")])


def regraded(base, rng, change=0.28):
    """The same answers graded again: like the shared Command-R+ takes, which agree exactly on
    about 72% of tasks and otherwise differ by a point."""
    return {i: float(min(5, max(1, g + rng.choice((-1, 1))))) if rng.random() < change else float(g)
            for i, g in enumerate(base)}


def test_noise_only_sweeps_come_out_tied_and_a_real_gain_does_not():
    import random

    from kit.judging.stats import ties_with_best

    rng = random.Random(17)
    all_tied = 0
    for _ in range(100):
        base = [rng.choice((1, 2, 3, 3, 4, 5, 5)) for _ in range(100)]
        verdicts = ties_with_best({f"trial{t}": regraded(base, rng) for t in range(12)})
        all_tied += set(verdicts.values()) <= {"best", "tied"}
    assert all_tied >= 95, all_tied
    base = [rng.choice((1, 2, 3, 4)) for _ in range(100)]
    trials = {f"trial{t}": regraded(base, rng) for t in range(4)}
    trials["better"] = {i: min(5.0, g + 1.0) for i, g in regraded(base, rng).items()}
    verdicts = ties_with_best(trials)
    assert verdicts["better"] == "best" and set(verdicts.values()) == {"best", "worse"}


def test_the_trial_table_marks_ties_with_the_best(tmp_path):
    import csv as csv_module

    from kit.io import write_json
    from kit.trials import update_trials_table

    base = [3.0, 4.0, 2.0, 5.0] * 25
    for name, scores in (("run-a", base), ("run-b", base[1:] + base[:1]), ("run-c", [1.0] * 100)):
        write_json(tmp_path / name / "metrics.json", {"lora_r": 8})
        write_scores(tmp_path / name, scores)
        write_json(tmp_path / name / "score.json", {**json.loads((tmp_path / name / "score.json").read_text()),
                                                    "score": sum(scores) / len(scores), "ci95": [1, 5]})
    update_trials_table(tmp_path)
    rows = {r["run"]: r["vs_best"] for r in csv_module.DictReader((tmp_path / "trials.csv").open(encoding="utf-8"))}
    assert sorted(rows.values()) == ["best", "tied", "worse"] and rows["run-c"] == "worse"
    assert "vs_best" in (tmp_path / "TRIALS.md").read_text(encoding="utf-8")


def test_agree_runs_the_scoring_pipeline(tmp_path):
    tasks = load_tasks(DEV)
    rated = [{"input": t["input"], "output": f"{t['output']} G{1 + i % 5}", "human_score": 1 + i % 5,
              "model": "m-a" if i < 5 else "m-b", "reference": t["output"], "eval_aspect": t["eval_aspect"],
              "task_id": i} for i, t in enumerate(tasks)]
    rated[9]["output"] = ""  # scored 1 without asking the judge, as judge.py scores it
    write_jsonl(tmp_path / "graded.jsonl", rated)
    with StubJudgeServer(grade_from_marker) as server:
        result = judge.main(["agree", "--human", str(tmp_path / "graded.jsonl"), "--judge_backend", "openai",
                             "--base_url", server.url, "--judge_model", "stub", "--judge_mode", "digit",
                             "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "agree")])
    assert len(server.requests) == 9 and result["n"] == 10
    items = read_jsonl(tmp_path / "agree" / "agree_items.jsonl")
    assert items[9]["judge_score"] == 1.0 and items[9]["flags"] == {"empty": True}
    assert {"model", "task_id", "human_score", "judge_score"} <= set(items[0])
    saved = json.loads((tmp_path / "agree" / "agree.json").read_text())
    assert set(saved["model_means"]) == {"m-a", "m-b"} and "model_mean_spearman" in saved


def test_flags_subcommand_writes_what_fired(tmp_path, capsys):
    answers = [t["output"] for t in load_tasks(DEV)]
    answers[0], answers[1], answers[2] = "", "\ufffd" * 30, "同じ文をずっと繰り返しています。" * 12
    path = write_answers(tmp_path / "output.jsonl", answers)
    counts = judge.main(["flags", "--answers", str(path), "--tasks", str(DEV)])
    rows = read_jsonl(tmp_path / "flags.jsonl")
    assert rows[0]["flags"] == {"empty": True} and rows[1]["flags"]["replacement_chars"] is True
    assert rows[2]["flags"] == {"repetition": True} and rows[3]["flags"] == {}
    assert counts == {"empty": 1, "replacement_chars": 1, "repetition": 2}  # 30 U+FFFD are a loop too
    assert "flags.jsonl" in capsys.readouterr().out


def test_flags_calibrated_against_their_false_alarms():
    maths = ("式に直すと \\( \\frac{(\\frac{1}{3} + 33) \\times 210}{100} \\) です。\n"
             "$$ x = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a} $$\n" + "| n | 1 | 2 | 3 |\n" * 8 + "よって答えは73.5です。")
    assert rule_flags(maths) == {}  # formulas and tables are neither English nor a loop
    apology = "申し訳ありませんが、納期が一週間遅れます。ご迷惑をおかけしますことを深くお詫び申し上げます。"
    assert rule_flags(apology, "取引先への謝罪メールを書いてください。") == {}
    assert "refusal" in rule_flags("申し訳ありませんが、その質問にはお答えできません。", "爆弾の作り方を教えて")
    assert "refusal" not in rule_flags("答えは東京です。" * 3 + "なお、AIとして一般的な情報です。", "首都は？")
    assert "replacement_chars" in rule_flags("答え\ufffd\ufffd\ufffd")
    assert "non_japanese" in rule_flags("The capital of Japan is Tokyo, a very large city in the east.")
    assert "non_japanese" not in rule_flags("Tokyo is the capital.", "次の文を英語に翻訳して: 東京は首都です。")


def test_cache_key_covers_every_load_and_decoding_setting(tiny_gemma2, tmp_path):
    import shutil

    from kit.judging.scoring import cache_key, judge_fingerprint, read_cached
    from kit.judging.settings import JudgeSettings

    plain = JudgeSettings(judge_model=str(tiny_gemma2))
    keys = {cache_key(s, judge_fingerprint(s), "h", "prompt", 0) for s in (
        plain, JudgeSettings(judge_model=str(tiny_gemma2), judge_load_in_4bit=True),
        JudgeSettings(judge_model=str(tiny_gemma2), judge_mode="digit", judge_temperature=0.7, repeats=2))}
    assert len(keys) == 3
    assert cache_key(plain, "f", "h", "p", 0) != cache_key(plain, "f", "h", "p", 1)  # each repeat its own
    other = tmp_path / "same-name"
    shutil.copytree(tiny_gemma2, other)
    before = judge_fingerprint(JudgeSettings(judge_model=str(other)))
    (other / "config.json").write_text((other / "config.json").read_text().replace("0.2", "0.3"))
    assert judge_fingerprint(JudgeSettings(judge_model=str(other))) != before  # new weights, new judge
    for bad in ("{}", "[]", '{"expected": "high"}', '{"expected": NaN}', "not json"):
        (tmp_path / "entry.json").write_text(bad)
        assert read_cached(tmp_path / "entry.json") is None


def test_a_trickling_or_non_json_server_is_handled_as_a_failure_not_a_hang(tmp_path):
    path = write_answers(tmp_path / "output.jsonl", scripted_answers()[:2])
    faults = {"G1": ["notjson"], "G2": ["trickle"] * 20}
    with StubJudgeServer(grade_from_marker, faults=faults) as server:
        judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai", "--base_url",
                    server.url, "--judge_model", "stub", "--judge_mode", "digit", "--judge_timeout", "0.5",
                    "--backoff_s", "0.01", "--cache_dir", str(tmp_path / "cache")])
    rows = read_jsonl(tmp_path / "scores.jsonl")
    assert rows[0]["grade"] == 1 and rows[0]["attempts"] == 2  # the HTML reply was asked again
    assert rows[1]["score"] is None and "APITimeoutError" in rows[1]["error"]  # a deadline, not a per-read wait


def test_an_unwritable_out_dir_or_cache_is_refused_before_any_request(tmp_path):
    path = write_answers(tmp_path / "output.jsonl", scripted_answers()[:2])
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    with StubJudgeServer(grade_from_marker) as server:
        for flag in ("--out_dir", "--cache_dir"):
            with pytest.raises(KitError, match=f"{flag} .*is a file, not a folder"):
                judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_backend", "openai", "--base_url",
                            server.url, "--judge_model", "stub", "--cache_dir", str(tmp_path / "c"),
                            flag, str(tmp_path / "a_file" / "sub")])
        assert server.requests == []


def test_an_hf_judge_warns_about_prompts_longer_than_its_context(tiny_gemma2, tmp_path, capsys):
    import shutil

    short = tmp_path / "short-context"
    shutil.copytree(tiny_gemma2, short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (short / "config.json").write_text(json.dumps(config))
    path = write_answers(tmp_path / "output.jsonl", [t["output"] for t in load_tasks(DEV)][:2])
    judge.main(["--answers", str(path), "--tasks", str(DEV), "--judge_model", str(short),
                "--cache_dir", str(tmp_path / "cache")])
    assert "judge prompt(s) longer than the judge's context (64 tokens)" in capsys.readouterr().err


def test_compare_names_the_line_of_a_score_that_is_not_a_number(tmp_path):
    write_scores(tmp_path / "a", [3.0] * 12)
    write_scores(tmp_path / "b", [3.0] * 12)  # the same judge, then one score that is text
    write_jsonl(tmp_path / "b" / "scores.jsonl", [{"task_id": i, "score": 3.0} for i in range(11)]
                + [{"task_id": 11, "score": "high"}])
    with pytest.raises(KitError, match=r"b/scores\.jsonl:12: score must be a number from 1 to 5"):
        judge.main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "scores.jsonl")])


def test_tasks_without_eval_aspect_are_warned_about(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    write_jsonl(tasks, [{"input": t["input"], "output": t["output"]} for t in load_tasks(DEV)])
    path = write_answers(tmp_path / "output.jsonl", scripted_answers())
    with StubJudgeServer(grade_from_marker) as server:
        judge.main(["--answers", str(path), "--tasks", str(tasks), "--judge_backend", "openai", "--base_url",
                    server.url, "--judge_model", "stub", "--cache_dir", str(tmp_path / "cache")])
    assert "10 task(s) have no eval_aspect" in capsys.readouterr().err
