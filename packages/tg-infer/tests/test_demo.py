"""The web demo, driven in headless Chromium (Debian's package) the way a person would use it."""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from tg_data.box import Box
from tg_data.coords import render_box
from tg_data.draw import PALETTE
from tg_data.schema import ObjectRef, Show
from tg_infer.predictor import Predictor
from tg_infer.requests import Request

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MAX_NEW_TOKENS = 6
pytestmark = [  # gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
SCREENSHOT_DIR = os.environ.get("TG_INFER_SCREENSHOTS")  # keep the screenshots here when set


@pytest.fixture(scope="module")
def demo_url(predictor: Predictor) -> Iterator[str]:
    from tg_infer.demo import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(predictor, port=port, max_new_tokens=MAX_NEW_TOKENS, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser(demo_url: str) -> Iterator[Any]:
    assert Path(CHROMIUM).is_file(), "install Debian's chromium package (apt-get install chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, demo_url: str) -> Iterator[Page]:
    """A fresh visit: empty answer, no upload."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(demo_url, wait_until="domcontentloaded")
    page.wait_for_selector("#question textarea", timeout=60_000)
    yield page
    page.close()


def upload(page: Page, image: Image.Image, folder: Path) -> None:
    path = folder / "upload.png"
    image.save(path)
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#input-image img", timeout=30_000)


def wait_for_answer(page: Page, folder: Path) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        value = page.locator("#answer textarea").input_value()
        if value:
            return value
        time.sleep(0.2)
    shot = shoot(page, "no-answer.png", folder)
    raise AssertionError(f"no answer appeared; the page is in {shot}")


def drawn_image(page: Page) -> Image.Image:
    src = page.locator("#answer-image img").get_attribute("src")
    assert src, "no drawn image"
    return Image.open(io.BytesIO(httpx.get(src, timeout=30).content)).convert("RGB")


def shoot(page: Page, name: str, tmp_path: Path) -> Path:
    folder = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_upload_ask_and_see_the_answer(page: Page, predictor: Predictor, tmp_path: Path, make_image) -> None:
    image = make_image(80, 60, 21)
    question = "Output the coordinate of the blue square."
    upload(page, image, tmp_path)
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()
    answer = wait_for_answer(page, tmp_path)
    assert answer == predictor.chat([("user", question)], image, max_new_tokens=MAX_NEW_TOKENS).text
    page.wait_for_selector("#answer-image img", timeout=60_000)
    drawn = drawn_image(page)
    assert drawn.size == (480, 360)  # the 80x60 upload, enlarged 6x for legible labels
    assert shoot(page, "demo-ask.png", tmp_path).stat().st_size > 10_000


def test_ask_about_a_typed_region(page: Page, predictor: Predictor, tmp_path: Path, make_image) -> None:
    image = make_image(80, 60, 21)
    upload(page, image, tmp_path)
    # Two clicks on the picture mark a region's corners (in pixels of the upload) and switch the mode.
    page.wait_for_selector("#marker img", timeout=30_000)
    shown = page.locator("#marker img").bounding_box()
    assert shown is not None
    for fx, fy in ((0.25, 0.25), (0.75, 0.75)):
        page.mouse.click(shown["x"] + fx * shown["width"], shown["y"] + fy * shown["height"])
        time.sleep(0.5)
    region = page.get_by_label("Region x1,y1,x2,y2 (pixels)")
    deadline = time.monotonic() + 30
    while not region.input_value() and time.monotonic() < deadline:
        time.sleep(0.2)
    x1, y1, x2, y2 = (float(v) for v in region.input_value().split(","))
    assert abs(x1 - 20) <= 2 and abs(y1 - 15) <= 2 and abs(x2 - 60) <= 2 and abs(y2 - 45) <= 2
    assert page.get_by_label("Ask about a region").is_checked()
    marked = Image.open(io.BytesIO(httpx.get(page.locator("#marker img").get_attribute("src"), timeout=30).content))
    assert marked.size == (480, 360) and marked.convert("RGB").getpixel((121, 180)) == PALETTE[0]  # outlined
    # Typed coordinates replace the clicked ones.
    page.get_by_label("Ask about a region").check()
    page.get_by_label("object image").check()
    page.get_by_label("Region x1,y1,x2,y2 (pixels)").fill("10,10,50,40")
    page.locator("#question textarea").fill("What is the object at <region>?")
    page.locator("#ask").click()
    answer = wait_for_answer(page, tmp_path)
    box = Box.from_pixels(10, 10, 50, 40, 80, 60)
    want = predictor.generate([Request.ask("What is the object at <object>?", image,
                                           [ObjectRef(box, Show.IMAGE.value)], max_new_tokens=MAX_NEW_TOKENS)])[0].text
    assert answer == want
    drawn = drawn_image(page)
    # The region is outlined in the first colour: left edge at x = 10 * 6, halfway down the box.
    assert drawn.getpixel((61, 150)) == PALETTE[0]
    assert drawn.getpixel((150, 150)) == image.getpixel((25, 25))  # inside the box: the picture itself
    shoot(page, "demo-region.png", tmp_path)


def test_region_as_coordinates_goes_into_the_question(predictor: Predictor, make_image) -> None:
    from tg_infer.demo import answer_question

    image = make_image(80, 60, 21)
    drawn, text, _ = answer_question(predictor, image, "What is the object at <region>?", "Ask about a region",
                                         "10,10,50,40", "coordinates", MAX_NEW_TOKENS)
    coords = render_box(Box.from_pixels(10, 10, 50, 40, 80, 60))
    assert text == predictor.chat([("user", f"What is the object at {coords}?")], image,
                                  max_new_tokens=MAX_NEW_TOKENS).text
    assert drawn.getpixel((61, 150)) == PALETTE[0]


def test_a_missing_image_is_explained(predictor: Predictor) -> None:
    from tg_infer.demo import answer_question
    from tg_infer.errors import InferError

    with pytest.raises(InferError, match="upload an image"):
        answer_question(predictor, None, "hi")
    with pytest.raises(InferError, match="mark a region"):
        answer_question(predictor, Image.new("RGB", (8, 8)), "What is <region>?", mode="Ask about a region")
