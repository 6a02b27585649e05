"""Image decoding and preprocessing: the one path every image takes.

Training, embedding, evaluation and search all call :func:`preprocess`, so a
query photo is treated exactly like the catalogue photos it is compared with.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

ImageSource = str | Path | bytes | bytearray | memoryview

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP; beyond that decoding alone costs seconds and GBs
WHITE = (255, 255, 255)

# Per-backbone input normalisation, applied to RGB values in [0, 255].
NORMALISATIONS = ("lite", "caffe")


class InvalidImageError(ValueError):
    """The input cannot be used as an image; the message says why, for a human."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw photos become model input: side length, resize mode, normalisation."""

    image_size: int = 224
    resize_mode: str = "pad"  # "pad" to a white square, or "stretch"
    normalisation: str = "lite"

    def __post_init__(self) -> None:
        if self.resize_mode not in ("pad", "stretch"):
            raise ValueError(f"resize_mode must be 'pad' or 'stretch', not {self.resize_mode!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, not {self.normalisation!r}")
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be between 32 and 1024, not {self.image_size}")


def _read_bytes(source: ImageSource, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"image file not found: {path}")
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidImageError(f"{path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB")
        data = path.read_bytes()
    if not data:
        raise InvalidImageError("the file is empty")
    if len(data) > max_bytes:
        raise InvalidImageError(f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB")
    return data


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is flattened onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit modes span 0..65535; PIL's 32-bit "I" is ambiguous, so judge it by its peak.
        wide = image.mode != "I" or (array.max() if array.size else 0) > 255
        scale = 255.0 / 65535.0 if wide else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        array = (array - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(array)
        image = Image.fromarray(array.astype(np.uint8), mode="L")
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    source: ImageSource,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode a path or bytes into an upright 8-bit RGB image.

    ``draft_size`` lets a large JPEG decode at a reduced scale that still covers
    that many pixels a side (libjpeg's DCT scaling): a phone photo decodes several
    times faster, and images already smaller are decoded exactly as without it.

    Raises :class:`InvalidImageError` for anything that is not a usable image
    (empty, not an image, truncated, too large, absurd dimensions).
    """
    data = _read_bytes(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width < 1 or height < 1:
                raise InvalidImageError("the image has no pixels")
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"the image is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels"
                )
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated: the first frame stands for the item
            if draft_size is not None and image.format == "JPEG":
                image.draft(image.mode, (draft_size, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except InvalidImageError:
        raise
    except UnidentifiedImageError as error:
        raise InvalidImageError("the file is not an image in a supported format (JPEG, PNG, WebP, BMP, GIF)") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidImageError(f"the image is too large to decode safely: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImageError(f"the image is damaged or truncated and cannot be decoded ({error})") from error


def fit_square(image: Image.Image, image_size: int, resize_mode: str) -> Image.Image:
    """Pad to a centred white square (keeps aspect) or stretch, then resize."""
    if resize_mode == "pad":
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
    if normalisation == "lite":  # EfficientNet-Lite: (x - 127) / 128
        return (pixels - 127.0) / 128.0
    if normalisation == "caffe":  # ResNet50 (keras.applications): BGR, ImageNet mean removed
        return pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    raise ValueError(f"unknown normalisation {normalisation!r}")


def image_to_input(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """An RGB PIL image to a float32 (image_size, image_size, 3) model input."""
    square = fit_square(image, spec.image_size, spec.resize_mode)
    return normalise(np.asarray(square, dtype=np.uint8), spec.normalisation)


def preprocess(source: ImageSource, spec: PreprocessSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Path or bytes to a float32 (image_size, image_size, 3) model input."""
    return image_to_input(load_image(source, max_bytes=max_bytes, draft_size=spec.image_size), spec)


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A cheap random view of a product photo: flip, crop, small colour jitter."""
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    scale = rng.uniform(0.8, 1.0)
    width, height = image.size
    crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = image.crop((left, top, left + crop_w, top + crop_h))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.9, 1.1))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.9, 1.1))
    return ImageEnhance.Color(image).enhance(rng.uniform(0.9, 1.1))


def iter_input_batches(
    paths: list[str],
    spec: PreprocessSpec,
    batch_size: int,
    augment_seed: int | None = None,
    workers: int = 1,
):
    """Yield float32 (batch, size, size, 3) inputs in order, decoding ahead on a thread.

    One worker is enough: decoding a catalogue photo costs about a tenth of its forward
    pass, and on 2 cores a second decoder only competes with the model (bench/throughput.py).

    With ``augment_seed`` each image gets one random :func:`augment` view, seeded
    per image, so the result does not depend on threading or batch size.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(position: int) -> np.ndarray:
        image = load_image(paths[position], draft_size=spec.image_size)
        if augment_seed is not None:
            image = augment(image, np.random.default_rng([augment_seed, position]))
        return image_to_input(image, spec)

    def batch(start: int) -> np.ndarray:
        return np.stack([one(i) for i in range(start, min(start + batch_size, len(paths)))])

    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(batch, s) for s in starts[:2]]
        for i in range(len(starts)):
            ready = pending.pop(0).result()
            if i + 2 < len(starts):
                pending.append(pool.submit(batch, starts[i + 2]))
            yield ready
