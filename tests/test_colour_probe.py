"""study/colour_probe.py: the probe's inputs measure the product's own colour, not the white backdrop."""

from __future__ import annotations

import numpy as np

from study.colour_probe import chroma_statistics, foreground, palette_histogram


def _product_on_white(rgb: tuple[int, int, int], side: int = 28) -> np.ndarray:
    """float32 (side, side, 3): a square of ``rgb`` in the middle of a white photo."""
    image = np.full((side, side, 3), 255, np.uint8)
    image[8:20, 8:20] = rgb
    return image.astype(np.float32) / 255.0


def test_foreground_is_the_product_and_not_the_border_connected_white() -> None:
    mask = foreground(_product_on_white((90, 50, 30))[None])[0]
    assert mask[8:20, 8:20].min() > 0.99
    assert mask[:8].max() < 0.05 and mask[20:].max() < 0.05  # the soft mask's small leak


def test_finer_palette_histogram_is_a_unit_vector_of_the_product_alone() -> None:
    pixels = np.stack([_product_on_white((200, 20, 20)), _product_on_white((20, 20, 200))])
    histogram = palette_histogram(pixels, foreground(pixels), levels=6, softness=0.10)
    assert histogram.shape == (2, 216)
    np.testing.assert_allclose((histogram**2).sum(1), 1.0, atol=1e-4)  # sqrt of a distribution
    red, blue = histogram.argmax(1)
    assert red // 36 == 4 and blue % 6 == 4  # red slowest: the red product's bin is high in red, the blue's in blue
    unmasked = palette_histogram(pixels, np.ones_like(foreground(pixels)), levels=6, softness=0.10)
    assert unmasked[0, 215] ** 2 > 0.5  # counted, the white backdrop is most of the photo ...
    assert histogram[0, 215] ** 2 < 0.1  # ... and the mask leaves only the soft mask's leak of it


def test_chroma_statistics_tell_dark_brown_from_black() -> None:
    pixels = np.stack([_product_on_white((60, 38, 25)), _product_on_white((30, 30, 30))])
    stats = chroma_statistics(pixels, foreground(pixels))
    assert stats.shape == (2, 6 * 10)
    log_red_green = stats[:, 0]  # whole photo, mean log R/G
    assert log_red_green[0] > 0.3 and abs(log_red_green[1]) < 1e-3
    assert abs(stats[0, 2] - stats[1, 2]) < 0.1  # alike in lightness: only chromaticity tells them apart
