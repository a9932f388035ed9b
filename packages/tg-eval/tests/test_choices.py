from __future__ import annotations

import json
from pathlib import Path

import pytest

from tg_eval.options import extract_option
from tg_eval.predictions import PredictionSet
from tg_eval.scienceqa import read_scienceqa, score_scienceqa

OPTIONS = ["a red apple", "a green pear", "a banana", "red"]


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D.", "D"),
        ("A. a red apple", "A"),
        ("C) a banana", "C"),
        ("The answer is B.", "B"),
        ("Answer: (D)", "D"),
        ("a banana", "C"),  # equals one option's text
        ("It is a green pear, clearly.", "B"),  # contains exactly one option's text
        ("I'd say a red apple", "A"),  # "red" is inside "a red apple": the longer option wins
        ("E", None),  # not an option here
        ("A cat is sitting", None),  # a leading "A" without punctuation is an article
        ("a banana or a green pear", None),  # two options named: undecided
        ("I cannot tell", None),
    ],
)
def test_extract_option(answer: str, letter: str | None) -> None:
    assert extract_option(answer, OPTIONS) == letter


def test_scienceqa_img_subset_and_accuracy(tmp_path: Path) -> None:
    problems = {
        "1": {"split": "test", "image": "image.png", "choices": ["cat", "dog"], "answer": 1, "subject": "natural science"},
        "2": {"split": "test", "image": "image.png", "choices": ["x", "y", "z"], "answer": 0, "subject": "language science"},
        "3": {"split": "test", "image": "image.png", "choices": ["up", "down"], "answer": 0, "subject": "natural science"},
        "4": {"split": "test", "image": None, "choices": ["a", "b"], "answer": 0, "subject": "social science"},  # no image
        "5": {"split": "train", "image": "image.png", "choices": ["a", "b"], "answer": 0, "subject": "social science"},
    }
    path = tmp_path / "problems.json"
    path.write_text(json.dumps(problems))
    questions = read_scienceqa(path)
    assert [q.id for q in questions] == ["1", "2", "3"]  # IMG: test split with an image
    preds = PredictionSet.from_records([
        {"question_id": "1", "text": "B"},  # right
        {"question_id": "2", "text": "The answer is A."},  # right
        {"question_id": "3", "text": "Hard to say"},  # no option: wrong, counted
        {"question_id": "4", "text": "A"},  # not in IMG: unmatched
    ])
    result = score_scienceqa(questions, preds)
    # natural science: 1 of 2 = 50 %, language science: 1 of 1 = 100 %, overall: 2 of 3 = 66.67 %
    assert result.rows["natural science"]["acc"] == 50.0
    assert result.rows["language science"]["acc"] == 100.0
    assert result.rows["overall"] == {"acc": 66.67, "n": 3}
    assert result.counts["unparseable"] == 1 and result.counts["unmatched_predictions"] == 1
