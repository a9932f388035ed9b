"""Errors a caller can cause, each with an HTTP status so the server and the CLI report them alike."""

from __future__ import annotations


class InferError(ValueError):
    """Input that cannot be answered; the message says what is wrong and how to fix it.

    ``status`` is the HTTP status the server answers with and ``code`` a short machine-readable key.
    """

    status: int = 400
    code: str = "invalid_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.param = param


class ImageRejected(InferError):
    """An image that is refused: unreadable, too many pixels, an unsupported format, or out of bounds."""

    code = "invalid_image"


class ModelLoadError(InferError):
    """A model directory that cannot be loaded."""

    code = "model_load_error"
