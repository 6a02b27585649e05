"""A colour descriptor of the product's own pixels, computed inside the model.

Pooled CNN features are trained (on ImageNet) to ignore colour, so a head trained on them alone
ranks a black handbag beside a brown one. This layer gives the head what the pixels say: soft
histograms over a fixed 4 x 4 x 4 RGB palette of the photo's foreground, square-rooted (Hellinger) so
that a small accent still counts beside a large area: one for the whole photo and one for each cell of a
3 x 3 grid, so the head can tell the shirt in the middle from the trousers below it (on fashion-19k the
grid lifted type+colour P@5 from 0.42 to 0.46 over the global histogram alone: docs/looks.md).

The background is the near-white region connected to the border of the pooled photo: catalogue photos
stand on white, and the padding to a square is white and touches the border. Everything else is
foreground, near-white pixels enclosed by the product included, so a white shirt is described by its
whites and not only by its grey folds. Connected means 4-connected (edge neighbours), so a one-pixel
diagonal outline still closes the product. The mask is soft (a geodesic reconstruction of the soft
near-white mask, :func:`border_background`) so the layer and this reference agree to float precision. A
product that touches every border leaves no background (the whole photo is foreground); an all-white
photo is background, weighted by the sigmoid's small leak.

The model computes it in a Keras layer with no weights (:class:`lookalike.model.network.ColourDescriptor`), so the
exported LiteRT model computes it too: the query path, the Ray job and the features stage all get the same
numbers from the same file. This module holds its definition and a numpy reference, and imports no TensorFlow.
"""

from __future__ import annotations

import numpy as np

PALETTE_LEVELS = 4
COLOUR_BINS = PALETTE_LEVELS**3  # one bin per palette colour
GRID = 3  # cells a side of the spatial grid
COLOUR_FEATURES = COLOUR_BINS * (1 + GRID * GRID)  # the descriptor's length: whole photo, then each cell
POOLED_SIDE = 28  # the photo is averaged down to about this many pixels a side first
SOFTNESS = 0.15  # Gaussian width of a palette bin, in RGB units of [0, 1]
WHITE_MARGIN = 0.1  # a pixel whose darkest channel is within this of white is near-white


def reconstruction_steps(rows: int, cols: int) -> int:
    """Growth steps of the background from the border: one pixel each, rows + cols reaches any pixel by a path
    that turns a few times (around a bag's handle, between trouser legs). The layer and the reference take the
    same number, so they agree even on a maze it does not finish."""
    return rows + cols


def border_ring(rows: int, cols: int) -> np.ndarray:
    """float32 (rows, cols): 1 on the photo's outermost pixels, where the background starts."""
    ring = np.ones((rows, cols), np.float32)
    ring[1:-1, 1:-1] = 0.0
    return ring


def border_background(near_white: np.ndarray) -> np.ndarray:
    """float32 (rows, cols): how much each pixel is background, given the soft near-white mask in [0, 1]: the
    best path from the border, scored by its least near-white pixel (grown from the border ring, one
    4-connected step at a time, never above the pixel's own near-whiteness). Binary masks give the
    border-connected near-white region exactly; soft ones change continuously, as the layer's do."""
    background = near_white * border_ring(*near_white.shape)
    for _ in range(reconstruction_steps(*near_white.shape)):
        padded = np.pad(background, 1)  # mask >= 0, so zero padding never wins a max
        grown = np.maximum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                   padded[1:-1, :-2], padded[1:-1, 2:]])
        background = np.minimum(grown, near_white)
    return background


def foreground(pixels: np.ndarray) -> np.ndarray:
    """float32 (rows, cols): how much each pixel of an RGB (rows, cols, 3) image in [0, 1] is product: all but the
    (soft) near-white region connected to the border."""
    near_white = 1.0 / (1.0 + np.exp((np.max(1.0 - pixels, axis=-1) - WHITE_MARGIN) * 40.0))
    return (1.0 - border_background(near_white)).astype(np.float32)


def palette() -> np.ndarray:
    """float32 (COLOUR_BINS, 3): the RGB grid in [0, 1], red slowest."""
    levels = np.linspace(0.0, 1.0, PALETTE_LEVELS, dtype=np.float32)
    return np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)


def _cells(length: int) -> list[tuple[int, int]]:
    """GRID contiguous [start, end) ranges covering 0..length."""
    bounds = [round(length * i / GRID) for i in range(GRID + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def colour_histogram(rgb_uint8: np.ndarray) -> np.ndarray:
    """float32 (COLOUR_FEATURES,): the same descriptor in numpy for one RGB uint8 (rows, cols, 3) image, already
    pooled to the side the layer pools to: the reference the layer is tested against."""
    pixels = np.clip(rgb_uint8.astype(np.float32) / 255.0, 0.0, 1.0)
    product = foreground(pixels)
    logits = -((pixels[..., None, :] - palette()) ** 2).sum(-1) / (2.0 * SOFTNESS**2)
    assignment = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weighted = assignment / assignment.sum(axis=-1, keepdims=True) * product[..., None]
    parts = [np.sqrt(weighted.sum((0, 1)) / (product.sum() + 1e-6) + 1e-8)]
    for top, bottom in _cells(pixels.shape[0]):
        for left, right in _cells(pixels.shape[1]):
            share = product[top:bottom, left:right]
            parts.append(np.sqrt(weighted[top:bottom, left:right].sum((0, 1)) / (share.sum() + 1e-6) + 1e-8)
                         * np.sqrt(share.sum() / share.size))
    return np.concatenate(parts).astype(np.float32)


def backbone_part(features: np.ndarray, colour_descriptor: bool) -> np.ndarray:
    """The pooled backbone columns of cached features (the colour descriptor, if any, comes last): the
    pretrained baseline every evaluation reports beside the trained model."""
    return features[..., : features.shape[-1] - COLOUR_FEATURES] if colour_descriptor else features
