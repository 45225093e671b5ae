import json

import pytest

from kit.io import KitError, atomic_open, iter_jsonl, pair_from_record, write_json, write_jsonl


def test_iter_jsonl_bom_blank_lines_and_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \n{"a": 2}\n{"a": \n')
    with pytest.raises(KitError, match=r"x\.jsonl:5: not valid JSON"):
        list(iter_jsonl(path))
    bad = []
    assert list(iter_jsonl(path, skip_bad_lines=True, bad_lines=bad)) == [(1, {"a": 1}), (4, {"a": 2})]
    assert bad[0][0] == 5


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"text": "日本語"}])
    assert target.read_text(encoding="utf-8") == '{"text": "日本語"}\n'  # no \u escapes
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("partial")
        raise RuntimeError("crash mid-write")
    assert target.read_text(encoding="utf-8") == '{"text": "日本語"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_lone_surrogate_round_trips(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", [{"text": "a\ud800b"}])
    assert json.loads((tmp_path / "s.jsonl").read_text(encoding="utf-8"))["text"] == "a\ud800b"
    # the filter's report lists dropped characters, surrogates among them
    write_json(tmp_path / "report.json", {"top_dropped_characters": [["\ud800", 15]]})
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["top_dropped_characters"] == [["\ud800", 15]]


def test_pair_from_record_shapes():
    magpie = {"conversations": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}]}
    assert pair_from_record(magpie) == ("q", "a")
    assert pair_from_record({"conversations": [{"role": "user", "content": "q"}]}) == ("q", "")
    assert pair_from_record({"input": "q", "output": "a"}) == ("q", "a")
    assert pair_from_record({"instruction": "q", "response": "a"}) == ("q", "a")
    assert pair_from_record({"text": "x"}) is None and pair_from_record([1]) is None


def test_a_full_disk_or_a_read_only_folder_is_one_line(capsys):
    import errno

    from kit.io import run_main

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/out.jsonl")

    def torch_save_on_a_full_disk(argv):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 123 vs 456")

    def read_only(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/read-only/out.jsonl")

    for main, text in ((full, "no space left on the device (/tmp/out.jsonl)"),
                       (torch_save_on_a_full_disk, "no space left on the device"),
                       (read_only, "cannot write (/read-only/out.jsonl): Permission denied")):
        with pytest.raises(SystemExit) as exit_info:
            run_main(main, [])
        assert exit_info.value.code == 2 and text in capsys.readouterr().err
