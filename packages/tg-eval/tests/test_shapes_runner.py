from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tg_data.coords import parse_box
from tg_data.io import read_parquet
from tg_data.schema import Role
from tg_eval.predictor import GenerationRequest
from tg_eval.runner import run_shapes
from tg_eval.shapes import shapes_requests


class OracleWithMistakes:
    """Answers from the ground truth, except for ids in ``wrong`` (a far-off box / the opposite
    yes-no) and ``garbled`` (no box at all)."""

    def __init__(self, truth: dict[str, str], wrong: set[str], garbled: set[str]) -> None:
        self.truth, self.wrong, self.garbled = truth, wrong, garbled
        self.seen: list[GenerationRequest] = []

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.seen.extend(requests)
        out = []
        for r in requests:
            answer = self.truth[r.id]
            if r.id in self.garbled:
                answer = "I am not sure where that is."
            elif r.id in self.wrong:
                if answer.startswith("["):
                    box = parse_box(answer)
                    answer = "[0.000,0.000,0.010,0.010]" if box.x1 > 0.05 or box.y1 > 0.05 else "[0.900,0.900,1.000,1.000]"
                else:
                    answer = "No" if answer == "Yes" else "Yes"
            out.append(answer)
        return out


def _truth(root: Path, task: str) -> dict[str, str]:
    return {
        s.id: next(t.text for t in s.turns if t.role == Role.ASSISTANT)
        for s in read_parquet(str(root / "test.parquet"))
        if s.task == task
    }


def test_requests_come_from_the_split_with_resolved_images(shapes_dir: Path) -> None:
    reqs = shapes_requests(shapes_dir, "rec")
    assert reqs and all(r.prompt.startswith("<image>\nOutput the coordinate of") for r in reqs)
    assert all(Path(r.image).is_file() for r in reqs)


def test_shapes_rec_end_to_end_with_a_predictor(shapes_dir: Path, tmp_path: Path) -> None:
    truth = _truth(shapes_dir, "rec")
    ids = sorted(truth)
    wrong, garbled = set(ids[0:3]), set(ids[3:5])
    predictor = OracleWithMistakes(truth, wrong, garbled)
    out = tmp_path / "rec.jsonl"
    result, stats = run_shapes("rec", shapes_dir, predictor, out, batch_size=4)
    n = len(ids)
    # The oracle's boxes are the targets (IoU 1); the 3 far-off boxes miss; the 2 garbled have no box.
    assert stats.generated == n
    row = result.rows["shapes-test"]
    assert (row["n"], row["correct"], row["unparseable"], row["missing"]) == (n, n - 5, 2, 0)
    assert row["acc"] == round(100 * (n - 5) / n, 2)
    # A second run generates nothing and scores the same file.
    again = OracleWithMistakes(truth, wrong, garbled)
    result2, stats2 = run_shapes("rec", shapes_dir, again, out)
    assert again.seen == [] and stats2.skipped == n and result2.rows == result.rows


def test_shapes_pope_end_to_end_with_a_predictor(shapes_dir: Path, tmp_path: Path) -> None:
    samples = [s for s in read_parquet(str(shapes_dir / "test.parquet")) if s.task == "pope"]
    truth = {s.id: "Yes" if s.meta["label"] == "yes" else "No" for s in samples}
    flipped = {s.id for s in samples[::5]}
    result, _ = run_shapes("pope", shapes_dir, OracleWithMistakes(truth, flipped, set()), tmp_path / "pope.jsonl")
    for cat in ("random", "popular", "adversarial"):
        in_cat = [s for s in samples if s.meta["category"] == cat]
        tp = sum(s.meta["label"] == "yes" and s.id not in flipped for s in in_cat)
        fn = sum(s.meta["label"] == "yes" and s.id in flipped for s in in_cat)
        tn = sum(s.meta["label"] == "no" and s.id not in flipped for s in in_cat)
        fp = sum(s.meta["label"] == "no" and s.id in flipped for s in in_cat)
        assert {k: result.rows[cat][k] for k in ("tp", "fn", "tn", "fp")} == {"tp": tp, "fn": fn, "tn": tn, "fp": fp}
        assert result.rows[cat]["acc"] == round(100 * (tp + tn) / len(in_cat), 2)
    assert result.counts["unknown_answers"] == 0 and result.counts["labels_not_asked"] == 0


def test_shapes_grounded_descriptions_become_judge_references(shapes_dir: Path) -> None:
    from tg_eval.describe import describe_items_from_samples
    from tg_eval.shapes import shapes_samples

    samples = shapes_samples(shapes_dir, task="grounded_desc")
    items = describe_items_from_samples(samples)
    assert [i.id for i in items] == [s.id for s in samples]
    # The reference is the sample's own answer: the scene with every object's coordinates.
    assert all(i.context == s.turns[1].text and "[" in i.context for i, s in zip(items, samples, strict=True))
