from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tg_data.box import Box
from tg_data.coords import parse_boxes, render_box
from tg_data.io import DataError, SkipReport
from tg_data.readers import read_flickr30k_entities, read_visual_genome
from tg_data.readers.flickr30k import parse_annotation, parse_sentence
from tg_data.schema import Show


# Visual Genome ------------------------------------------------------------------------------------
def test_vg_regions_become_rec_samples(upstream: Callable) -> None:
    up = upstream("vg")
    samples = list(read_visual_genome(str(up.path), image_root="/vg", **up.options))
    assert [s.id for s in samples] == ["vg-1-1382", "vg-1-1383", "vg-10-20"]
    clock = samples[0]
    assert clock.image == "/vg/VG_100K_2/1.jpg" and (clock.width, clock.height) == (800, 600)
    assert clock.turns[0].text == "<image>\nOutput the coordinate of the clock is green in colour."
    assert clock.objects[0].box.to_pixels(800, 600) == pytest.approx((421, 57, 503, 196))
    assert clock.turns[1].text == render_box(clock.objects[0].box)
    assert samples[1].objects[0].label == "shade is along the street"  # whitespace normalised
    # half a pixel past the bottom edge is annotation rounding: clipped onto the edge
    assert samples[2].objects[0].box.to_pixels(500, 800) == pytest.approx((0, 700.5, 500, 800))
    assert samples[2].image == "/vg/VG_100K/10.jpg"


def test_vg_reg_and_sizes_from_the_images(upstream: Callable, image_writer: Callable, tmp_path: Path) -> None:
    up = upstream("vg")
    images = tmp_path / "images"
    image_writer(images / "1.jpg", 800, 600)
    image_writer(images / "10.jpg", 500, 800)
    samples = list(read_visual_genome(str(up.path), image_root=str(images), task="reg"))
    assert samples[0].image == f"{images}/1.jpg" and samples[0].size == (800, 600)
    assert samples[0].turns[1].text == "the clock is green in colour"
    assert render_box(samples[0].objects[0].box) in samples[0].turns[0].text


def test_vg_needs_image_sizes(upstream: Callable) -> None:
    up = upstream("vg")
    with pytest.raises(DataError, match="image_data"):
        read_visual_genome(str(up.path))


def test_vg_bad_region_costs_only_itself(upstream: Callable) -> None:
    up = upstream("vg", bad=True)
    with pytest.raises(DataError, match=r"image 1, region 1390 \(line 1\): .*inverted"):
        list(read_visual_genome(str(up.path), **up.options))
    skip = SkipReport()
    assert [s.id for s in read_visual_genome(str(up.path), skip=skip, **up.options)] == ["vg-1-1382", "vg-1-1383", "vg-10-20"]
    assert skip.total == 1


def test_vg_region_far_outside_the_image_is_an_error(upstream: Callable) -> None:
    up = upstream("vg")
    text = up.path.read_text().replace('"x": 700', '"x": 790')  # 790 + 100 > 800 by 90 px
    up.path.write_text(text)
    with pytest.raises(DataError, match="outside the 800x600 image"):
        list(read_visual_genome(str(up.path), **up.options))


# Flickr30K Entities -------------------------------------------------------------------------------
def test_sentence_markup_is_parsed() -> None:
    s = parse_sentence("[/EN#22/people/bodyparts Two girls] play near [/EN#0/notvisual the camera] .")
    assert s.text == "Two girls play near the camera ."
    assert [(p.text, p.phrase_id, p.types, s.text[p.start : p.end]) for p in s.phrases] == [
        ("Two girls", "22", ("people", "bodyparts"), "Two girls"),
        ("the camera", "0", ("notvisual",), "the camera"),
    ]
    with pytest.raises(ValueError, match="malformed phrase markup"):
        parse_sentence("[/EN#30/people A broken phrase without its end .")


def test_annotation_boxes_are_one_based_inclusive() -> None:
    ann = parse_annotation(
        "<annotation><size><width>500</width><height>375</height></size>"
        "<object><name>7</name><name>8</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>500</xmax><ymax>375</ymax>"
        "</bndbox></object><object><name>9</name><nobndbox>1</nobndbox></object>"
        "<object><name>10</name><nobndbox>0</nobndbox><scene>1</scene></object></annotation>"
    )
    # xmin=1..xmax=500 covers every pixel column of a 500-wide image: corners 0 and 500
    assert ann.boxes == {"7": [(0, 0, 500, 375)], "8": [(0, 0, 500, 375)]}
    assert (ann.width, ann.height, ann.nobox, ann.scene) == (500, 375, {"9"}, {"10"})


def test_flickr_grounded_captions_merge_boxes(upstream: Callable) -> None:
    up = upstream("flickr30k")
    samples = list(read_flickr30k_entities(str(up.path), image_root="/flickr30k-images"))
    assert [s.id for s in samples] == ["flickr30k-1000092795-0", "flickr30k-1000092795-1"]
    first, second = samples
    assert first.image == "/flickr30k-images/1000092795.jpg" and first.size == (500, 375)
    child = Box.from_pixels(10, 20, 110, 220, 500, 375)
    stairs = Box.from_pixels(0, 0, 50, 40, 500, 375)
    assert first.turns[1].text == (
        f"A child {render_box(child)} in a pink dress is climbing up a set of stairs {render_box(stairs)} "
        "in an entry way ."
    )
    assert [(o.label, o.box) for o in first.objects] == [("A child", child), ("a set of stairs", stairs)]
    # "Two girls" has two boxes: merged into the box that encloses both
    both = Box.from_pixels(0, 0, 500, 375, 500, 375)
    assert second.turns[1].text == f"Two girls {render_box(both)} play near the camera ."
    assert second.meta["phrases"] == [{"phrase": "Two girls", "phrase_id": "22", "types": ["people", "bodyparts"], "boxes": 2}]


def test_flickr_keeps_every_box_when_asked(upstream: Callable) -> None:
    up = upstream("flickr30k")
    second = list(read_flickr30k_entities(str(up.path), boxes="keep"))[1]
    girls = [Box.from_pixels(0, 0, 50, 40, 500, 375), Box.from_pixels(300, 100, 500, 375, 500, 375)]
    assert [o.box for o in second.objects] == girls
    assert [render_box(b) for b in parse_boxes(second.turns[1].text).boxes] == [render_box(b) for b in girls]
    assert all(o.show == Show.COORD for o in second.objects)


def test_flickr_rec_samples_per_grounded_phrase(upstream: Callable) -> None:
    up = upstream("flickr30k")
    samples = list(read_flickr30k_entities(str(up.path), task="rec", boxes="keep"))
    assert [s.turns[0].text.split("of ", 1)[1] for s in samples] == ["A child.", "a set of stairs.", "Two girls."]
    girls = samples[2]
    assert len(girls.objects) == 2 and girls.turns[1].text == " ".join(render_box(o.box) for o in girls.objects)


def test_flickr_splits(upstream: Callable) -> None:
    up = upstream("flickr30k")
    assert len(list(read_flickr30k_entities(str(up.path), split="train"))) == 2
    assert list(read_flickr30k_entities(str(up.path), split="val")) == []
    with pytest.raises(DataError, match=r"test\.txt: no such split file"):
        read_flickr30k_entities(str(up.path), split="test")


def test_flickr_bad_sentence_is_named(upstream: Callable) -> None:
    up = upstream("flickr30k", bad=True)
    with pytest.raises(DataError, match=r"Sentences/1000092795\.txt:2: malformed phrase markup"):
        list(read_flickr30k_entities(str(up.path)))
    skip = SkipReport()
    assert len(list(read_flickr30k_entities(str(up.path), skip=skip))) == 2 and skip.total == 1


def test_flickr_missing_or_broken_annotation(upstream: Callable) -> None:
    up = upstream("flickr30k")
    xml = up.path / "Annotations" / "1000092795.xml"
    xml.write_text("<annotation><size>")
    with pytest.raises(DataError, match="is not valid XML"):
        list(read_flickr30k_entities(str(up.path)))
    xml.unlink()
    with pytest.raises(DataError, match=r"annotation file .* is missing"):
        list(read_flickr30k_entities(str(up.path)))
    with pytest.raises(DataError, match="not a Flickr30K Entities folder"):
        read_flickr30k_entities(str(up.path / "Sentences"))
