"""Views of catalogue photos for the model: random training views (flip, crop, jitter, a shopper alteration)
and batched, ordered model inputs decoded ahead on a thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from lookalike.model.alterations import ALTERATIONS
from lookalike.model.preprocessing import PreprocessSpec, image_to_input, load_image


def augment(image: Image.Image, rng: np.random.Generator, alterations: tuple[str, ...] = (),
            alteration_rate: float = 0.5) -> Image.Image:
    """A cheap random view of a product photo: flip, crop, small colour jitter, and with probability
    ``alteration_rate`` one of the shopper-photo ``alterations`` (names in :mod:`lookalike.model.alterations`)."""
    if alterations and rng.random() < alteration_rate:
        image = ALTERATIONS[alterations[int(rng.integers(len(alterations)))]](image, rng)
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
    alterations: tuple[str, ...] = (),
    alteration_rate: float = 0.5,
):
    """Yield float32 (batch, size, size, 3) inputs in order, decoding ahead on a thread.

    One worker is enough: decoding a catalogue photo costs about a tenth of its forward
    pass, and on 2 cores a second decoder only competes with the model (bench/throughput.py).

    With ``augment_seed`` each image gets one random :func:`augment` view, seeded
    per image, so the result does not depend on threading or batch size; ``alterations`` and
    ``alteration_rate`` as in :func:`augment`.
    """
    def one(position: int) -> np.ndarray:
        image = load_image(paths[position], max_side=spec.image_size)
        if augment_seed is not None:
            image = augment(image, np.random.default_rng([augment_seed, position]), alterations, alteration_rate)
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
