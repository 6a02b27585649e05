"""White products are products: the background is the near-white region connected to the photo's border, so
neither the coloured-background alteration nor the colour descriptor erases a white garment (near-white pixels
the product encloses are product)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.model import alterations
from lookalike.model.colour import COLOUR_BINS, GRID, border_background, colour_histogram, palette
from lookalike.model.preprocessing import fit_square, normalise

BACKDROP, BODY, FOLD, OUTLINE = 255, 246, 175, 70
TOP, BOTTOM, LEFT, RIGHT = 8, 74, 8, 52  # the shirt's outline box in the 80 x 60 photo


def white_shirt() -> np.ndarray:
    """uint8 (80, 60, 3), a catalogue photo: a near-white shirt (grey folds, dark outline) on a white backdrop."""
    image = np.full((80, 60, 3), BACKDROP, np.uint8)
    image[TOP:BOTTOM, LEFT:RIGHT] = OUTLINE
    image[TOP + 2 : BOTTOM - 2, LEFT + 2 : RIGHT - 2] = BODY
    for col in (20, 30, 40):
        image[14:68, col : col + 2] = FOLD
    return image


def pooled(photo: np.ndarray, side: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """The photo as the model sees it (padded to a white square, resized) and that averaged to 28 px a side."""
    square = np.asarray(fit_square(Image.fromarray(photo), side, "pad"), np.uint8)
    pool = side // 28
    return square, square.reshape(28, pool, 28, pool, 3).mean(axis=(1, 3))


def nearest_bin(rgb: tuple[int, int, int]) -> int:
    return int(np.argmin(((palette() - np.array(rgb) / 255.0) ** 2).sum(1)))


# --- the coloured-background alteration ---

def test_the_background_alteration_recolours_the_backdrop_and_keeps_a_white_shirt() -> None:
    photo = white_shirt()
    altered = np.asarray(alterations.background(Image.fromarray(photo), np.random.default_rng(3)))
    inside = np.zeros(photo.shape[:2], bool)
    inside[TOP:BOTTOM, LEFT:RIGHT] = True
    np.testing.assert_array_equal(altered[inside], photo[inside])  # the shirt, whites included, untouched
    outside = altered[~inside]
    assert (outside == outside[0]).all() and outside[0].min() < 60  # one saturated colour everywhere else


def test_the_background_alteration_leaves_a_photo_the_product_fills_and_recolours_an_all_white_one() -> None:
    filled = white_shirt()[TOP:BOTTOM, LEFT:RIGHT]  # the outline touches every border: no backdrop
    assert np.array_equal(np.asarray(alterations.background(Image.fromarray(filled), np.random.default_rng(0))),
                          filled)
    blank = np.full((40, 30, 3), 250, np.uint8)
    recoloured = np.asarray(alterations.background(Image.fromarray(blank), np.random.default_rng(0)))
    assert (recoloured != 250).any(axis=2).all()


def legs_and_bag() -> np.ndarray:
    """uint8 (40, 50, 3): trousers (the gap between the legs opens on the bottom border: backdrop) and a bag
    whose handle encloses a hole of backdrop (not reached from the border: counted as product)."""
    image = np.full((40, 50, 3), 255, np.uint8)
    image[5:38, 4:20] = 40  # trousers ...
    image[15:40, 10:14] = 255  # ... the gap between the legs, open at the bottom
    image[20:34, 28:46] = 120  # the bag
    image[8:20, 30:44] = 120  # its handle ...
    image[11:20, 33:41] = 255  # ... around a hole
    return image


def test_the_descriptor_mask_is_the_alterations_flood_fill_on_a_sharp_photo() -> None:
    """On a binary near-white mask the soft reconstruction is exactly the border-connected region."""
    for photo in (white_shirt(), legs_and_bag(), white_shirt()[TOP:BOTTOM, LEFT:RIGHT]):
        near_white = (photo >= 235).all(axis=2)
        flood = alterations.border_background(photo)
        np.testing.assert_array_equal(border_background(near_white.astype(np.float32)) > 0.5, flood)
    flood = alterations.border_background(legs_and_bag())
    assert flood[30, 11] and not flood[15, 36]  # between the legs: backdrop; in the handle: product


# --- the colour descriptor ---

def test_a_white_shirt_puts_its_mass_in_the_white_bin_not_in_its_grey_folds() -> None:
    """The soft bins give a 246-grey body pixel about 2/3 to white and the rest to the three bins one step off
    it, so "white" here is those four; with the body left out, the folds rivalled white (0.15 against 0.16)."""
    global_bins = colour_histogram(pooled(white_shirt())[1])[:COLOUR_BINS] ** 2
    white, grey = nearest_bin((255, 255, 255)), nearest_bin((FOLD, FOLD, FOLD))
    whitish = [white, nearest_bin((FOLD, 255, 255)), nearest_bin((255, FOLD, 255)), nearest_bin((255, 255, FOLD))]
    assert global_bins[whitish].sum() > 0.5, global_bins[whitish]
    assert global_bins[white] > 4 * global_bins[grey], (global_bins[white], global_bins[grey])


def test_the_backdrop_and_padding_stay_background_and_the_shirt_body_is_foreground() -> None:
    pixels = pooled(white_shirt())[1] / 255.0
    near_white = 1.0 / (1.0 + np.exp((np.max(1.0 - pixels, axis=-1) - 0.1) * 40.0))
    background = border_background(near_white)
    assert background[:, :3].min() > 0.9 and background[0].min() > 0.9  # padding and backdrop
    assert background[8:20, 10:18].max() < 0.05  # the shirt's near-white body, enclosed by its outline


def test_a_product_filling_the_photo_and_an_all_white_photo_give_finite_descriptors() -> None:
    filled = pooled(white_shirt()[TOP:BOTTOM, LEFT:RIGHT], side=224)[1]  # 66 x 44: padding on two sides only
    edge_to_edge = np.full((28, 28, 3), BODY, np.uint8)
    edge_to_edge[0], edge_to_edge[-1], edge_to_edge[:, 0], edge_to_edge[:, -1] = OUTLINE, OUTLINE, OUTLINE, OUTLINE
    for image in (filled, edge_to_edge, np.full((28, 28, 3), 255, np.uint8)):
        descriptor = colour_histogram(image)
        assert np.isfinite(descriptor).all()
        assert (descriptor[:COLOUR_BINS] ** 2).sum() == pytest.approx(1.0, abs=1e-3)
    # no border-connected white: every cell is all foreground
    cells = colour_histogram(edge_to_edge)[COLOUR_BINS:].reshape(GRID * GRID, COLOUR_BINS) ** 2
    np.testing.assert_allclose(cells.sum(1), 1.0, atol=1e-3)


def layer_inputs(normalisation: str) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (224 px) of white products and edge cases, and their 28 px pooled RGB."""
    photos = [white_shirt(), legs_and_bag(), white_shirt()[TOP:BOTTOM, LEFT:RIGHT],
              np.full((80, 60, 3), 255, np.uint8)]
    squares, small = zip(*(pooled(photo) for photo in photos), strict=True)
    return normalise(np.stack(squares), normalisation), np.stack(small)


@pytest.mark.parametrize("normalisation", ["lite", "caffe"])
def test_the_layer_computes_the_reference_on_white_products(normalisation: str) -> None:
    from lookalike.model.network import ColourDescriptor

    inputs, small = layer_inputs(normalisation)
    layer = np.asarray(ColourDescriptor(normalisation)(inputs))
    reference = np.stack([colour_histogram(image) for image in small])
    np.testing.assert_allclose(layer, reference, atol=1e-5)


def test_the_exported_layer_computes_what_keras_computes(tmp_path: Path) -> None:
    """The unrolled reconstruction (max pools and minima) converts to LiteRT builtins and agrees."""
    import keras

    from lookalike.model.network import ColourDescriptor, export_runtime_model, keras_outputs
    from lookalike.model.runtime import EmbeddingRuntime

    inputs, _ = layer_inputs("lite")
    image = keras.Input((224, 224, 3), name="image")
    model = keras.Model(image, ColourDescriptor("lite", name="colour_descriptor")(image))
    export_runtime_model(model, tmp_path / "colour.tflite", inputs, what="colour descriptor")
    exported = EmbeddingRuntime(tmp_path / "colour.tflite", threads=1)(inputs)
    np.testing.assert_allclose(exported, keras_outputs(model, inputs), atol=1e-5)
