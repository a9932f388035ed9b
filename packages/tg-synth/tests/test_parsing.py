from __future__ import annotations

import pytest

from tg_synth.parsing import (
    OutputError,
    parse_json_object,
    validate_converse,
    validate_describe,
    validate_recognize,
    validate_refer,
    validate_relate,
)


def test_strict_json_accepts_an_object_and_a_single_fence() -> None:
    assert parse_json_object('{"objects": ["a"]}') == {"objects": ["a"]}
    assert parse_json_object('```json\n{"objects": ["a"]}\n```') == {"objects": ["a"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ('{"objects": ["red ca', "truncated JSON"),
        ('{"objects": ["a",, "b"]}', "malformed JSON"),
        ("Sure! The objects are a car and a dog.", "not JSON"),
        ('Here you go: {"objects": []}', "not JSON"),
        ('["a", "b"]', "expected a JSON object, got a JSON list"),
    ],
)
def test_strict_json_refuses_everything_else(content: str, message: str) -> None:
    with pytest.raises(OutputError, match=message):
        parse_json_object(content)


def test_recognize_cleans_dedupes_and_counts_what_it_drops() -> None:
    out = validate_recognize({"objects": ["Red car.", "red  car", "", "dog", "a b c d e f g", "cat"]}, max_objects=2)
    assert out["objects"] == ["red car", "dog"]
    assert out["dropped"] == {"recognize.duplicate_name": 1, "recognize.empty_name": 1,
                              "recognize.name_too_long": 1, "recognize.beyond_max_objects": 1}
    with pytest.raises(OutputError, match="missing field 'objects'"):
        validate_recognize({"items": []}, 5)
    with pytest.raises(OutputError, match=r"objects\[1\] must be a string"):
        validate_recognize({"objects": ["a", 3]}, 5)


def test_relate_drops_and_counts_triples_about_unknown_objects() -> None:
    raw = {"relations": [
        {"subject": 1, "relation": "Left of", "object": 2},
        {"subject": "2", "relation": "right of", "object": 1},
        {"subject": 1, "relation": "left of", "object": 2},
        {"subject": 1, "relation": "above", "object": 9},
        {"subject": 2, "relation": "near", "object": 2},
    ]}
    out = validate_relate(raw, ids={1, 2})
    assert out["relations"] == [{"subject": 1, "relation": "left of", "object": 2},
                                {"subject": 2, "relation": "right of", "object": 1}]
    assert out["dropped"] == {"relate.duplicate": 1, "relate.unknown_object": 1, "relate.self_relation": 1}
    with pytest.raises(OutputError, match=r"relations\[0\] is missing 'object'"):
        validate_relate({"relations": [{"subject": 1, "relation": "above"}]}, {1, 2})
    with pytest.raises(OutputError, match="must be an integer id"):
        validate_relate({"relations": [{"subject": "first", "relation": "above", "object": 2}]}, {1, 2})


def test_refer_keeps_expressions_without_coordinates() -> None:
    raw = {"expressions": [
        {"id": 1, "expression": "the red car."},
        {"id": 2, "expression": "the dog at [0.1,0.2,0.3,0.4]"},
        {"id": 3, "expression": "the cat"},
    ]}
    out = validate_refer(raw, ids={1, 2})
    assert out["expressions"] == {"1": "the red car"}
    assert out["dropped"] == {"refer.has_coordinates": 1, "refer.unknown_object": 1}


def test_converse_needs_known_marks_and_no_raw_coordinates() -> None:
    ok = validate_converse({"turns": [{"question": "Where is the car?", "answer": "The car {1} is left of the dog {2}."}]},
                           ids={1, 2}, max_rounds=3)
    assert ok["turns"][0]["answer"] == "The car {1} is left of the dog {2}."
    with pytest.raises(OutputError, match=r"marks unknown object id\(s\) \[7\]"):
        validate_converse({"turns": [{"question": "q?", "answer": "The car {7}."}]}, {1, 2}, 3)
    with pytest.raises(OutputError, match="contains coordinates"):
        validate_converse({"turns": [{"question": "q?", "answer": "The car [0.1,0.2,0.3,0.4] {1}."}]}, {1}, 3)
    with pytest.raises(OutputError, match="marks no object"):
        validate_converse({"turns": [{"question": "q?", "answer": "A car."}]}, {1}, 3)
    with pytest.raises(OutputError, match="turns is empty"):
        validate_converse({"turns": []}, {1}, 3)
    many = {"turns": [{"question": f"q{k}?", "answer": "The car {1}."} for k in range(5)]}
    assert len(validate_converse(many, {1}, max_rounds=2)["turns"]) == 2


def test_describe_needs_at_least_one_mark() -> None:
    assert validate_describe({"description": "A car {1}  parks."}, {1}) == {"description": "A car {1} parks."}
    with pytest.raises(OutputError, match="marks no object"):
        validate_describe({"description": "A car parks."}, {1})
    with pytest.raises(OutputError, match="field 'description' must be a string"):
        validate_describe({"description": ["A car {1}"]}, {1})
