"""The chat-completions request body, and its translation into a model request.

Follows OpenAI's ``POST /v1/chat/completions``: ``messages`` whose content is a string or a list of
parts, ``text`` and ``image_url`` (data URLs; ``file://`` URLs and paths only inside directories the
operator allows). One extension: an ``object`` part, ``{"type": "object", "box": [x1, y1, x2, y2]}``
in pixels of the conversation's image, shows that region to the model as an object image.
Coordinates in text are the model's normalised coordinate text and pass through unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tg_data.box import Box, BoxError
from tg_data.schema import IMAGE_TOKEN, OBJECT_TOKEN, ObjectRef, Role, Show, Turn
from tg_infer.errors import InferError
from tg_infer.images import ImageLimits, PathPolicy, image_from_url
from tg_infer.requests import Request, Sampling


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Part):
    type: Literal["text"]
    text: str


class ImageURL(_Part):
    url: str
    detail: str | None = None


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: ImageURL | str


class ObjectPart(_Part):
    type: Literal["object"]
    box: Annotated[list[float], Field(min_length=4, max_length=4)]


Part = Annotated[TextPart | ImagePart | ObjectPart, Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[Part] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    stop: str | list[str] | None = None


def parse_body(body: bytes) -> ChatCompletionRequest:
    """Validate a request body; the first problem is reported with where it is."""
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()) if not isinstance(p, str) or not p.endswith("]"))
        if err.get("type") == "json_invalid":
            raise InferError(f"the body is not valid JSON ({err.get('msg')})", code="invalid_json") from None
        raise InferError(f"{where or 'body'}: {err.get('msg')}", param=where or None) from None


def _url(part: ImagePart) -> str:
    return part.image_url if isinstance(part.image_url, str) else part.image_url.url


def to_request(
    body: ChatCompletionRequest,
    policy: PathPolicy,
    limits: ImageLimits,
    default_max_tokens: int,
    max_tokens_limit: int,
) -> Request:
    """The model request for ``body``: placeholders where the parts were, the image decoded."""
    if body.n != 1:
        raise InferError(f"n={body.n} is not supported; ask for one choice (n=1)", param="n")
    if body.stop:
        raise InferError("stop sequences are not supported; leave 'stop' out", param="stop")
    max_tokens = body.max_completion_tokens or body.max_tokens or default_max_tokens
    if max_tokens > max_tokens_limit:
        raise InferError(f"max_tokens={max_tokens} exceeds this server's limit of {max_tokens_limit}",
                         param="max_tokens", code="max_tokens_too_large")
    sampling = Sampling(
        temperature=body.temperature if body.temperature is not None else 0.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        top_k=body.top_k or 0,
        seed=body.seed,
    )
    image = None
    boxes: list[tuple[str, list[float]]] = []
    turns: list[Turn] = []
    for k, message in enumerate(body.messages):
        where = f"messages.{k}"
        content = message.content
        if content is None:
            raise InferError(f"{where}.content is missing", param=f"{where}.content")
        parts: list[Any] = [TextPart(type="text", text=content)] if isinstance(content, str) else content
        pieces: list[str] = []
        for j, part in enumerate(parts):
            at = f"{where}.content.{j}"
            if isinstance(part, TextPart):
                for token in (IMAGE_TOKEN, OBJECT_TOKEN):
                    if token in part.text:
                        raise InferError(f"{at}: text may not contain {token}; send images as image_url parts "
                                         "and regions as object parts", param=at)
                pieces.append(part.text)
            elif isinstance(part, ImagePart):
                if message.role != Role.USER:
                    raise InferError(f"{at}: only user messages may carry images", param=at)
                if image is not None:
                    raise InferError(f"{at}: the model reads one image per conversation; send one image_url",
                                     param=at)
                image = image_from_url(_url(part), policy, limits, where=at)
                pieces.append(IMAGE_TOKEN + "\n")
            else:
                if message.role != Role.USER:
                    raise InferError(f"{at}: only user messages may carry object parts", param=at)
                boxes.append((at, part.box))
                pieces.append(OBJECT_TOKEN)
        turns.append(Turn(message.role, "".join(pieces).rstrip("\n") if pieces else ""))
    objects = []
    for at, values in boxes:
        if image is None:
            raise InferError(f"{at}: an object part needs an image in the conversation to cut it from", param=at)
        try:
            box = Box.from_pixels(*values, image.width, image.height)
        except BoxError as e:
            raise InferError(f"{at}: box {values} is not a box in pixels of the {image.width}x{image.height} "
                             f"image ({e})", param=at) from None
        objects.append(ObjectRef(box, Show.IMAGE.value))
    if not turns or turns[-1].role != Role.USER:
        raise InferError("the last message must be the user's", param="messages")
    return Request(tuple(turns), image, tuple(objects), max_new_tokens=max_tokens, sampling=sampling)
