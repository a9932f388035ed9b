from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tg_eval.pope import PopeLabel, PopeQuestion, read_pope_labels, read_pope_questions, score_pope, yes_no
from tg_eval.predictions import PredictionSet, read_predictions
from tg_eval.questions import LLAVA_SHORT_ANSWER, POPE_SPELLING_FIXES

SUFFIX = LLAVA_SHORT_ANSWER


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("no.", "no"),
        ("No, there is no dog.", "no"),
        ("There is not a dog in the image.", "no"),
        ("Yes. No other animals are visible.", "yes"),  # only the first sentence counts
        ("no, there isn't", "no"),  # commas are dropped before splitting into words
        ("No\nThere is none", "no"),  # any whitespace separates words
        ("NO", "yes"),  # the rule looks for "No", "not", "no" exactly, as LLaVA's does
        ("Nope", "yes"),
        ("", "yes"),
    ],
)
def test_yes_no_rule(answer: str, expected: str) -> None:
    assert yes_no(answer) == expected


def _hand_made() -> tuple[list[PopeQuestion], list[PopeLabel], PredictionSet]:
    labels = [
        PopeLabel("random", "a.jpg", "Is there a dog in the image?", "yes"),
        PopeLabel("random", "a.jpg", "Is there a cat in the image?", "no"),
        PopeLabel("random", "b.jpg", "Is there a car in the image?", "yes"),
        PopeLabel("random", "b.jpg", "Is there a bus in the image?", "no"),
        PopeLabel("random", "b.jpg", "Is there a tree in the image?", "no"),
        PopeLabel("random", "c.jpg", "Is there a cup in the image?", "yes"),
        PopeLabel("random", "c.jpg", "Is there a bird in the image?", "no"),
        PopeLabel("popular", "a.jpg", "Is there a dog in the image?", "yes"),
        PopeLabel("popular", "a.jpg", "Is there a person in the image?", "no"),
    ]
    answers = {
        "dog": "Yes, there is a dog.",  # label yes, said yes: TP
        "cat": "No.",  # no/no: TN
        "car": "There is not a car.",  # yes/no: FN
        "bus": "Yes",  # no/yes: FP
        "tree": "I see no tree. Yes there might be.",  # first sentence has "no": TN
        "cup": "Yes.",  # TP
        "bird": "Yes, a bird.",  # FP
        "p-dog": "Yes",  # TP
        "p-person": "No",  # TN
    }
    # The question file numbers questions its own way and in its own order, with the prompt suffix.
    qs = [
        PopeQuestion("17", "random", "c.jpg", "Is there a bird in the image?" + SUFFIX),
        PopeQuestion("3", "random", "a.jpg", "Is there a dog in the image?" + SUFFIX),
        PopeQuestion("9", "popular", "a.jpg", "Is there a person in the image?" + SUFFIX),
        PopeQuestion("4", "random", "a.jpg", "is there a  cat in the image?" + SUFFIX),  # case and spacing differ
        PopeQuestion("8", "popular", "a.jpg", "Is there a dog in the image?" + SUFFIX),
        PopeQuestion("11", "random", "b.jpg", "Is there a car in the image?" + SUFFIX),
        PopeQuestion("12", "random", "b.jpg", "Is there a bus in the image?" + SUFFIX),
        PopeQuestion("13", "random", "b.jpg", "Is there a tree in the image?" + SUFFIX),
        PopeQuestion("16", "random", "c.jpg", "Is there a cup in the image?" + SUFFIX),
    ]
    ids = {"17": "bird", "3": "dog", "9": "p-person", "4": "cat", "8": "p-dog", "11": "car", "12": "bus", "13": "tree", "16": "cup"}
    preds = PredictionSet.from_records([{"question_id": int(q), "text": answers[k]} for q, k in ids.items()])
    return qs, labels, preds


def test_pope_metrics_on_a_hand_made_case() -> None:
    qs, labels, preds = _hand_made()
    result = score_pope(qs, labels, preds)
    # random: TP = dog, cup (2); FN = car (1); FP = bus, bird (2); TN = cat, tree (2); n = 7.
    #   acc = (2+2)/7 = 57.14; precision = 2/(2+2) = 50.00; recall = 2/(2+1) = 66.67;
    #   F1 = 2*0.5*0.6667/(0.5+0.6667) = 0.5714 -> 57.14; yes-ratio = (TP+FP)/n = 4/7 = 57.14.
    assert result.rows["random"] == {
        "acc": 57.14, "precision": 50.0, "recall": 66.67, "f1": 57.14, "yes_ratio": 57.14,
        "tp": 2, "fp": 2, "tn": 2, "fn": 1, "n": 7,
    }  # fmt: skip
    # popular: TP = 1, TN = 1: acc = precision = recall = F1 = 100, yes-ratio = 1/2 = 50.
    assert result.rows["popular"]["acc"] == 100.0 and result.rows["popular"]["yes_ratio"] == 50.0
    # mean of the two categories: acc (57.143+100)/2 = 78.57; precision (50+100)/2 = 75.00;
    # recall (66.667+100)/2 = 83.33; F1 (57.143+100)/2 = 78.57; yes-ratio (57.143+50)/2 = 53.57.
    assert result.rows["mean"] == {"acc": 78.57, "precision": 75.0, "recall": 83.33, "f1": 78.57, "yes_ratio": 53.57}
    assert result.counts["matched"] == 9 and result.counts["unanswered"] == 0


def test_pope_counts_everything_that_does_not_join() -> None:
    qs, labels, preds = _hand_made()
    qs = [q for q in qs if q.id != "13"]  # the tree question is never asked
    qs.append(PopeQuestion("20", "random", "z.jpg", "Is there a yak in the image?"))  # no label for it
    records = [{"question_id": k, "text": p.text} for k, p in preds.by_id.items() if k != "16"]  # cup unanswered
    records += [{"question_id": 99, "text": "Yes"}, {"question_id": 3, "text": "No"}]  # unknown id; repeat of 3
    result = score_pope(qs, labels, PredictionSet.from_records(records))
    random_counts = result.details["categories"]["random"]
    assert random_counts["labels_not_asked"] == 1  # tree
    assert random_counts["questions_without_label"] == 1  # yak
    assert random_counts["unanswered"] == 1  # cup
    assert random_counts["matched"] == 5  # 7 labels - tree - cup
    assert result.counts["unknown_answers"] == 2  # 99, and 13 whose question was removed
    assert result.counts["duplicate_answers"] == 1
    # The first answer to question 3 ("Yes, there is a dog.") is the one scored: still a TP.
    assert result.rows["random"]["tp"] == 1  # dog; cup is unanswered
    assert any("not in the question file" in n for n in result.notes)


def test_pope_never_joins_by_position() -> None:
    qs, labels, preds = _hand_made()
    shuffled_labels = labels[:]
    random.Random(0).shuffle(shuffled_labels)
    shuffled_questions = qs[::-1]
    a = score_pope(qs, labels, preds)
    b = score_pope(shuffled_questions, shuffled_labels, preds)
    assert a.rows == b.rows


# --- the real POPE files --------------------------------------------------------------------------
# LLaVA-1.5's question file was built from an older POPE release than the label files:
#   - every question about an object whose name takes "an" (apple, airplane, elephant, orange, oven,
#     umbrella) says "in the imange?": 144 random + 44 popular + 58 adversarial = 246 questions;
#   - the random category has 2910 questions, not 3000: 90 labelled questions (all "no") on 84
#     images are not asked, and three images ask theirs in another order.
# Ids differ too: the question file uses 1-3000 (adversarial), 10000001-10002910 (random) and
# 20000001-20003000 (popular), the label files 1-3000 each.


def _fixture_answers(pope_dir: Path, tmp_path: Path, write_jsonl) -> tuple[Path, dict[str, str]]:
    """Answers derived from the labels through an independent join; every 7th question flipped."""
    questions = [json.loads(line) for line in (pope_dir / "llava_pope_test.jsonl").read_text().splitlines()]
    truth: dict[tuple[str, str, str], str] = {}
    for cat in ("random", "popular", "adversarial"):
        for line in (pope_dir / f"coco_pope_{cat}.json").read_text().splitlines():
            rec = json.loads(line)
            truth[(cat, rec["image"], rec["text"])] = rec["label"]
    expected: dict[str, str] = {}
    answers = []
    for n, q in enumerate(questions):
        text = q["text"].removesuffix(SUFFIX).replace("imange", "image")
        label = truth[(q["category"], q["image"], text)]
        said = label if n % 7 else ("no" if label == "yes" else "yes")
        answers.append({"question_id": q["question_id"], "text": "Yes, there is." if said == "yes" else "No, there is not."})
        expected[str(q["question_id"])] = f"{q['category']}:{label}:{said}"
    random.Random(1).shuffle(answers)  # order carries no meaning
    return write_jsonl(tmp_path / "answers.jsonl", answers), expected


def test_pope_on_the_shared_fixtures(shared_fixtures: Path, tmp_path: Path, write_jsonl) -> None:
    pope_dir = shared_fixtures / "pope"
    answers_path, expected = _fixture_answers(pope_dir, tmp_path, write_jsonl)
    questions = read_pope_questions(pope_dir / "llava_pope_test.jsonl")
    labels = read_pope_labels(pope_dir)
    result = score_pope(questions, labels, read_predictions(answers_path))

    per = result.details["categories"]
    assert {c: per[c]["labels"] for c in per} == {"random": 3000, "popular": 3000, "adversarial": 3000}
    assert {c: per[c]["questions"] for c in per} == {"random": 2910, "popular": 3000, "adversarial": 3000}
    assert {c: per[c]["matched"] for c in per} == {"random": 2910, "popular": 3000, "adversarial": 3000}
    assert {c: per[c]["matched_by_fix"] for c in per} == {"random": 144, "popular": 44, "adversarial": 58}
    assert {c: per[c]["labels_not_asked"] for c in per} == {"random": 90, "popular": 0, "adversarial": 0}
    assert result.counts["questions_without_label"] == 0 and result.counts["unanswered"] == 0

    # The confusion counts follow from the independently joined truth.
    for cat in ("random", "popular", "adversarial"):
        tally = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        for v in expected.values():
            c, label, said = v.split(":")
            if c == cat:
                tally[("t" if label == said else "f") + ("p" if said == "yes" else "n")] += 1
        assert {k: result.rows[cat][k] for k in tally} == tally
        n = sum(tally.values())
        assert result.rows[cat]["acc"] == round(100 * (tally["tp"] + tally["tn"]) / n, 2)
    # random is 1500 yes + 1410 no (the 90 missing questions are all "no").
    assert result.rows["random"]["tp"] + result.rows["random"]["fn"] == 1500


def test_pope_fixtures_with_exact_text_leave_the_misspelt_questions_unmatched(shared_fixtures: Path, tmp_path: Path, write_jsonl) -> None:
    pope_dir = shared_fixtures / "pope"
    answers_path, _ = _fixture_answers(pope_dir, tmp_path, write_jsonl)
    result = score_pope(read_pope_questions(pope_dir / "llava_pope_test.jsonl"), read_pope_labels(pope_dir),
                        read_predictions(answers_path), fixes=None)
    per = result.details["categories"]
    assert {c: per[c]["questions_without_label"] for c in per} == {"random": 144, "popular": 44, "adversarial": 58}
    assert {c: per[c]["labels_not_asked"] for c in per} == {"random": 234, "popular": 44, "adversarial": 58}
    assert result.counts["matched"] == 8910 - 246


def test_spelling_fix_is_word_level() -> None:
    from tg_eval.questions import question_key

    assert question_key("Is there an apple in the imange?", fixes=POPE_SPELLING_FIXES).text == "is there an apple in the image?"
    assert question_key("imangery", fixes=POPE_SPELLING_FIXES).fixed is False
