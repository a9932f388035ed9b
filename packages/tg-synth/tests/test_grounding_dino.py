"""GroundingDINO through transformers' Auto classes, on a tiny randomly initialised model built here.

Its boxes mean nothing; what is checked is the plumbing: loading from a directory, prompts, batching,
thresholds, label assignment and boxes mapped into the project frame, against a direct computation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from tg_data.box import Box
from tg_data.io import read_samples
from tg_data.shapes import load_scenes
from tg_data.shapes.dataset import image_path
from tg_synth.backends.base import DetectRequest
from tg_synth.backends.grounding_dino import GroundingDinoDetector, label_token_positions, merged_prompt
from tg_synth.config import DetectorConfig

WORDS = ["red", "blue", "green", "yellow", "purple", "orange", "circle", "square", "triangle", "diamond",
         "star", "hexagon", "car", "dog", "a", "the", "."]


@pytest.fixture(scope="module")
def tiny_gdino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    out = tmp_path_factory.mktemp("gdino")
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 128}),
        tokenizer=tokenizer,
    )
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, num_queries=24, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, d_model=32, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _images(tmp_path: Path, sizes: list[tuple[int, int]]) -> list[DetectRequest]:
    reqs = []
    for k, (w, h) in enumerate(sizes):
        im = Image.new("RGB", (w, h), (240, 240, 240))
        ImageDraw.Draw(im).ellipse((w * 0.2, h * 0.2, w * 0.6, h * 0.7), fill=(220, 40, 40))
        ImageDraw.Draw(im).rectangle((w * 0.65, h * 0.1, w * 0.9, h * 0.4), fill=(40, 80, 220))
        path = tmp_path / f"im{k}.png"
        im.save(path)
        reqs.append(DetectRequest(f"im{k}", str(path), w, h, ("red circle", "blue square", "dog")))
    return reqs


@pytest.fixture(scope="module")
def direct(tiny_gdino: Path):
    """The expected detections, computed straight from the model's outputs (one image, no batching)."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_gdino)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_gdino).eval()

    def compute(req: DetectRequest, box_th: float, text_th: float) -> list[tuple[str, list[float], float]]:
        return _direct(processor, model, req, box_th, text_th)

    return compute


def _direct(processor, model, req: DetectRequest, box_th: float, text_th: float) -> list[tuple[str, list[float], float]]:
    text, spans = merged_prompt(req.labels)
    inputs = processor(images=Image.open(req.path).convert("RGB"), text=text, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    probs = out.logits.sigmoid()[0]
    tokens = processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    positions = label_token_positions(tokens, spans)
    expected = []
    for q in range(probs.shape[0]):
        score = float(probs[q].max())
        if score <= box_th:
            continue
        label_scores = [max(float(probs[q, t]) for t in pos) for pos in positions]
        best = max(range(len(positions)), key=lambda i: label_scores[i])
        if label_scores[best] <= text_th:
            continue
        cx, cy, w, h = out.pred_boxes[0, q].tolist()
        px = [(cx - w / 2) * req.width, (cy - h / 2) * req.height, (cx + w / 2) * req.width, (cy + h / 2) * req.height]
        expected.append((req.labels[best], Box.from_pixels(*px, req.width, req.height, clip=True).to_list(), score))
    return expected


def _close(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        la == lb and abs(sa - sb) < 1e-4 and max(abs(x - y) for x, y in zip(ba, bb, strict=True)) < 1e-4
        for (la, ba, sa), (lb, bb, sb) in zip(a, b, strict=True)
    )


def _as_tuples(dets) -> list:
    return [(d.label, d.box.to_list(), d.score) for d in dets]


def test_prompt_spans_point_at_each_labels_tokens() -> None:
    text, spans = merged_prompt(["Red car", "dog.", "blue  square"])
    assert text == "red car. dog. blue square."
    assert [text[a:b] for a, b in spans] == ["red car", "dog", "blue square"]
    offsets = [(0, 0), (0, 3), (4, 7), (7, 8), (9, 12), (12, 13), (14, 18), (19, 25), (25, 26), (0, 0)]
    assert label_token_positions(offsets, spans) == [[1, 2], [4], [6, 7]]


def test_loads_through_the_auto_classes_from_a_directory(tiny_gdino: Path) -> None:
    det = GroundingDinoDetector(DetectorConfig(kind="grounding_dino", model=str(tiny_gdino)))
    assert type(det.model).__name__ == "GroundingDinoForObjectDetection"
    assert type(det.processor).__name__ == "GroundingDinoProcessor"
    assert det.name.startswith(f"grounding-dino:{tiny_gdino}:box=")


def test_detections_match_a_direct_computation(tiny_gdino: Path, tmp_path: Path, direct) -> None:
    reqs = _images(tmp_path, [(80, 60), (50, 70), (96, 96)])
    scores = sorted(s for _, _, s in direct(reqs[0], 0.0, 0.0))
    box_th = scores[len(scores) // 2]  # about half the queries pass
    det = GroundingDinoDetector(DetectorConfig(kind="grounding_dino", model=str(tiny_gdino), box_threshold=box_th,
                                               text_threshold=0.0, batch_size=1))
    got = det.detect(reqs)
    assert len(got) == 3
    for req, dets in zip(reqs, got, strict=True):
        assert all(d.label in req.labels and d.score > box_th for d in dets)
        assert _close(_as_tuples(dets), direct(req, box_th, 0.0))
    assert 0 < len(got[0]) < 24


def test_thresholds_only_ever_remove_detections(tiny_gdino: Path, tmp_path: Path) -> None:
    reqs = _images(tmp_path, [(64, 64)])
    counts = []
    for box_th, text_th in [(0.0, 0.0), (0.3, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.0), (0.0, 1.0)]:
        det = GroundingDinoDetector(DetectorConfig(kind="grounding_dino", model=str(tiny_gdino),
                                                   box_threshold=box_th, text_threshold=text_th))
        dets = det.detect(reqs)[0]
        assert all(d.score > box_th for d in dets)
        counts.append(len(dets))
    assert counts[0] == 24  # every query, with no thresholds
    assert counts[0] >= counts[1] >= counts[2] >= counts[3]
    assert counts[4] == 0 and counts[5] == 0


def test_batching_and_label_chunks_do_not_change_results(tiny_gdino: Path, tmp_path: Path) -> None:
    # images of one size: a batch of different sizes is padded, which a model sees (as upstream does)
    reqs = _images(tmp_path, [(64, 48)] * 4)
    one = GroundingDinoDetector(DetectorConfig(kind="grounding_dino", model=str(tiny_gdino), box_threshold=0.3,
                                               text_threshold=0.1, batch_size=1))
    four = GroundingDinoDetector(DetectorConfig(kind="grounding_dino", model=str(tiny_gdino), box_threshold=0.3,
                                                text_threshold=0.1, batch_size=4))
    a, b = one.detect(reqs), four.detect(reqs)
    for x, y in zip(a, b, strict=True):
        assert _close(_as_tuples(x), _as_tuples(y))
    chunked = GroundingDinoDetector(DetectorConfig(kind="grounding_dino", model=str(tiny_gdino), box_threshold=0.0,
                                                   text_threshold=0.0, max_labels_per_query=1))
    dets = chunked.detect(reqs[:1])[0]
    # one query per label, each of whose boxes can only carry that label: 24 boxes per label
    assert sorted({d.label for d in dets}) == sorted(reqs[0].labels) and len(dets) == 3 * 24


def test_the_pipeline_runs_with_it_on_listed_images_with_annotations(
    tiny_gdino: Path, tmp_path: Path, shapes_root: Path, loopback, openai_chat
) -> None:
    from tg_synth.config import config_from_dict
    from tg_synth.run import run

    scenes = load_scenes(str(shapes_root), "train")[:4]
    listing = tmp_path / "images.jsonl"
    with listing.open("w") as f:
        for s in scenes:
            anns = [{"label": sh.name, "box": list(sh.px), "source": "truth"} for sh in s.shapes]
            f.write(json.dumps({"id": s.id, "image": image_path(s), "annotations": anns, "box_format": "xyxy"}) + "\n")
        f.write(json.dumps({"id": "missing", "image": "images/train/nope.png"}) + "\n")
    server = loopback()
    cfg = config_from_dict({
        "progress": False,
        "input": {"kind": "images", "root": str(shapes_root), "image_list": str(listing)},
        "backends": {"mllm": openai_chat(server.base_url),
                     "detector": {"kind": "grounding_dino", "model": str(tiny_gdino), "box_threshold": 0.45}},
        "filters": {"min_object_area": 0.001, "max_object_area": 0.9},
        "output": {"dir": str(tmp_path / "out")},
    })
    m = run(cfg)
    assert m["backends"]["detector"].startswith("grounding-dino:")
    assert m["steps"]["ground"]["done"] == 4 and m["steps"]["load"]["quarantined"] == 1
    assert m["failures"]["by_reason"] == {"load: image not found": 1}
    samples = list(read_samples(str(tmp_path / "out" / "stage2")))
    rec = [s for s in samples if s.task == "rec"]
    assert rec  # the annotations are the truth, so the oracle endpoint can refer to them
    truth = {s.id: {tuple(round(v, 5) for v in b.to_list()) for b in s.boxes} for s in scenes}
    for s in rec:
        assert tuple(round(v, 5) for v in s.objects[0].box.to_list()) in truth[s.meta["image_id"]]


def test_a_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    from tg_synth.config import ConfigError

    with pytest.raises(ConfigError, match="no such directory"):
        GroundingDinoDetector(DetectorConfig(kind="grounding_dino", model=str(tmp_path / "nope")))
