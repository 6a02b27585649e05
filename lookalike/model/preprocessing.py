"""Image decoding and preprocessing: the one path every image takes.

Training, embedding, evaluation and search all call :func:`preprocess`, so a
query photo is treated exactly like the catalogue photos it is compared with.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter, JpegImagePlugin, UnidentifiedImageError

ImageSource = str | Path | bytes | bytearray | memoryview

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# Pixels actually decoded (a JPEG counts at its reduced draft scale, so a 48 MP phone photo is fine). At 16 MP the
# widest mode we decode (RGBA, 4 bytes) plus the one premultiplied copy a resize makes stays near 130 MB.
DEFAULT_MAX_PIXELS = 16_000_000
# Dimensions read from the header before anything is decoded; Pillow's own decompression-bomb limit.
MAX_SOURCE_PIXELS = Image.MAX_IMAGE_PIXELS
WHITE = (255, 255, 255)

# What we decode, by Pillow format name, with the file extensions a browser offers for it. Every other decoder
# Pillow has (TIFF, PCX, SGI, TGA, DDS, QOI, JPEG 2000, ICO, EPS, ...) stays unreachable from an upload.
SUPPORTED_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": ("jpg", "jpeg"),
    "PNG": ("png",),
    "WEBP": ("webp",),
    "BMP": ("bmp",),
    "GIF": ("gif",),
}
SUPPORTED_FORMATS_TEXT = "JPEG, PNG, WebP, BMP or GIF"
UPLOAD_EXTENSIONS: tuple[str, ...] = tuple(ext for exts in SUPPORTED_FORMATS.values() for ext in exts)

_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                   7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}

# Per-backbone input normalisation, applied to RGB values in [0, 255].
NORMALISATIONS = ("lite", "caffe")


class InvalidImageError(ValueError):
    """The input cannot be used as an image; the message says why, for a human."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw photos become model input: side length, resize mode, normalisation; a query's blur restoration."""

    image_size: int = 224
    resize_mode: str = "pad"  # "pad" to a white square, or "stretch"
    normalisation: str = "lite"
    sharpen_queries_below: float = 0.0  # a query photo whose sharpness() is below this is sharpened (0: never)

    def __post_init__(self) -> None:
        if self.resize_mode not in ("pad", "stretch"):
            raise ValueError(f"resize_mode must be 'pad' or 'stretch', not {self.resize_mode!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, not {self.normalisation!r}")
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be between 32 and 1024, not {self.image_size}")
        if not self.sharpen_queries_below >= 0:
            raise ValueError(f"sharpen_queries_below must be a number at least 0, not {self.sharpen_queries_below}")


def _over_the_limit(size: int, limit: int) -> str:
    """'12.3 MB; the limit is 10.0 MB', in bytes where one decimal would print the two sizes the same."""
    if f"{size / 1e6:.1f}" == f"{limit / 1e6:.1f}":
        return f"{size:,} bytes; the limit is {limit:,} bytes"
    return f"{size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB"


def _read_file(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes, refused past ``max_bytes`` before reading: one open and one fstat (pathlib's
    is_file, stat and read_bytes cost a photo query 0.11 ms). Non-blocking open, so a FIFO is refused, never
    waited on."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise InvalidImageError(f"image file not found: {path}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise InvalidImageError(f"image file not found: {path}")
        if status.st_size > max_bytes:
            raise InvalidImageError(f"{os.path.basename(path)} is {_over_the_limit(status.st_size, max_bytes)}")
        with open(descriptor, "rb", closefd=False) as stream:
            return stream.read(max_bytes + 1)  # a file grown since fstat is caught by the length check after
    finally:
        os.close(descriptor)


def _read_bytes(source: ImageSource, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = _read_file(os.fspath(source), max_bytes)
    if not data:
        raise InvalidImageError("the file is empty")
    if len(data) > max_bytes:
        raise InvalidImageError(f"the file is {_over_the_limit(len(data), max_bytes)}")
    return data


def _sixteen_bit_to_8(image: Image.Image) -> Image.Image:
    """16-bit (and PIL's 32-bit "I") grey to 8-bit L, or LA when a tRNS colour key marks transparent pixels.

    Integer arithmetic on the decoded array: v // 257 equals v * 255 / 65535 truncated, without a float64 copy.
    PIL's "I" is ambiguous (8-bit data widened, or 16-bit), so it is judged by its peak.
    """
    values = np.asarray(image)
    wide = image.mode != "I" or (int(values.max()) if values.size else 0) > 255
    grey = (values // 257 if wide else np.clip(values, 0, 255)).astype(np.uint8)
    key = image.info.get("transparency")
    if isinstance(key, int):
        alpha = np.where(values == key, 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey, alpha], axis=-1))  # (h, w, 2) uint8: LA
    return Image.fromarray(grey)  # (h, w) uint8: L


def _resizable(image: Image.Image) -> Image.Image:
    """A mode that resizes with a real filter and keeps transparency: L, LA, RGB, RGBA, CMYK, ...

    Palette images become RGBA, colour keys (PNG tRNS in L and RGB images) become alpha, so transparent
    pixels land on white like alpha-transparent ones do.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_8(image)
    if image.mode in ("P", "PA"):
        return image.convert("RGBA")
    if image.info.get("transparency") is not None and image.mode in ("1", "L", "RGB"):
        return image.convert("LA" if image.mode in ("1", "L") else "RGBA")
    if image.mode == "1":
        return image.convert("L")
    if image.mode not in ("L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"):
        raise InvalidImageError(f"images with {image.mode} pixels are not supported")
    return image


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    """Scale down (never up) so the longest side is at most ``max_side``; extreme shapes keep at least 1 px."""
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return image
    size = (max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest)))
    # reducing_gap: a cheap box reduction first, then bicubic over at most 3x the target (large uploads).
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any resizable mode to 8-bit RGB; transparency is flattened onto white."""
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _exif_transpose(image: Image.Image) -> Image.Transpose | None:
    """The transpose that displays the image upright, from its EXIF orientation (none if absent or unreadable)."""
    try:
        return _EXIF_TRANSPOSE.get(image.getexif().get(0x0112))
    except Exception:  # a damaged EXIF block only loses the orientation, never the photo
        return None


def load_image(
    source: ImageSource,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
) -> Image.Image:
    """Decode a path or bytes into an upright 8-bit RGB image, at most ``max_side`` pixels a side if given.

    Cost is bounded for any file within ``max_bytes``: only the formats of :data:`SUPPORTED_FORMATS` are
    decoded, dimensions are checked from the header before decoding, at most ``max_pixels`` are decoded
    (a JPEG decodes at the smallest DCT scale still covering ``max_side``, so a phone photo is cheap), and
    the image is shrunk to ``max_side`` in its own mode before any colour conversion or padding. Images
    already within ``max_side`` decode exactly as without it.

    Raises :class:`InvalidImageError` for anything that is not a usable image
    (empty, not an image, unsupported format, truncated, too large, absurd dimensions).
    """
    data = _read_bytes(source, max_bytes)
    try:
        image = Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS))
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImageError("the image has no pixels")
        if width * height > MAX_SOURCE_PIXELS:
            raise InvalidImageError(f"the image is {width}x{height} pixels; its dimensions are too large to decode "
                                    "safely")
        if max_side is not None and isinstance(image, JpegImagePlugin.JpegImageFile):
            image.draft(image.mode, (max_side, max_side))
        if image.size[0] * image.size[1] > max_pixels:
            raise InvalidImageError(
                f"the image is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels"
            )
        image.load()  # the first frame of an animation stands for the item
        transpose = _exif_transpose(image)
        image = _resizable(image)
        if max_side is not None:
            image = shrink(image, max_side)
        image = _to_rgb(image)
        return image.transpose(transpose) if transpose is not None else image
    except InvalidImageError:
        raise
    except UnidentifiedImageError as error:
        raise InvalidImageError(
            f"the file is not an image in a supported format ({SUPPORTED_FORMATS_TEXT})") from error
    except Image.DecompressionBombError as error:  # dimensions past MAX_SOURCE_PIXELS, seen by Pillow's open
        raise InvalidImageError("the image's dimensions are too large to decode safely") from error
    except MemoryError as error:
        raise InvalidImageError("the image is too large to decode") from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as error:
        raise InvalidImageError(f"the image is damaged or truncated and cannot be decoded ({error})") from error


def fit_square(image: Image.Image, image_size: int, resize_mode: str) -> Image.Image:
    """Pad to a centred white square (keeps aspect) or stretch, then resize.

    An image larger than the model input is shrunk first, so padding never builds a canvas larger
    than the input (a 40000 x 1 strip would otherwise need a 40000 x 40000 one).
    """
    if resize_mode == "pad":
        image = shrink(image, image_size)
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    # reducing_gap only acts when shrinking by more than 3x (large uploads); catalogue-size photos are
    # upsampled and resized exactly as without it.
    return image.resize((image_size, image_size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def normalise(pixels_uint8: np.ndarray, normalisation: str) -> np.ndarray:
    """RGB uint8 (..., 3) to the backbone's float32 input range."""
    pixels = pixels_uint8.astype(np.float32)
    # "lite" works in place on astype's copy (the same values): each fresh 600 KB array of a 224 px photo costs its
    # page faults, and two more took a photo's normalise from 0.07 ms to 0.7 ms when glibc had returned the memory.
    if normalisation == "lite":  # EfficientNet-Lite: (x - 127) / 128
        pixels -= 127.0
        pixels /= 128.0
        return pixels
    if normalisation == "caffe":  # ResNet50 (keras.applications): BGR, ImageNet mean removed
        return pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    raise ValueError(f"unknown normalisation {normalisation!r}")


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian of the grey image: low for a blurred photo (fashion-5k's catalogue photos:
    1st percentile 192, median 2168; the same photos through the blur alteration: median 92)."""
    grey = np.asarray(image.convert("L"))
    _, deviation = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))  # exact in 16 bits: |value| <= 4 * 255
    return float(deviation[0, 0]) ** 2


def restore_blur(image: Image.Image, sharpen_below: float) -> Image.Image:
    """An unsharp mask (radius 1 px, 200%) on a photo measured blurred, the photo itself otherwise.

    A blurred shopper photo loses the edges the backbone keys on; restoring them only when the photo measures
    blurred keeps sharp photos as they were (sharpening every query costs clean queries more than it wins
    back). Queries only: restoring the catalogue's and the training views' blurred photos too cost every metric
    on fashion-5k. The threshold and strength were chosen on fashion-5k's validation split (docs/looks.md).
    """
    if sharpen_below <= 0 or sharpness(image) >= sharpen_below:
        return image
    return image.filter(ImageFilter.UnsharpMask(radius=1, percent=200, threshold=0))


def image_to_input(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """An RGB PIL image to a float32 (image_size, image_size, 3) model input: catalogue photos, training views."""
    square = fit_square(image, spec.image_size, spec.resize_mode)
    return normalise(np.asarray(square, dtype=np.uint8), spec.normalisation)


def query_input(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """A query photo to a float32 (image_size, image_size, 3) model input: :func:`image_to_input` after
    :func:`restore_blur`."""
    return image_to_input(restore_blur(image, spec.sharpen_queries_below), spec)


def preprocess(source: ImageSource | Image.Image, spec: PreprocessSpec,
               max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """A query's path, bytes or an image :func:`load_image` decoded to a float32 (image_size, image_size, 3) model
    input (:func:`query_input`)."""
    if isinstance(source, Image.Image):
        return query_input(source.convert("RGB"), spec)
    return query_input(load_image(source, max_bytes=max_bytes, max_side=spec.image_size), spec)
