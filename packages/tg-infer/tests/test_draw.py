from __future__ import annotations

from PIL import Image

from tg_data.draw import PALETTE
from tg_infer.answers import find_boxes
from tg_infer.draw import draw_boxes


def test_every_box_is_drawn_in_its_colour_with_its_label() -> None:
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    boxes = find_boxes("a cat [0.100,0.300,0.400,0.600] and a dog [0.600,0.400,0.900,0.700].", 200, 100)
    drawn = draw_boxes(image, boxes)
    scale = drawn.width // 200
    assert drawn.size == (200 * scale, 100 * scale) and drawn.width >= 448  # small images are enlarged
    for k, b in enumerate(boxes):
        x1, y1, x2, y2 = (round(v * scale) for v in b.pixels)
        mid_y = (y1 + y2) // 2
        assert drawn.getpixel((x1 + 1, mid_y)) == PALETTE[k]  # left edge
        assert drawn.getpixel((x2 - 2, mid_y)) == PALETTE[k]  # right edge
        assert drawn.getpixel(((x1 + x2) // 2, mid_y)) == (255, 255, 255)  # inside untouched
    # Each label sits on a filled tag of the box colour above the box.
    x1, y1 = round(boxes[0].pixels[0] * scale), round(boxes[0].pixels[1] * scale)
    tag = [drawn.getpixel((x1 + dx, y1 - 6)) for dx in range(2, 40)]
    assert PALETTE[0] in tag and (255, 255, 255) in tag  # coloured tag with white text
    assert image.getpixel((25, 45)) == (255, 255, 255)  # the input is not changed
