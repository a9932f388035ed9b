from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tg_data.io import DataError
from tg_eval.mmbench import MMBenchQuestion, mmbench_predictions, read_mmbench, rotated, score_mmbench
from tg_eval.mme import MmeQuestion, mme_predictions, mme_yes_no, read_mme, score_mme


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Yes", "yes"),
        (" no ", "no"),
        ("No, it is not.", "no"),
        ("Yes, there is.", "yes"),
        ("Not really", "no"),  # "no" within the first four characters
        ("The answer is yes", "other"),  # MME only looks at the first four characters
        ("Maybe", "other"),
    ],
)
def test_mme_yes_no(answer: str, label: str) -> None:
    assert mme_yes_no(answer) == label


def _q(cat: str, image: str, question: str, answer: str) -> MmeQuestion:
    return MmeQuestion(None, cat, image, question, answer)


def test_mme_acc_acc_plus_and_totals() -> None:
    questions = [
        _q("existence", "existence/1.jpg", "Is there a dog in this image? Please answer yes or no.", "yes"),
        _q("existence", "existence/1.jpg", "Is there a cat in this image? Please answer yes or no.", "no"),
        _q("existence", "existence/2.jpg", "Is there a car in this image? Please answer yes or no.", "yes"),
        _q("existence", "existence/2.jpg", "Is there a bus in this image? Please answer yes or no.", "no"),
        _q("code_reasoning", "code_reasoning/1.png", "Is the output 3? Please answer yes or no.", "yes"),
        _q("code_reasoning", "code_reasoning/1.png", "Is the output 4? Please answer yes or no.", "no"),
    ]
    suffix = "\nAnswer the question using a single word or phrase."
    # LLaVA-style answers: two per image, told apart by their prompt (which carries a suffix).
    preds = mme_predictions([
        {"question_id": q.image, "prompt": q.question + suffix, "text": t}
        for q, t in zip(questions, ["Yes", "No", "Yes", "Yes", "Yes", "Maybe"], strict=True)
    ], "answers.jsonl")
    result = score_mme(questions, preds)
    # existence: 3 of 4 answers right -> acc 75; image 1 both right, image 2 not -> acc+ 1/2 = 50;
    #   score 75 + 50 = 125.
    assert result.rows["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0, "n": 4}
    # code_reasoning: "Maybe" is "other", wrong -> acc 1/2 = 50, acc+ 0 -> score 50.
    assert result.rows["code_reasoning"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0, "n": 2}
    # Perception sums its present sub-tasks (existence only here); cognition likewise.
    assert result.summary == {"perception": 125.0, "cognition": 50.0}
    assert result.counts["other_answers"] == 1
    assert any("1 of 10" in n for n in result.notes)


def test_mme_reads_hf_style_records_and_needs_the_prompt(tmp_path: Path, write_jsonl) -> None:
    truth = write_jsonl(tmp_path / "mme.jsonl", [
        {"question_id": "color/1.jpg", "question": "Is it red? Please answer yes or no.", "answer": "Yes", "category": "color"},
        {"question_id": "color/1.jpg", "question": "Is it blue? Please answer yes or no.", "answer": "No", "category": "color"},
    ])
    questions = read_mme(truth)
    assert [q.answer for q in questions] == ["yes", "no"]
    with pytest.raises(DataError, match="needs 'question_id' and 'prompt'"):
        mme_predictions([{"question_id": "color/1.jpg", "text": "Yes"}], "answers.jsonl")
    # Ground truth with unique ids can be answered by id.
    with_ids = [MmeQuestion(f"q{n}", q.category, q.image, q.question, q.answer) for n, q in enumerate(questions)]
    result = score_mme(with_ids, mme_predictions([{"id": "q0", "text": "Yes"}, {"id": "q1", "text": "Yes"}], "a"))
    assert result.rows["color"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0, "n": 2}


def test_mmbench_rotation_convention() -> None:
    q = MMBenchQuestion(0, ["cat", "dog", "bird", "fish"], "B")
    # Pass r shows the options rotated left by r; "dog" moves from B to A, then D, then C.
    assert rotated(q, 0) == (["cat", "dog", "bird", "fish"], "B")
    assert rotated(q, 1) == (["dog", "bird", "fish", "cat"], "A")
    assert rotated(q, 2) == (["bird", "fish", "cat", "dog"], "D")
    assert rotated(q, 3) == (["fish", "cat", "dog", "bird"], "C")


def test_mmbench_circular_evaluation_with_round_ids() -> None:
    questions = [
        MMBenchQuestion(0, ["cat", "dog", "bird", "fish"], "B", "AR"),
        MMBenchQuestion(1, ["yes", "no"], "A", "AR"),
        MMBenchQuestion(2, ["red", "green", "blue"], "C", "LR"),
    ]
    records = [
        # q0: right in all four passes (B, A, D, C as worked out above) -> circular hit
        {"question_id": 0, "round_id": 0, "text": "B"},
        {"question_id": 0, "round_id": 1, "text": "A"},
        {"question_id": 0, "round_id": 2, "text": "D. dog"},
        {"question_id": 0, "round_id": 3, "text": "C"},
        # q1: pass 0 right (A = yes); pass 1 shows [no, yes], right is B, answered A -> circular miss
        {"question_id": 1, "round_id": 0, "text": "A"},
        {"question_id": 1, "round_id": 1, "text": "A"},
        # q2: pass 0 [red, green, blue] "blue" = C; pass 1 [green, blue, red] right B;
        #     pass 2 [blue, red, green] right A -> circular hit
        {"question_id": 2, "round_id": 0, "text": "blue"},
        {"question_id": 2, "round_id": 1, "text": "The answer is B."},
        {"question_id": 2, "round_id": 2, "text": "(A)"},
    ]
    result = score_mmbench(questions, mmbench_predictions(records, "preds"))
    # circular: q0, q2 of 3 = 66.67 %; single pass (round 0): all 3 = 100 %.
    # AR: circular 1 of 2 = 50 %; LR: 1 of 1 = 100 %.
    assert result.rows["overall"] == {"circular_acc": 66.67, "single_acc": 100.0, "n": 3}
    assert result.rows["AR"]["circular_acc"] == 50.0
    assert result.rows["LR"]["circular_acc"] == 100.0
    assert result.summary == {"acc": 66.67}
    # Dropping a pass makes the question a miss and is counted.
    result = score_mmbench(questions, mmbench_predictions(records[:-1], "preds"))
    assert result.rows["overall"]["circular_acc"] == 33.33
    assert result.counts["missing"] == 1


def test_mmbench_tsv_with_circular_copies(tmp_path: Path) -> None:
    rows = [
        # base question 5 and its copy 1000005 with the options swapped
        {"index": 5, "question": "Which?", "A": "cat", "B": "dog", "C": "", "D": "", "answer": "B", "category": "x", "l2-category": "FP-S"},
        {"index": 1000005, "question": "Which?", "A": "dog", "B": "cat", "C": "", "D": "", "answer": "A", "category": "x", "l2-category": "FP-S"},
        {"index": 6, "question": "Which?", "A": "up", "B": "down", "C": "", "D": "", "answer": "A", "category": "y", "l2-category": "LR"},
        {"index": 1000006, "question": "Which?", "A": "down", "B": "up", "C": "", "D": "", "answer": "B", "category": "y", "l2-category": "LR"},
    ]
    path = tmp_path / "mmbench_dev.tsv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    questions = read_mmbench(path)
    assert questions[0].options == ["cat", "dog"]  # empty C/D columns are not options
    preds = mmbench_predictions([
        {"question_id": 5, "text": "B"}, {"question_id": 1000005, "text": "dog"},  # both right -> hit
        {"question_id": 6, "text": "A"}, {"question_id": 1000006, "text": "A"},  # copy wrong -> miss
    ], "preds")
    result = score_mmbench(questions, preds)
    assert result.rows["overall"] == {"circular_acc": 50.0, "single_acc": 100.0, "n": 2}
    assert result.rows["FP-S"]["circular_acc"] == 100.0 and result.rows["LR"]["circular_acc"] == 0.0


def test_mmbench_without_passes_reports_single_pass_only() -> None:
    questions = [MMBenchQuestion(0, ["a", "b"], "A"), MMBenchQuestion(1, ["a", "b"], "B")]
    result = score_mmbench(questions, mmbench_predictions([{"question_id": 0, "text": "A"}, {"question_id": 1, "text": "A"}], "p"))
    assert result.rows["overall"] == {"single_acc": 50.0, "n": 2}
    assert any("CircularEval" in n for n in result.notes)


def test_mme_from_parquet_leaves_the_images_on_disk(tmp_path: Path) -> None:
    import polars as pl

    path = tmp_path / "mme.parquet"
    pl.DataFrame({
        "question_id": ["OCR/1.jpg", "OCR/1.jpg"],
        "question": ["Is the word 'cat'? Please answer yes or no.", "Is the word 'dog'? Please answer yes or no."],
        "answer": ["Yes", "No"],
        "category": ["OCR", "OCR"],
        "image": [{"bytes": b"\x89PNG" * 1000, "path": None}] * 2,
    }).write_parquet(path)
    questions = read_mme(path)
    assert [(q.image, q.answer) for q in questions] == [("OCR/1.jpg", "yes"), ("OCR/1.jpg", "no")]
    from tg_eval.mme import COLUMNS
    from tg_eval.records import read_records

    rows = read_records(path, "MME", columns=COLUMNS)
    assert set(rows[0]) == {"question_id", "question", "answer", "category"}  # no image bytes read
