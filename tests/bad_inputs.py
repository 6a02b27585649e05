"""A corpus of bad and unusual image files, generated here (nothing is downloaded).

Shared by the search API tests (tests/test_robustness.py) and the page tests (tests/test_app.py).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8), "RGB")


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return _encode(_photo(), "JPEG", exif=exif)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _bomb_png() -> bytes:
    return _encode(Image.new("1", (20000, 20000)), "PNG")  # 400 megapixels in a few kilobytes


def bad_input_corpus(max_bytes: int) -> dict[str, tuple[bytes, bool]]:
    """name -> (file bytes, whether the search answers it); every other case must raise InvalidImageError."""
    return {
        "empty file": (b"", False),
        "text renamed .jpg": (b"this is not an image, just text\n" * 20, False),
        "truncated JPEG": (_encode(_photo(), "JPEG")[:300], False),
        "corrupt PNG": (_encode(_photo(), "PNG")[:60] + b"\x00garbage" * 40, False),
        "CMYK JPEG": (_encode(_photo().convert("CMYK"), "JPEG"), True),
        "16-bit PNG": (_encode(Image.fromarray(np.full((64, 48), 40000, np.uint16)), "PNG"), True),
        "RGBA PNG": (_encode(Image.new("RGBA", (50, 70), (10, 200, 30, 90)), "PNG"), True),
        "animated GIF": (_animated_gif(), True),
        "EXIF-rotated JPEG": (_rotated_jpeg(), True),
        "1x1 image": (_encode(Image.new("RGB", (1, 1), "white"), "PNG"), True),
        "20000x20000 image (decompression bomb)": (_bomb_png(), False),
        "over the size cap": (b"\xff\xd8\xff\xe0" + bytes(max_bytes + 10), False),
        "PDF": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", False),
        "HEIC": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200), False),
    }
