"""The one error type a user can cause: bad input files, bad options, an unreachable judge."""

from __future__ import annotations

from tg_data.box import BoxError
from tg_data.io import DataError
from tg_data.schema import SampleError


class EvalError(ValueError):
    """Input that cannot be scored; the message says what, where, and how to fix it."""


#: Everything the CLI reports as one clear line instead of a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (EvalError, DataError, SampleError, BoxError, FileNotFoundError)
