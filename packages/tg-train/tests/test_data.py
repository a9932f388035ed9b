"""The data plan: mixture draws, deterministic epochs, length grouping, rank split, packing, refused samples."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tg_data.io import read_samples, write_samples
from tg_data.schema import IMAGE_TOKEN, Sample, Turn
from tg_data.shapes import ShapesConfig, TaskMix, write_shapes_dataset
from tg_model.inputs import SampleEncoder
from tg_model.presets import build_model
from tg_model.template import IGNORE_INDEX
from tg_train.data import (
    Collator,
    MixtureDataset,
    RankBatchSampler,
    Refused,
    estimate_length,
    mixture_counts,
    mixture_indices,
    pack_rows,
    plan_epoch,
    read_source,
    split_rounds,
)
from tg_train.recipe import DataSource, RecipeError, load_recipe
from tg_train.trainer import load_model, train, training_inputs


# mixture ------------------------------------------------------------------------------------
def test_mixture_counts_epochs_weights_and_plain_sources():
    sources = [DataSource(path="a", epochs=2), DataSource(path="b", epochs=0.5), DataSource(path="c")]
    assert mixture_counts([10, 10, 7], sources) == [20, 5, 7]
    weighted = [DataSource(path="a", weight=3), DataSource(path="b", weight=1), DataSource(path="c", epochs=1)]
    # the weighted sources share their 100 + 60 rows 3:1; the epochs source is apart
    assert mixture_counts([100, 60, 9], weighted) == [120, 40, 9]
    assert mixture_counts([5], [DataSource(path="a", epochs=0.01)]) == [1]  # never zero draws


def test_mixture_indices_whole_passes_then_a_seeded_subset():
    draws = mixture_indices([10, 4], [23, 2], seed=3)
    per_source = [Counter(r for s, r in draws if s == k) for k in (0, 1)]
    # 23 draws of 10 rows: two whole passes and 3 rows a third time
    assert sorted(per_source[0].values()) == [2] * 7 + [3] * 3 and set(per_source[0]) == set(range(10))
    # a fraction of a pass: distinct rows
    assert sum(per_source[1].values()) == 2 and set(per_source[1].values()) == {1}
    assert mixture_indices([10, 4], [23, 2], seed=3) == draws

    def thirds(seed: int) -> frozenset[int]:
        drawn = Counter(r for s, r in mixture_indices([10, 4], [23, 2], seed=seed) if s == 0)
        return frozenset(r for r, n in drawn.items() if n == 3)

    assert len({thirds(k) for k in range(6)}) > 1, "the remainder subset should depend on the seed"


# epoch plans --------------------------------------------------------------------------------
def _world(n: int, seed: int = 0) -> tuple[list[int], list[bool]]:
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(20, 400, n)]
    multimodal = [bool(x) for x in rng.random(n) < 0.7]
    return lengths, multimodal


@pytest.mark.parametrize("group", [True, False])
def test_plan_is_a_function_of_seed_and_epoch_and_covers_every_sample(group: bool):
    lengths, mm = _world(101)
    micro, per_step = 4, 3
    plan = plan_epoch(lengths, mm, micro, per_step, seed=5, epoch=2, group_by_length=group)
    assert plan == plan_epoch(lengths, mm, micro, per_step, seed=5, epoch=2, group_by_length=group)
    assert plan != plan_epoch(lengths, mm, micro, per_step, seed=5, epoch=3, group_by_length=group)
    assert plan != plan_epoch(lengths, mm, micro, per_step, seed=6, epoch=2, group_by_length=group)
    assert all(len(b) == micro for b in plan)
    assert len(plan) % per_step == 0  # whole optimiser steps
    flat = [i for b in plan for i in b]
    assert set(flat) == set(range(101))
    assert len(flat) - 101 < micro * per_step  # only the last step is completed by wrapping around
    assert Counter(flat).most_common(1)[0][1] <= 2


def test_length_grouping_keeps_modalities_apart_and_sorts_each_step():
    for seed in range(5):
        lengths, mm = _world(150 + seed, seed)
        micro, per_step = 4, 2
        step = micro * per_step
        plan = plan_epoch(lengths, mm, micro, per_step, seed=seed, epoch=0, group_by_length=True)
        n_mm = sum(mm)
        full_steps = n_mm // step + (len(mm) - n_mm) // step
        for k in range(full_steps):
            members = [i for b in plan[k * per_step : (k + 1) * per_step] for i in b]
            assert len({mm[i] for i in members}) == 1, f"step {k} mixes images and text"
            assert [lengths[i] for i in members] == sorted((lengths[i] for i in members), reverse=True)
        # the steps themselves come in random order, not sorted by length or modality
        firsts = [lengths[plan[k * per_step][0]] for k in range(full_steps)]
        assert firsts != sorted(firsts, reverse=True)
        assert len({mm[plan[k * per_step][0]] for k in range(full_steps // 2)}) == 2


def test_ranks_split_each_step_and_resume_mid_epoch():
    lengths, mm = _world(64)
    world, accum, micro = 2, 2, 4
    plan = plan_epoch(lengths, mm, micro, world * accum, seed=0, epoch=0, group_by_length=True)
    per_rank = [list(RankBatchSampler(plan, r, world)) for r in range(world)]
    # micro-batch k goes to rank k % world: together the ranks see the plan, each step split between them
    assert sorted(itertools.chain(*per_rank)) == sorted(plan)
    for step in range(len(plan) // (world * accum)):
        mine = [per_rank[r][step * accum : (step + 1) * accum] for r in range(world)]
        assert sorted(itertools.chain(*mine)) == sorted(plan[step * world * accum : (step + 1) * world * accum])
    resumed = list(RankBatchSampler(plan, 1, world, start=3 * accum))
    assert resumed == per_rank[1][3 * accum :]


# packing ------------------------------------------------------------------------------------
def test_pack_rows_fits_max_length_and_places_every_sample_once():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = [int(x) for x in rng.integers(1, 200, int(rng.integers(1, 30)))]
        rows = pack_rows(lengths, 256)
        assert sorted(itertools.chain(*rows)) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= 256 for row in rows)
        assert all(row == sorted(row) for row in rows)
        # first-fit decreasing uses at most 11/9 OPT + 1 rows, and OPT >= total volume / row size
        assert len(rows) <= 11 / 9 * np.ceil(sum(lengths) / 256) + 1


@pytest.fixture(scope="module")
def small_model(small_llm):
    model, tokenizer = build_model("tiny", seed=0, **small_llm)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def encoded(small_model, shapes_world: Path):
    model, tokenizer = small_model
    encoder = SampleEncoder(tokenizer, model.config, model.encoder.image_size, model.image_tokens,
                            image_root=str(shapes_world), max_length=512)
    samples = list(read_samples(str(shapes_world / "train.parquet")))
    # a mix of tasks: with and without object images, short and long; the long question makes room
    # for the short samples to share rows (rows are no longer than the longest sample)
    tasks = ("caption", "rec", "text2obj", "grounded_desc", "reg", "coord2obj")
    picked = [next(s for s in samples if s.task == t) for t in tasks]
    caption = picked[0]
    long = Sample(id="long-question", image=caption.image, width=caption.width, height=caption.height, task="vqa",
                  turns=[Turn("user", "<image>\n" + "Name each shape and its colour, then its neighbours. " * 12),
                         Turn("assistant", "A red circle.")])
    return [encoder.encode(s) for s in [*picked, long]]


def test_packed_batch_layout(small_model, encoded):
    _, tokenizer = small_model
    lengths = [s.length for s in encoded]
    assert max(lengths) >= 2 * min(lengths)
    batch = Collator(tokenizer.pad_token_id, packing=True, max_length=512)(encoded)
    ids, pos, labels = batch["input_ids"], batch["position_ids"], batch["labels"]
    assert batch["attention_mask"] is None
    # no wider than the padded batch, and fewer rows
    assert ids.shape[1] == max(lengths) and ids.shape[0] < len(encoded)
    rows = pack_rows(lengths, max(lengths))
    images = objects = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            s = encoded[i]
            assert torch.equal(ids[r, at : at + s.length], s.input_ids)
            assert torch.equal(labels[r, at : at + s.length], s.labels)
            assert torch.equal(pos[r, at : at + s.length], torch.arange(s.length))  # restarts per sample
            at += s.length
        assert (ids[r, at:] == tokenizer.pad_token_id).all() and (labels[r, at:] == IGNORE_INDEX).all()
        n_obj = sum(0 if encoded[i].object_pixel_values is None else encoded[i].object_pixel_values.shape[0] for i in row)
        assert batch["media_counts"][r].tolist() == [len(row), n_obj]
        images, objects = images + len(row), objects + n_obj
    assert batch["pixel_values"].shape[0] == images and batch["object_pixel_values"].shape[0] == objects
    assert batch["n_samples"] == len(encoded) and batch["refused"] == []


def _per_sample_losses(logits: torch.Tensor, labels: torch.Tensor, spans: list[tuple[int, int, int]]) -> list[float]:
    """Mean next-token loss of each (row, start, end) span."""
    out = []
    for r, a, b in spans:
        lg, lb = logits[r, a : b - 1], labels[r, a + 1 : b]
        out.append(float(torch.nn.functional.cross_entropy(lg.float(), lb, ignore_index=IGNORE_INDEX)))
    return out


def forward(model, batch: dict, every_position: bool = True) -> torch.Tensor:
    """The model on a collated batch, called as the trainer calls it; by default with every
    position's logits (the trainer asks for the labelled rows' only), so per-sample losses and
    attention across samples can be read."""
    inputs = training_inputs(batch, torch.device("cpu"), torch.float32)
    if every_position:
        inputs["supervised_logits_only"] = False
    return model(**inputs)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_give_each_sample_its_unpacked_loss(small_model, encoded, attn: str):
    model, tokenizer = small_model
    model.language_model.set_attn_implementation(attn)
    try:
        padded = Collator(tokenizer.pad_token_id)(encoded)
        packed = Collator(tokenizer.pad_token_id, packing=True, max_length=512)(encoded)
        with torch.no_grad():
            out_pad = forward(model, padded)
            out_pack = forward(model, packed)
        spans_pad = [(r, 0, s.length) for r, s in enumerate(encoded)]
        spans_pack: list[tuple[int, int, int]] = [(0, 0, 0)] * len(encoded)
        lengths = [s.length for s in encoded]
        for r, row in enumerate(pack_rows(lengths, max(lengths))):
            at = 0
            for i in row:
                spans_pack[i] = (r, at, at + encoded[i].length)
                at += encoded[i].length
        a = _per_sample_losses(out_pad.logits, padded["labels"], spans_pad)
        b = _per_sample_losses(out_pack.logits, packed["labels"], spans_pack)
        # fp32 on CPU: only summation order differs between the two layouts
        assert np.allclose(a, b, rtol=0, atol=1e-4), (a, b)
        # the batch loss is the mean over all supervised tokens either way, and the trainer's own
        # call (the head on labelled rows only) gives it too
        assert abs(float(out_pad.loss) - float(out_pack.loss)) < 1e-4
        with torch.no_grad():
            trainer_loss = float(forward(model, packed, every_position=False).loss)
        assert abs(trainer_loss - float(out_pack.loss)) < 1e-5
    finally:
        model.language_model.set_attn_implementation("sdpa")


def test_no_attention_across_packed_samples(small_model, encoded):
    """Changing one sample's tokens leaves the logits of its row neighbours untouched."""
    model, tokenizer = small_model
    collate = Collator(tokenizer.pad_token_id, packing=True, max_length=512)
    lengths = [s.length for s in encoded]
    rows = pack_rows(lengths, max(lengths))
    r, row = next((r, row) for r, row in enumerate(rows) if len(row) >= 3)
    first = encoded[row[0]]
    changed = type(first)(first.id, first.input_ids.clone(), first.labels, first.pixel_values, first.object_pixel_values)
    text = (changed.input_ids != model.config.image_token_id) & (changed.input_ids != model.config.object_token_id)
    changed.input_ids[text] = (changed.input_ids[text] + 7) % 200 + 10
    with torch.no_grad():
        before = forward(model, collate(encoded)).logits
        after = forward(model, collate([changed if s is first else s for s in encoded])).logits
    n, used = first.length, sum(lengths[i] for i in row)
    assert not torch.allclose(before[r, :n], after[r, :n])  # the changed sample itself did change
    # its neighbours in the row did not see the change
    assert torch.allclose(before[r, n:used], after[r, n:used], rtol=0, atol=1e-6)


# refused samples ----------------------------------------------------------------------------
def _refusable(shapes_world: Path, out: Path) -> Path:
    """13 good samples, two with missing images and three too long to keep an answer."""
    good = [s for s in read_samples(str(shapes_world / "train.parquet")) if s.task in ("rec", "caption")][:13]
    missing = [
        Sample(id=f"missing-{k}", image=f"images/train/absent-{k}.png", task="caption", width=64, height=64,
               turns=[Turn("user", "<image>\nDescribe the image."), Turn("assistant", "Shapes.")])
        for k in range(2)
    ]
    too_long = [
        Sample(id=f"long-{k}", task="vqa", turns=[Turn("user", "word " * 700), Turn("assistant", "yes")])
        for k in range(3)
    ]
    path = out / "mixed.jsonl"
    write_samples([*good, *missing, *too_long], str(path))
    return path


def test_sources_filter_by_task_and_object_count(shapes_world: Path):
    path = str(shapes_world / "train.parquet")
    every = list(read_samples(path))
    rec = read_source(DataSource(path=path, tasks=["rec", "reg"]))
    assert [s.id for s in rec] == [s.id for s in every if s.task in ("rec", "reg")]
    easy = read_source(DataSource(path=path, tasks=["grounded_desc"], max_objects=1))
    assert easy and [s.id for s in easy] == [s.id for s in every if s.task == "grounded_desc" and len(s.objects) <= 1]
    assert len(easy) < sum(s.task == "grounded_desc" for s in every)  # scenes of 2 and 3 shapes left out
    with pytest.raises(RecipeError, match=r"yields no samples of tasks \['no-such-task'\]$"):
        read_source(DataSource(path=path, tasks=["no-such-task"]))


@pytest.fixture(scope="module")
def rounds_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world whose training REC samples ask about up to 3 objects, one round each."""
    root = tmp_path_factory.mktemp("rounds")
    write_shapes_dataset(str(root), {"train": 6}, seed=1, config=ShapesConfig(image_size=64, max_shapes=3),
                         split_mixes={"train": TaskMix(rec_rounds=3)})
    return root


def test_split_rounds_gives_every_question_its_own_sample_with_the_image(rounds_world: Path):
    path = str(rounds_world / "train.parquet")
    whole = read_source(DataSource(path=path, tasks=["rec"]))
    split = read_source(DataSource(path=path, tasks=["rec"], split_rounds=True))
    assert any(len(s.turns) > 2 for s in whole)
    assert len(split) == sum(len(s.turns) // 2 for s in whole) > len(whole)
    by_id = {s.id: s for s in split}
    for s in whole:
        for i in range(len(s.turns) // 2):
            one = by_id[f"{s.id}#{i}"] if len(s.turns) > 2 else by_id[s.id]
            assert one.image == s.image and one.objects == [s.objects[i]]
            assert [t.role for t in one.turns] == ["user", "assistant"]
            assert one.turns[0].text == f"{IMAGE_TOKEN}\n" + s.turns[2 * i].text.removeprefix(f"{IMAGE_TOKEN}\n")
            assert one.turns[1] == s.turns[2 * i + 1]


def test_split_rounds_refuses_samples_whose_rounds_are_not_rec_style(rounds_world: Path):
    path = str(rounds_world / "train.parquet")
    with pytest.raises(RecipeError, match=r'has 3 rounds, 5 object\(s\).*one coordinate object per round.*\(tasks = \["rec"\]\)'):
        read_source(DataSource(path=path, tasks=["grounded_conv"], split_rounds=True))
    odd = Sample(id="odd", image="x.png", turns=[Turn("user", f"{IMAGE_TOKEN}\na"), Turn("user", "b"), Turn("assistant", "c"),
                                                   Turn("assistant", "d")])
    with pytest.raises(RecipeError, match=r"src.jsonl: sample 'odd': split_rounds needs user/assistant pairs"):
        split_rounds(odd, "src.jsonl")


def test_dataset_passes_refusals_on_with_their_reason(small_model, shapes_world: Path, tmp_path: Path):
    model, tokenizer = small_model
    path = _refusable(shapes_world, tmp_path)
    samples = list(read_samples(str(path)))
    encoder = SampleEncoder(tokenizer, model.config, model.encoder.image_size, model.image_tokens,
                            image_root=str(shapes_world), max_length=256)
    dataset = MixtureDataset(samples, [str(shapes_world)] * len(samples), {str(shapes_world): encoder})
    items = [dataset[i] for i in range(len(dataset))]
    refused = {r.id: r.reason for r in items if isinstance(r, Refused)}
    assert refused == {"missing-0": "missing_image", "missing-1": "missing_image",
                       "long-0": "too_long", "long-1": "too_long", "long-2": "too_long"}
    batch = Collator(tokenizer.pad_token_id)(items[10:])
    assert batch["n_samples"] == 3 and sorted(r[0] for r in batch["refused"]) == sorted(refused)
    assert all(message for _, _, message in batch["refused"])


def test_training_counts_and_reports_refused_samples(make_recipe, shapes_world: Path, tmp_path: Path, capsys):
    path = _refusable(shapes_world, tmp_path)
    recipe = load_recipe(str(make_recipe(
        "refused",
        optim={"max_steps": 0, "epochs": 1, "lr": 1e-3},  # one epoch: 18 samples in steps of 8
        batch={"max_length": 256},
        data=[{"path": str(path), "image_root": str(shapes_world)}],
    )))
    result = train(recipe)
    assert result.global_step == 3  # the third step is completed from the epoch's start
    # the trainer's own epoch plan says how often each sample was drawn
    model, _ = load_model(recipe.model, recipe.seed)
    samples = list(read_samples(str(path)))
    lengths = [estimate_length(s, model.image_tokens, model.object_tokens) for s in samples]
    plan = plan_epoch(lengths, [s.image is not None for s in samples], 4, 2, recipe.seed, 0, True)
    drawn = Counter(samples[i].id for b in plan for i in b)
    expected = {
        "missing_image": sum(n for i, n in drawn.items() if i.startswith("missing")),
        "too_long": sum(n for i, n in drawn.items() if i.startswith("long")),
    }
    assert expected["missing_image"] >= 2 and expected["too_long"] >= 3
    assert result.refused == expected
    report = "samples refused, by reason: " + ", ".join(f"{k}: {v}" for k, v in sorted(expected.items()))
    assert report in " ".join(capsys.readouterr().err.split())
