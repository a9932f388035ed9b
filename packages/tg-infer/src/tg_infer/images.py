"""Opening images safely: size and format limits before decoding, and where files may come from.

Only an image's header is read before its size is checked, so a decompression bomb (a small file
that decodes to billions of pixels) is refused without being decoded. Files are read only from
directories the operator allows; remote URLs are never fetched.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from tg_infer.errors import ImageRejected

#: Formats a camera, a browser or a screenshot tool produces; anything else is refused.
DEFAULT_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP"})
DEFAULT_MAX_PIXELS = 36_000_000  # 6000 x 6000
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: frozenset[str] = field(default=DEFAULT_FORMATS)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), where: str = "image") -> Image.Image:
    """Decode ``data`` as RGB after checking its format and pixel count from the header alone."""
    if len(data) > limits.max_file_bytes:
        raise ImageRejected(
            f"{where}: {len(data)} bytes exceeds the limit of {limits.max_file_bytes} bytes", status=413,
            code="image_too_large",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(f"{where}: refused as a decompression bomb ({e})", status=413, code="image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageRejected(
            f"{where}: not a readable image; send one of {sorted(limits.formats)}", status=415,
            code="unsupported_image_format",
        ) from None
    if image.format not in limits.formats:
        raise ImageRejected(
            f"{where}: format {image.format} is not accepted; send one of {sorted(limits.formats)}", status=415,
            code="unsupported_image_format",
        )
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected(f"{where}: image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"{where}: {width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}; "
            "downscale the image first",
            status=413,
            code="image_too_large",
        )
    try:
        image.seek(0)
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageRejected(f"{where}: the image data is broken ({e})", code="invalid_image") from None


class PathPolicy:
    """Which local files a request may name: only regular files under ``allowed_dirs``.

    Paths are resolved (``..`` and symlinks followed) before the check, so neither a traversal nor
    a symlink inside an allowed directory can reach a file outside it.
    """

    def __init__(self, allowed_dirs: Sequence[str | Path] = ()) -> None:
        roots = []
        for d in allowed_dirs:
            p = Path(d).expanduser()
            if not p.is_dir():
                raise ImageRejected(f"allowed image directory {d} does not exist or is not a directory")
            roots.append(p.resolve())
        self.roots: tuple[Path, ...] = tuple(roots)

    def check(self, path: str, where: str = "image") -> Path:
        if not self.roots:
            raise ImageRejected(
                f"{where}: reading files is disabled on this server; send the image as a data URL "
                "(or start the server with --allow-dir DIR)",
                status=403,
                code="path_not_allowed",
            )
        raw = Path(path)
        if not raw.is_absolute():
            raise ImageRejected(f"{where}: file path {path!r} must be absolute", status=403, code="path_not_allowed")
        real = raw.resolve()
        if not any(real.is_relative_to(root) for root in self.roots):
            raise ImageRejected(
                f"{where}: {path!r} is outside the directories this server may read", status=403,
                code="path_not_allowed",
            )
        if not real.is_file():
            raise ImageRejected(f"{where}: no file at {path!r}", status=404, code="image_not_found")
        return real

    def read(self, path: str, limits: ImageLimits, where: str = "image") -> bytes:
        real = self.check(path, where)
        # O_NOFOLLOW: the resolved path must not have become a symlink since it was checked.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(limits.max_file_bytes + 1)
        return data


def _data_url_bytes(url: str, where: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ImageRejected(f"{where}: malformed data URL (no ',' before the data)")
    if not header.endswith(";base64"):
        raise ImageRejected(f"{where}: data URLs must be base64-encoded (data:image/png;base64,...)")
    mediatype = header[len("data:") : -len(";base64")]
    if mediatype and not mediatype.startswith("image/"):
        raise ImageRejected(f"{where}: data URL media type {mediatype!r} is not an image", status=415,
                            code="unsupported_image_format")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected(f"{where}: data URL payload is not valid base64") from None


def image_from_url(
    url: str, policy: PathPolicy, limits: ImageLimits = ImageLimits(), where: str = "image"
) -> Image.Image:
    """An image from a ``data:`` URL, or from a ``file://`` URL or path the policy allows."""
    if not isinstance(url, str) or not url:
        raise ImageRejected(f"{where}: image URL must be a non-empty string")
    if url.startswith("data:"):
        data = _data_url_bytes(url, where)
        if len(data) > limits.max_file_bytes:
            raise ImageRejected(f"{where}: image of {len(data)} bytes exceeds {limits.max_file_bytes} bytes",
                                status=413, code="image_too_large")
        return decode_image(data, limits, where)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ImageRejected(f"{where}: file URLs must name a local file (file:///path)", status=403,
                                code="path_not_allowed")
        path = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise ImageRejected(
            f"{where}: {parsed.scheme}:// URLs are not fetched; send the image as a data URL",
            code="remote_url_refused",
        )
    else:
        path = url
    return decode_image(policy.read(path, limits, where), limits, where)


def open_image(source: str | Path | Image.Image, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """A local image for trusted callers (the CLI, the library): a PIL image passes through as RGB."""
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    path = Path(source)
    if not path.is_file():
        raise ImageRejected(f"image {source} does not exist", status=404, code="image_not_found")
    with path.open("rb") as f:
        data = f.read(limits.max_file_bytes + 1)
    return decode_image(data, limits, str(source))
