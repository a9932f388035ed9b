"""Drawing scenes with Pillow: each shape fills exactly its box, so boxes are tight by construction."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from tg_data.shapes.scene import BACKGROUNDS, COLOURS, Scene, Shape


def _polygon(shape: Shape) -> list[tuple[float, float]]:
    x1, y1, x2, y2 = shape.px
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    if shape.kind == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape.kind == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    if shape.kind == "hexagon":
        return [(x1 + w * 0.25, y1), (x1 + w * 0.75, y1), (x2, cy), (x1 + w * 0.75, y2), (x1 + w * 0.25, y2), (x1, cy)]
    if shape.kind == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.45
            a = math.radians(shape.rotation + 36 * k)
            pts.append((math.cos(a) * r, math.sin(a) * r))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        # stretch so the star's own extent fills the box exactly
        sx, sy = w / (max(xs) - min(xs)), h / (max(ys) - min(ys))
        return [(x1 + (px - min(xs)) * sx, y1 + (py - min(ys)) * sy) for px, py in pts]
    raise ValueError(f"no polygon for {shape.kind}")


def _background(scene: Scene) -> Image.Image:
    colour = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    if not scene.textured:
        return Image.new("RGB", (scene.width, scene.height), tuple(int(c) for c in colour))
    rng = np.random.default_rng(scene.texture_seed)
    # low-contrast stripes plus blocky noise: texture without anything shape-like
    yy, xx = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 18)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) * 10
    cells = rng.normal(0, 6, size=(scene.height // 8 + 1, scene.width // 8 + 1)).astype(np.float32)
    noise = np.kron(cells, np.ones((8, 8), dtype=np.float32))[: scene.height, : scene.width]
    pix = colour[None, None, :] + (stripes + noise)[..., None]
    return Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8), "RGB")


def render_scene(scene: Scene) -> Image.Image:
    image = _background(scene)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fill = COLOURS[shape.colour]
        x1, y1, x2, y2 = shape.px
        # Pillow includes both end pixels; draw to x2-1 so the ink lies inside the box
        if shape.kind == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
        else:
            pts = [(min(px, x2 - 1), min(py, y2 - 1)) for px, py in _polygon(shape)]
            draw.polygon(pts, fill=fill)
    return image
