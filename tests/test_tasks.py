"""kit.tasks: the task loader and the output.jsonl validator."""
import json

import pytest
from conftest import ROOT

from kit.io import KitError
from kit.tasks import load_tasks, validate_output

TASKS = str(ROOT / "data" / "sample_tasks.jsonl")


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


def test_csv_cells_with_crlf_equal_the_jsonl_and_errors_name_a_records_first_line(tmp_path):
    """ELYZA's CSV: quoted multi-line cells; a spreadsheet may save CRLF (or a lone CR) inside them."""
    rows = [("一行目\r\n二行目", "答え\r三行目"), ("単一行", "答え")]
    text = "input,output\r\n" + "".join(f'"{i}","{o}"\r\n' for i, o in rows)
    (tmp_path / "tasks.csv").write_bytes(text.encode("utf-8"))
    tasks = load_tasks(tmp_path / "tasks.csv")
    assert [t["input"] for t in tasks] == ["一行目\n二行目", "単一行"] and tasks[0]["output"] == "答え\n三行目"
    assert [t["line"] for t in tasks] == [2, 5]  # where each record starts (CR, LF or CRLF end a line)
    (tmp_path / "bad.csv").write_bytes(b'input,output\r\n"a","b"\r\n"c"x,"d"\r\n')
    with pytest.raises(KitError, match=r"bad\.csv:3: not valid CSV"):
        load_tasks(tmp_path / "bad.csv")


def test_a_mistyped_task_path_is_no_such_file_not_a_hub_name(tmp_path):
    for name in ("data/dev_taks.jsonl", str(tmp_path / "tasks.jsonl"), "my_tasks.csv"):
        with pytest.raises(KitError, match="no such file"):
            load_tasks(name)


def test_a_line_separator_inside_an_input_is_text(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"task_id": 0, "input": "前\u2028後\u0085終"}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    assert load_tasks(path)[0]["input"] == "前\u2028後\u0085終"
    out = tmp_path / "output.jsonl"
    out.write_text(json.dumps({"task_id": 0, "input": "前\u2028後\u0085終", "output": "答え"},
                              ensure_ascii=False) + "\n", encoding="utf-8")
    assert validate_output(path, out) == []
    out.write_text(json.dumps({"task_id": 0, "input": "前\n後\u0085終", "output": "答え"},
                              ensure_ascii=False) + "\n", encoding="utf-8")
    assert any('at character 1: "前\\n後' in p for p in validate_output(path, out))
