"""What a shopper's photo does that a catalogue photo does not: the alterations the alterations study
measures (study/alterations.py) and the features stage trains on (``features.shopper_alterations``,
train split only). Each takes a decoded RGB photo and a seeded generator, so a view is reproducible.

  jpeg        re-encoded at JPEG quality 25-40 (a phone app's upload compression)
  blur        Gaussian blur, radius 0.8-1.5 px (camera shake, focus)
  rotate      rotated 4-10 degrees either way, corners filled white
  crop        off-centre crop keeping 70-85% of each side
  background  the photo's near-white background (the near-white region connected to its border, not white
              parts of the product) replaced by one random saturated colour
  lighting    brightness 0.7-1.3 and a white-balance shift (red and blue gains 0.85-1.15)
  downscaled  upscaled 6x (bicubic) and saved as a large JPEG (quality 85), then decoded the way uploads are
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image, ImageFilter

from lookalike.model.preprocessing import load_image


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return load_image(buffer.getvalue(), max_side=224)


def jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _jpeg(image, int(rng.integers(25, 41)))


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.5)))


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = rng.uniform(4, 10) * rng.choice([-1, 1])
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))


def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    w, h = round(width * rng.uniform(0.7, 0.85)), round(height * rng.uniform(0.7, 0.85))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return image.crop((left, top, left + w, top + h))


def border_background(pixels: np.ndarray) -> np.ndarray:
    """bool (rows, cols): the near-white pixels (>= 235 in every channel) 4-connected to the photo's border, the
    backdrop and any white padding; near-white pixels the product encloses (a white shirt's body) are left out."""
    framed = np.pad((pixels >= 235).all(axis=2), 1, constant_values=True).astype(np.uint8)
    _, labels = cv2.connectedComponents(framed, connectivity=4)  # the frame joins every border region into one
    return (labels == labels[0, 0])[1:-1, 1:-1]


def background(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The backdrop recoloured, the product kept: recolouring every near-white pixel would paint a white
    garment too while its label still says White."""
    pixels = np.asarray(image).copy()
    colour = rng.integers(0, 256, 3)
    colour[rng.integers(0, 3)] = rng.integers(0, 60)  # saturated: one channel low
    pixels[border_background(pixels)] = colour
    return Image.fromarray(pixels)


def lighting(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    gains = np.array([rng.uniform(0.85, 1.15), 1.0, rng.uniform(0.85, 1.15)]) * rng.uniform(0.7, 1.3)
    return Image.fromarray(np.clip(np.asarray(image, np.float32) * gains, 0, 255).astype(np.uint8))


def downscaled(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    large = image.resize((image.width * 6, image.height * 6), Image.Resampling.BICUBIC)
    return _jpeg(large, 85)


ALTERATIONS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "jpeg": jpeg, "blur": blur, "rotate": rotate, "crop": crop, "background": background, "lighting": lighting,
    "downscaled": downscaled,
}
