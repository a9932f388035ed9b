"""An interactive conversation about one image, driven by text lines (the ``tg-infer chat`` loop).

Lines starting with ``/`` are commands; anything else is the user's next message::

    /image PATH              show the model a picture (starts a new conversation)
    /object x1,y1,x2,y2      attach the region (pixels of the image) as an object image to the
                             next message; write <object> where it goes, or it is added at the end
    /reset                   forget the conversation, keep the image
    /help                    list the commands
    /quit                    leave
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tg_data.box import Box, BoxError
from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN, ObjectRef, Role, Show, Turn
from tg_infer.answers import Answer
from tg_infer.errors import InferError
from tg_infer.images import open_image
from tg_infer.predictor import Predictor

HELP = __doc__.split("::", 1)[1].strip("\n") if __doc__ else ""


class Quit(Exception):
    """The user asked to leave."""


def parse_pixel_box(text: str, width: int, height: int) -> Box:
    """``x1,y1,x2,y2`` in pixels of a ``width`` x ``height`` image, as a project box."""
    parts = [p for p in text.replace("[", " ").replace("]", " ").replace(",", " ").split() if p]
    if len(parts) != 4:
        raise InferError(f"expected four pixel values x1,y1,x2,y2, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InferError(f"expected numbers x1,y1,x2,y2, got {text!r}") from None
    try:
        return Box.from_pixels(*values, width, height)
    except BoxError as e:
        raise InferError(f"{text!r} is not a box inside the {width}x{height} image: {e}") from None


@dataclass
class ChatSession:
    predictor: Predictor
    max_new_tokens: int = 256
    image: Image.Image | None = None
    image_name: str = ""
    turns: list[Turn] = field(default_factory=list)
    objects: list[ObjectRef] = field(default_factory=list)
    pending: list[ObjectRef] = field(default_factory=list)

    def set_image(self, path: str | Path) -> str:
        self.image = open_image(path, self.predictor.image_limits)
        self.image_name = str(path)
        self.reset()
        return f"image {path} ({self.image.width}x{self.image.height}); new conversation"

    def reset(self) -> None:
        self.turns, self.objects, self.pending = [], [], []

    def handle(self, line: str) -> str:
        """The reply to one input line (a command's confirmation or the model's answer)."""
        line = line.strip()
        if not line:
            return ""
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            arg = arg.strip()
            if command in ("/quit", "/exit"):
                raise Quit
            if command == "/help":
                return HELP
            if command == "/reset":
                self.reset()
                return "new conversation"
            if command == "/image":
                if not arg:
                    raise InferError("usage: /image PATH")
                return self.set_image(arg)
            if command == "/object":
                if self.image is None:
                    raise InferError("load an image with /image PATH before marking objects on it")
                box = parse_pixel_box(arg, self.image.width, self.image.height)
                self.pending.append(ObjectRef(box, Show.IMAGE.value))
                return (f"object {len(self.objects) + len(self.pending)} at {arg} is attached to your next message "
                        f"(write {OBJECT_TOKEN} where it goes)")
            raise InferError(f"unknown command {command}; /help lists the commands")
        return format_answer(self.say(line))

    def say(self, text: str) -> Answer:
        if IMAGE_TOKEN in text:
            raise InferError(f"write no {IMAGE_TOKEN} yourself: the image from /image is placed for you")
        placed = text.count(OBJECT_TOKEN)
        if placed > len(self.pending):
            raise InferError(f"the message has {placed} {OBJECT_TOKEN} but {len(self.pending)} object(s) are "
                             "attached; attach them with /object x1,y1,x2,y2 first")
        text = text + "".join(f" {OBJECT_TOKEN}" for _ in range(len(self.pending) - placed))
        turns = [*self.turns, Turn(Role.USER.value, text)]
        objects = [*self.objects, *self.pending]
        answer = self.predictor.chat(turns, self.image, objects, max_new_tokens=self.max_new_tokens)
        self.turns = [*turns, Turn(Role.ASSISTANT.value, answer.text)]
        self.objects, self.pending = objects, []
        return answer


def format_answer(answer: Answer) -> str:
    lines = [answer.text]
    for k, b in enumerate(answer.boxes, 1):
        x1, y1, x2, y2 = b.pixels
        lines.append(f"  box {k}: {b.label or '?'} {b.coords} = pixels ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})")
    return "\n".join(lines)
