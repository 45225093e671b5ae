import json
import subprocess
import sys

import pytest
import yaml

import filter_data
from kit.testing.filter_oracle import make_corpus, reference_filter, write_corpus

ROOT = filter_data.Path(filter_data.__file__).parent
SHIPPED = yaml.safe_load((ROOT / "configs" / "filter_ja.yaml").read_text(encoding="utf-8"))


def read_output(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_filter(tmp_path, records, *flags, name="corpus"):
    source = write_corpus(tmp_path / f"{name}.jsonl", records)
    output = tmp_path / f"{name}.out.jsonl"
    report = filter_data.main(["--input", str(source), "--output", str(output), *flags])
    return read_output(output), report


@pytest.mark.parametrize("seed,rare,second", [(0, 19, 9), (1, 3, 2), (2, None, None)])
def test_fast_path_equals_reference(tmp_path, seed, rare, second):
    records = make_corpus(1500, seed=seed, target_chars=120, plant_rate=0.3)
    flags = ["--rare_char_max_count", str(-1 if rare is None else rare),
             "--second_pass_rare_char_max_count", str(-1 if second is None else second)]
    kept, report = run_filter(tmp_path, records, *flags)
    config = dict(SHIPPED, rare_char_max_count=rare, second_pass_rare_char_max_count=second)
    expected = reference_filter(json.loads(json.dumps(records)), config)
    assert kept == expected
    dropped = report["dropped_by_reason"]
    # the planted contaminations really were caught, by more than one rule
    assert dropped["ng_word"] > 20 and dropped["language"] > 5
    assert report["records_out"] == len(expected)
    assert report["records_in"] == sum(dropped.values()) + len(expected)


def test_parallel_equals_serial(tmp_path, monkeypatch):
    records = make_corpus(3000, seed=5, target_chars=80, plant_rate=0.2)
    serial, _ = run_filter(tmp_path, records, "--workers", "1", name="serial")
    monkeypatch.setattr(filter_data, "PARALLEL_MIN_RECORDS", 100)
    monkeypatch.setattr(filter_data, "CHUNK_RECORDS", 250)
    parallel, report = run_filter(tmp_path, records, "--workers", "2", name="parallel")
    assert parallel == serial and len(serial) > 1000


def test_rules_one_by_one(tmp_path):
    good = "今日はとても良い天気なので、公園まで散歩に出かけて、ゆっくりと休みました。"
    records = [
        {"conversations": [{"role": "user", "content": good}, {"role": "assistant", "content": good}]},
        {"instruction": "アイシテルと言われました。" + good, "response": good + "♪"},
        {"instruction": good, "response": good + "这"},
        {"input": good + "質問の形です。", "output": good},
        {"instruction": "Please answer in English, this is an English question.", "response": good},
        {"instruction": good, "response": good + "\x00\ufffe"},
        {"conversations": [{"role": "user", "content": good}]},
        {"conversations": [{"role": "user", "content": good}, {"role": "assistant", "content": good}]},
        {"unrelated": 1},
    ]
    kept, report = run_filter(tmp_path, records, "--rare_char_max_count", "-1",
                              "--second_pass_rare_char_max_count", "-1",
                              "--instruction_ng_words", "質問", "--dedup")
    assert kept == [
        {"instruction": good, "response": good},
        {"instruction": "愛してると言われました。" + good, "response": good},
        {"instruction": good, "response": good + "\x00\ufffe"},  # stored text keeps the controls
    ]
    dropped = report["dropped_by_reason"]
    assert (dropped["ng_word"], dropped["instruction_ng_word"], dropped["language"],
            dropped["empty"], dropped["duplicate"]) == (1, 1, 1, 1, 1)
    assert report["records_without_text"] == 1


def test_rare_characters_and_report(tmp_path):
    common = "日本の四季はそれぞれに美しい景色があります。"
    records = [{"instruction": common, "response": common * 3} for _ in range(30)]
    records[7]["response"] += "鬱"  # seen once in the whole input
    kept, report = run_filter(tmp_path, records, "--rare_char_max_count", "1",
                              "--second_pass_rare_char_max_count", "-1")
    assert len(kept) == 29 and report["dropped_by_reason"]["rare_char"] == 1
    assert report["top_dropped_characters"][0] == ["鬱", 1] or report["top_dropped_characters"][0] == ("鬱", 1)
    on_disk = json.loads((tmp_path / "corpus.out.jsonl.report.json").read_text(encoding="utf-8"))
    assert on_disk["records_out"] == 29 and on_disk["records_per_s"] > 0


def test_length_bounds(tmp_path):
    short = {"instruction": "日本の首都はどこですか。", "response": "東京です。"}
    long = {"instruction": "日本の首都はどこですか。", "response": "日本の首都は東京です。" * 3}
    kept, report = run_filter(tmp_path, [short, long], "--rare_char_max_count", "-1",
                              "--second_pass_rare_char_max_count", "-1", "--min_chars", "8")
    assert kept == [long] and report["dropped_by_reason"]["length"] == 1


def test_extra_files_bypass_or_join(tmp_path):
    good = "料理をするときは、火加減に気をつけて、材料をていねいに切ることが大切です。"
    extra = tmp_path / "qa.jsonl"
    extra.write_text(json.dumps({"input": "你好", "output": good}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    base = [{"instruction": good, "response": good}]
    flags = ["--rare_char_max_count", "-1", "--second_pass_rare_char_max_count", "-1",
             "--extra", str(extra)]
    kept, _ = run_filter(tmp_path, base, *flags)
    assert kept[-1] == {"instruction": "你好", "response": good}
    kept, _ = run_filter(tmp_path, base, *flags, "--filter_extra", name="joined")
    assert kept == base


def test_bad_line_names_file_and_line(tmp_path, capsys):
    good = json.dumps({"instruction": "日本語の質問です。", "response": "日本語の回答です。"},
                      ensure_ascii=False)
    source = tmp_path / "bad.jsonl"
    source.write_text(f"{good}\n\n{good}\n{{broken\n{good}\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    with pytest.raises(filter_data.KitError, match=r"bad\.jsonl:4: not valid JSON"):
        filter_data.main(["--input", str(source), "--output", str(output)])
    assert not output.exists() and not list(tmp_path.glob(".out.jsonl*"))
    report = filter_data.main(["--input", str(source), "--output", str(output), "--skip_bad_lines",
                               "--rare_char_max_count", "-1", "--second_pass_rare_char_max_count", "-1"])
    assert report["bad_lines"] == 1 and len(read_output(output)) == 3


def test_empty_input_and_unknown_key_fail_cleanly(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(ROOT / "filter_data.py"), "--input", str(empty),
                             "--output", str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert result.returncode == 2 and "no usable records" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o.jsonl").exists()
    config = tmp_path / "bad.yaml"
    config.write_text("ng_word: [x]\n", encoding="utf-8")
    with pytest.raises(filter_data.KitError, match=r"unknown key\(s\): ng_word \(did you mean ng_words\)"):
        filter_data.main(["--input", str(empty), "--output", str(tmp_path / "o.jsonl"),
                          "--config", str(config)])


def test_json_and_parquet_inputs(tmp_path):
    import pandas

    records = make_corpus(200, seed=3, target_chars=60)
    expected, _ = run_filter(tmp_path, records, "--rare_char_max_count", "2")
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps(records, ensure_ascii=False).encode("utf-8", "backslashreplace")
                       .decode("utf-8"), encoding="utf-8")
    out = tmp_path / "j.jsonl"
    filter_data.main(["--input", str(as_json), "--output", str(out), "--rare_char_max_count", "2"])
    assert read_output(out) == expected
    clean = [r for r in records if "\ud800" not in json.dumps(r, ensure_ascii=False)]
    expected_clean, _ = run_filter(tmp_path, clean, "--rare_char_max_count", "2", name="clean")
    pandas.DataFrame({"conversations": [r.get("conversations") or [
        {"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]
        for r in clean]}).to_parquet(tmp_path / "c.parquet")
    filter_data.main(["--input", str(tmp_path / "c.parquet"), "--output", str(out),
                      "--rare_char_max_count", "2"])
    assert read_output(out) == expected_clean


def test_help_is_instant_and_imports_no_torch():
    code = ("import sys, runpy; sys.argv=['filter_data.py','--help'];\n"
            "try: runpy.run_path('filter_data.py', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--rare_char_max_count" in result.stdout


def test_config_value_of_the_wrong_type_is_a_clear_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("rare_char_max_count: many\n", encoding="utf-8")
    with pytest.raises(filter_data.KitError, match="`rare_char_max_count` must be an integer"):
        filter_data.main(["--input", "x.jsonl", "--output", str(tmp_path / "o"), "--config", str(config)])
