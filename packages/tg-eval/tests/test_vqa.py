from __future__ import annotations

import json
from pathlib import Path

import pytest

from tg_eval.gqa import normalize_gqa, read_gqa_questions, score_gqa
from tg_eval.predictions import PredictionSet
from tg_eval.vqa_normalize import normalize_answer, vqa_accuracy
from tg_eval.vqav2 import VqaQuestion, read_vqa_annotations, score_vqav2


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("The dog.", "dog"),  # articles and a final period go
        ("an apple", "apple"),
        ("yes!", "yes"),
        ("dont", "don't"),  # contractions get their apostrophe
        ("isnt it", "isn't it"),
        ("1,000", "1000"),  # a comma between digits: every punctuation mark is deleted
        ("hot-dog", "hot dog"),  # otherwise a mark with no space beside it becomes a space
        ("red, white", "red white"),  # ...and one with a space beside it is deleted
        ("3.5", "3.5"),  # a period before a digit stays
        ("Left\tside\n", "left side"),
    ],
)
def test_official_answer_normalisation(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


def test_ten_annotator_accuracy() -> None:
    # With m of the 10 annotators giving the predicted answer, each leave-one-out subset of 9
    # scores min(matches/3, 1), and the accuracy is the mean of the 10 subsets:
    # m = 1: leaving out the matching one gives 0, the other 9 subsets give 1/3 -> 9*(1/3)/10 = 0.3
    # m = 2: 2 subsets have 1 match (1/3), 8 have 2 (2/3) -> (2/3 + 16/3)/10 = 0.6
    # m = 3: 3 subsets have 2 matches (2/3), 7 have 3 (1) -> (2 + 7)/10 = 0.9
    # m = 4: every subset has at least 3 matches -> 1.0
    for m, expected in ((0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)):
        gts = ["red"] * m + ["blue"] * (10 - m)
        assert vqa_accuracy("Red.", gts) == pytest.approx(expected)


def test_ground_truth_gets_punctuation_only_when_annotators_disagree() -> None:
    # Parity with the official script: unanimous answers are compared as written, so "hot-dog"
    # (which the prediction's normalisation turns into "hot dog") never matches; once annotators
    # disagree, the ground truth goes through the punctuation step and "hot-dog" -> "hot dog" does.
    assert vqa_accuracy("hot-dog", ["hot-dog"] * 10) == 0.0
    assert vqa_accuracy("hot-dog", ["hot-dog"] * 9 + ["sausage"]) == 1.0


def test_score_vqav2_per_answer_type_and_missing(tmp_path: Path) -> None:
    ann = {
        "annotations": [
            {"question_id": 1, "answer_type": "yes/no", "answers": [{"answer": "yes", "answer_id": i} for i in range(10)]},
            {"question_id": 2, "answer_type": "number", "answers": [{"answer": a} for a in ["2"] * 2 + ["3"] * 8]},
            {"question_id": 3, "answer_type": "other", "answers": ["red"] * 10},
        ]
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    questions = read_vqa_annotations(path)
    assert questions[1] == VqaQuestion("2", ["2"] * 2 + ["3"] * 8, "number")
    preds = PredictionSet.from_records([{"question_id": 1, "answer": "Yes"}, {"question_id": 2, "answer": "two"}])
    result = score_vqav2(questions, preds)
    # q1: 1.0; q2: "two" -> "2", matched by 2 annotators -> 0.6; q3: missing -> 0.
    # overall (1.0 + 0.6 + 0) / 3 = 53.33 %
    assert result.rows["yes/no"]["acc"] == 100.0
    assert result.rows["number"]["acc"] == 60.0
    assert result.rows["other"]["acc"] == 0.0
    assert result.rows["overall"] == {"acc": 53.33, "n": 3}
    assert result.counts["missing"] == 1


def test_gqa_exact_match_after_normalisation(tmp_path: Path) -> None:
    assert normalize_gqa("  Yes. ") == "yes"
    assert normalize_gqa("Left  Side") == "left side"
    questions = {
        "q1": {"answer": "yes", "types": {"structural": "verify"}},
        "q2": {"answer": "left", "types": {"structural": "query"}},
        "q3": {"answer": "table", "types": {"structural": "query"}},
        "q4": {"answer": "no", "types": {"structural": "verify"}},
    }
    path = tmp_path / "testdev_balanced_questions.json"
    path.write_text(json.dumps(questions))
    preds = PredictionSet.from_records([
        {"question_id": "q1", "text": "Yes."},  # right
        {"question_id": "q2", "text": "Left"},  # right
        {"question_id": "q3", "text": "the table"},  # exact match: "the table" != "table", wrong
        {"question_id": "q4", "text": "yes"},  # wrong
    ])
    result = score_gqa(read_gqa_questions(path), preds)
    # query: 1 of 2 = 50 %; verify: 1 of 2 = 50 %; overall 2 of 4 = 50 %.
    assert result.rows == {"query": {"acc": 50.0, "n": 2}, "verify": {"acc": 50.0, "n": 2}, "overall": {"acc": 50.0, "n": 4}}
