"""The web demo (the paper's Fig. 15): upload an image, ask, see the answer with its boxes drawn.

A second mode asks about a region: click two corners on the marking copy of the image (or type
``x1,y1,x2,y2`` in pixels) and the region goes to the model as coordinate text or as an object image; write
``<region>`` in the question where it belongs (otherwise it is added at the end).
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from tg_data.coords import render_box
from tg_data.schema import OBJECT_TOKEN, Role, Turn
from tg_infer.answers import FoundBox, pixel_box
from tg_infer.chat import parse_pixel_box
from tg_infer.draw import draw_boxes, enlargement
from tg_infer.errors import InferError
from tg_infer.predictor import Predictor

REGION = "<region>"
MODES = ("Ask about the image", "Ask about a region")
REGION_AS = ("coordinates", "object image")
EXAMPLE_QUESTIONS = (
    "Describe the image in detail. Give the coordinate of every object you mention.",
    "Output the coordinate of the red circle.",
    "What is the object at <region>?",
)


def answer_question(
    predictor: Predictor,
    image: Image.Image | None,
    question: str,
    mode: str = MODES[0],
    region: str = "",
    region_as: str = REGION_AS[0],
    max_new_tokens: int = 256,
) -> tuple[Image.Image, str, str]:
    """The drawn image, the answer text, and a Markdown list of the boxes (what the demo shows)."""
    if image is None:
        raise InferError("upload an image first")
    if not question or not question.strip():
        raise InferError("type a question")
    image = image.convert("RGB")
    text, objects, marked = question.strip(), [], []
    if mode == MODES[1]:
        if not region.strip():
            raise InferError("mark a region: click two corners on the image or type x1,y1,x2,y2 (pixels)")
        box = parse_pixel_box(region, image.width, image.height)
        shown = render_box(box) if region_as == REGION_AS[0] else OBJECT_TOKEN
        text = text.replace(REGION, shown, 1) if REGION in text else f"{text} {shown}"
        if region_as == REGION_AS[1]:
            objects = [box]
        marked = [FoundBox("region", box, pixel_box(box, image.width, image.height))]
    elif REGION in text:
        raise InferError(f"{REGION} needs a region: switch to '{MODES[1]}'")
    answer = predictor.chat([Turn(Role.USER.value, text)], image, objects, max_new_tokens=max_new_tokens)
    drawn = draw_boxes(image, marked + answer.boxes)
    lines = [f"{k}. **{b.label or '?'}** `{b.coords}` → pixels ({', '.join(f'{v:.0f}' for v in b.pixels)})"
             for k, b in enumerate(answer.boxes, 1)]
    return drawn, answer.text, "\n".join(lines) if lines else "_no boxes in the answer_"


def corner_click(image: Image.Image | None, first: Any, x: float, y: float) -> tuple[str | None, Any]:
    """Two clicks make a box: the first is kept, the second completes ``x1,y1,x2,y2``."""
    if image is None:
        return None, None
    if first is None:
        return None, (x, y)
    (x1, y1), (x2, y2) = first, (x, y)
    return f"{min(x1, x2):.0f},{min(y1, y2):.0f},{max(x1, x2):.0f},{max(y1, y2):.0f}", None


def mark_region(image: Image.Image | None, region: str) -> Image.Image | None:
    """The picture to click corners on, enlarged like the answer's (``enlargement``), with the typed or
    clicked region outlined. The browser reports clicks in this picture's pixels."""
    if image is None:
        return None
    image = image.convert("RGB")
    try:
        box = parse_pixel_box(region, image.width, image.height) if region and region.strip() else None
    except InferError:  # half-typed coordinates: show the plain picture until they make a box
        box = None
    marked = [FoundBox("", box, pixel_box(box, image.width, image.height))] if box is not None else []
    return draw_boxes(image, marked)


def build_demo(predictor: Predictor, max_new_tokens: int = 256) -> Any:
    """The gradio app around ``predictor``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def on_ask(image, question, mode, region, region_as):
        try:
            return answer_question(predictor, image, question, mode, region, region_as, max_new_tokens)
        except InferError as e:
            raise gr.Error(str(e)) from None

    def on_select(image, first, evt):
        if image is None:
            return gr.update(), None, gr.update()
        scale = enlargement(image.width, image.height)
        x, y = evt.index[0] / scale, evt.index[1] / scale
        box, state = corner_click(image, first, x, y)
        if box is None:
            return gr.update(), state, gr.update()
        return gr.update(value=box), state, gr.update(value=MODES[1])

    on_select.__annotations__ = {"evt": gr.SelectData}  # gradio passes the click where it sees this type

    def on_upload(image):
        return mark_region(image, ""), "", None

    with gr.Blocks(title="TinyGroundingGPT", analytics_enabled=False) as demo:
        gr.Markdown(
            "## TinyGroundingGPT\nUpload an image and ask about it: boxes in the answer are drawn on the image. "
            f"To ask about a region, click two of its corners on the small copy (or type them) and write "
            f"`{REGION}` in the question."
        )
        corner = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], height=360,
                                 elem_id="input-image")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Mode", elem_id="mode")
                with gr.Row():
                    marker = gr.Image(type="pil", label="Mark a region: click two corners", interactive=False,
                                      height=200, format="png", elem_id="marker")
                    with gr.Column():
                        region = gr.Textbox(label="Region x1,y1,x2,y2 (pixels)", placeholder="click two corners",
                                            elem_id="region")
                        region_as = gr.Radio(list(REGION_AS), value=REGION_AS[0], label="Show the region as",
                                             elem_id="region-as")
                question = gr.Textbox(label="Question", lines=2, placeholder=EXAMPLE_QUESTIONS[1],
                                      elem_id="question")
                gr.Examples([[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="Example questions")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                drawn = gr.Image(type="pil", label="Answer with boxes", interactive=False, height=360, format="png",
                                 elem_id="answer-image")
                answer = gr.Textbox(label="Answer", interactive=False, lines=3, elem_id="answer")
                boxes = gr.Markdown(elem_id="boxes")
        image.upload(on_upload, [image], [marker, region, corner])
        image.clear(lambda: (None, "", None), None, [marker, region, corner])
        marker.select(on_select, [image, corner], [region, corner, mode])
        region.change(mark_region, [image, region], [marker])
        inputs = [image, question, mode, region, region_as]
        ask.click(on_ask, inputs, [drawn, answer, boxes])
        question.submit(on_ask, inputs, [drawn, answer, boxes])
    return demo


def launch(predictor: Predictor, host: str = "127.0.0.1", port: int = 7860, max_new_tokens: int = 256,
           block: bool = True) -> Any:
    demo = build_demo(predictor, max_new_tokens)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, ssr_mode=False,
                quiet=True, footer_links=[])
    return demo
