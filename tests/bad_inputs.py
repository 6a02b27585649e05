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


# ---------------------------------------------------------------- extreme shapes and modes
# Small files that decode to enormous or absurdly shaped rasters. Each is answered or refused with
# InvalidImageError, at bounded cost; bench/hostile_uploads.py measures memory and time per file.

def _gif_header_only(width: int, height: int) -> bytes:
    """A GIF that claims width x height and then ends: refused from the header, never decoded."""
    import struct

    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x08\x02\x4c\x01\x00\x3b"
    return screen + descriptor


def _smooth(width: int, height: int, mode: str) -> Image.Image:
    """A compressible gradient in ``mode``, so a huge raster still fits the byte cap."""
    row = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)
    grey = Image.fromarray(np.broadcast_to(row, (height, width)).copy())
    if mode == "I;16":
        return Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    if mode == "P":  # a coloured palette: a grey one makes Pillow open the GIF as L
        return Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey)).quantize(64)
    return grey.convert(mode)


def extreme_corpus() -> dict[str, tuple[bytes, bool]]:
    """name -> (file bytes, whether the search answers it) for extreme shapes and the widest modes.

    Answered: strips (long but few pixels) and rasters at the 16 MP decode limit. Refused: more than
    16 MP to decode (a JPEG counts at its draft scale), or dimensions past Pillow's bomb limit.
    """
    strip_40k = Image.new("L", (40000, 1), 90)
    strip_65k = Image.new("L", (65535, 2), 90)
    tall = Image.new("L", (1, 40_000_000), 90)
    wide_40mp = _smooth(40000, 1000, "L")
    return {
        "40000x1 PNG": (_encode(strip_40k, "PNG"), True),
        "40000x1 GIF": (_encode(strip_40k, "GIF"), True),
        "16383x1 WebP (WebP's widest)": (_encode(Image.new("RGB", (16383, 1), "red"), "WEBP", lossless=True), True),
        "1x40000000 PNG": (_encode(tall, "PNG"), False),
        "65535x2 PNG": (_encode(strip_65k, "PNG"), True),
        "65535x2 GIF": (_encode(strip_65k, "GIF"), True),
        "30000x30000 PNG": (_encode(Image.new("1", (30000, 30000)), "PNG"), False),
        "30000x30000 GIF header": (_gif_header_only(30000, 30000), False),
        "40000x1000 PNG": (_encode(wide_40mp, "PNG"), False),
        "40000x1000 GIF": (_encode(wide_40mp, "GIF"), False),
        "40000x1000 JPEG (draft-decoded at 1/4)": (_encode(wide_40mp.convert("RGB"), "JPEG", quality=50), True),
        "16383x1000 WebP": (_encode(_smooth(16383, 1000, "RGB"), "WEBP", quality=50), False),
        "4000x4000 RGBA PNG (at the limit)": (_encode(_smooth(4000, 4000, "RGBA"), "PNG"), True),
        "4000x4000 16-bit PNG (at the limit)": (_encode(_smooth(4000, 4000, "I;16"), "PNG"), True),
        "4000x4000 palette GIF (at the limit)": (_encode(_smooth(4000, 4000, "P"), "GIF"), True),
    }
