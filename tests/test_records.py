import json

import pytest

from selfloop.records import content_id, read_jsonl, write_json, write_jsonl


def test_content_id_is_stable_and_content_sensitive():
    a = content_id("countdown", "2 3>5:", "2+3=5")
    assert a == content_id("countdown", "2 3>5:", "2+3=5")
    assert a != content_id("countdown", "2 3>5:", "3+2=5")
    assert a == "4d85d9425311be107c1b"  # same on every machine: a hash of canonical JSON


def test_jsonl_round_trip_and_no_temp_files_left(tmp_path):
    rows = [{"id": "x", "text": "é\u2028"}, {"id": "y"}]
    write_jsonl(tmp_path / "a.jsonl", rows)
    assert read_jsonl(tmp_path / "a.jsonl") == rows
    write_json(tmp_path / "b.json", {"k": 1})
    assert json.loads((tmp_path / "b.json").read_text()) == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.json"]


def test_truncated_line_is_reported_with_its_place(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON line"):
        read_jsonl(tmp_path / "bad.jsonl")
