from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tg_infer.errors import ImageRejected
from tg_infer.images import ImageLimits, PathPolicy, decode_image, image_from_url


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels: tiny on disk, huge if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def test_decoding_checks_the_header_before_the_pixels() -> None:
    ok = decode_image(png_bytes(Image.new("RGBA", (30, 20), (1, 2, 3, 255))))
    assert ok.mode == "RGB" and ok.size == (30, 20)
    with pytest.raises(ImageRejected, match="exceeds the limit of 500") as e:
        decode_image(png_bytes(Image.new("RGB", (30, 20))), ImageLimits(max_pixels=500))
    assert e.value.status == 413
    for w, h in [(40_000, 40_000), (9_000, 9_000)]:  # beyond PIL's own bomb guard, and beyond ours only
        with pytest.raises(ImageRejected) as e:
            decode_image(bomb_png(w, h))
        assert e.value.status == 413 and e.value.code == "image_too_large"


def test_formats_outside_the_list_are_refused() -> None:
    with pytest.raises(ImageRejected, match="format TIFF is not accepted") as e:
        decode_image(png_bytes(Image.new("RGB", (4, 4)), "TIFF"))
    assert e.value.status == 415
    with pytest.raises(ImageRejected, match="not a readable image"):
        decode_image(b"<html>not an image</html>")
    with pytest.raises(ImageRejected, match="broken"):
        decode_image(png_bytes(Image.new("RGB", (64, 64)))[:60])


def test_data_urls() -> None:
    image = image_from_url(data_url(png_bytes(Image.new("RGB", (5, 7), (9, 9, 9)))), PathPolicy())
    assert image.size == (5, 7) and image.getpixel((0, 0)) == (9, 9, 9)
    with pytest.raises(ImageRejected, match="base64"):
        image_from_url("data:image/png,rawbytes", PathPolicy())
    with pytest.raises(ImageRejected, match="not valid base64"):
        image_from_url("data:image/png;base64,@@@@", PathPolicy())
    with pytest.raises(ImageRejected, match="not an image"):
        image_from_url(data_url(b"hello", "text/plain"), PathPolicy())


def test_remote_urls_are_never_fetched() -> None:
    for url in ("http://127.0.0.1:1/a.png", "https://example.com/a.png", "ftp://host/a.png", "s3://bucket/a.png"):
        with pytest.raises(ImageRejected, match="not fetched") as e:
            image_from_url(url, PathPolicy())
        assert e.value.code == "remote_url_refused"


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    Image.new("RGB", (3, 3), (1, 1, 1)).save(allowed / "sub" / "ok.png")
    Image.new("RGB", (3, 3), (2, 2, 2)).save(outside / "secret.png")
    os.symlink(outside / "secret.png", allowed / "link.png")
    os.symlink(outside, allowed / "dirlink")
    os.symlink(allowed / "sub" / "ok.png", allowed / "inside_link.png")
    return {"allowed": allowed, "outside": outside}


def test_paths_only_inside_allowed_directories(tree: dict[str, Path]) -> None:
    allowed, outside = tree["allowed"], tree["outside"]
    policy = PathPolicy([allowed])
    assert image_from_url(str(allowed / "sub" / "ok.png"), policy).getpixel((0, 0)) == (1, 1, 1)
    assert image_from_url(f"file://{allowed}/sub/ok.png", policy).size == (3, 3)
    assert image_from_url(str(allowed / "inside_link.png"), policy).size == (3, 3)  # a link that stays inside
    refused = [
        str(outside / "secret.png"),
        f"{allowed}/../secret/secret.png",  # traversal
        f"file://{allowed}/sub/../../secret/secret.png",
        f"file://{allowed}/%2e%2e/secret/secret.png",  # percent-encoded traversal
        str(allowed / "link.png"),  # a symlink out
        str(allowed / "dirlink" / "secret.png"),  # through a symlinked directory
        "sub/ok.png",  # relative
        "file://otherhost/etc/passwd",
    ]
    for url in refused:
        with pytest.raises(ImageRejected) as e:
            image_from_url(url, policy)
        assert e.value.status == 403, url
    with pytest.raises(ImageRejected) as e:
        image_from_url(str(allowed / "sub" / "missing.png"), policy)
    assert e.value.status == 404


def test_no_allowed_directory_means_no_files(tree: dict[str, Path]) -> None:
    with pytest.raises(ImageRejected, match="reading files is disabled") as e:
        image_from_url(str(tree["allowed"] / "sub" / "ok.png"), PathPolicy())
    assert e.value.status == 403
    with pytest.raises(ImageRejected, match="does not exist"):
        PathPolicy([tree["allowed"] / "nope"])
