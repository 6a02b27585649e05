"""How much colour each input carries: a colour classifier per input, trained on the train split and scored on
the test split (accuracy on the raw colour names, and by colour family where the description declares them).

The look metrics rank by colour only as well as the model can tell colours apart, so this probe says whether a
richer colour input (a finer palette, chromaticity statistics, a learned branch over a thumbnail) could lift
them before any of it is built into the model. Inputs:

  descriptor            the model's colour descriptor (lookalike.model.colour: 4x4x4 palette, whole photo + 3x3 grid)
  descriptor_global     its whole-photo histogram alone
  palette_6 / lab_6     a finer whole-photo palette: 6 levels a channel, in RGB or in CIELAB (216 bins)
  descriptor_chroma     the descriptor plus log-chromaticity (log R/G, log B/G) and lightness means and spreads of the
                        foreground, whole photo and per grid cell (60 numbers)
  backbone              the pooled backbone features
  thumbnail_cnn         a small CNN learned over the 28-px foreground thumbnail (RGB + foreground mask): the learned
                        colour branch; _descriptor: with the descriptor beside it

Linear probes are logistic regressions on standardised inputs; the CNN trains 40 epochs at most (early stopping on
the val split), flips as its augmentation. Seeded: reruns give the same table.

    python -m study.colour_probe --project . --out metrics/colour_probe.csv
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from lookalike.catalogue.description import family_values
from lookalike.catalogue.reading import read_table
from lookalike.model.colour import (
    COLOUR_BINS,
    COLOUR_FEATURES,
    POOLED_SIDE,
    _cells,
)
from lookalike.model.colour import foreground as product_mask
from lookalike.model.preprocessing import fit_square, load_image
from study import project_catalogue


def thumbnails(paths: np.ndarray, image_size: int, resize_mode: str) -> np.ndarray:
    """uint8 (n, POOLED_SIDE, POOLED_SIDE, 3): each photo as the model sees it, averaged down like the descriptor."""
    out = np.zeros((len(paths), POOLED_SIDE, POOLED_SIDE, 3), np.uint8)
    for i, path in enumerate(paths):
        square = fit_square(load_image(str(path), max_side=image_size), image_size, resize_mode)
        out[i] = np.asarray(square.resize((POOLED_SIDE, POOLED_SIDE), Image.BOX))
    return out


def foreground(pixels: np.ndarray) -> np.ndarray:
    """float32 (n, side, side): the descriptor's foreground of each photo (lookalike.model.colour.foreground)."""
    return np.stack([product_mask(image) for image in pixels])


def palette_histogram(pixels: np.ndarray, mask: np.ndarray, levels: int, softness: float) -> np.ndarray:
    """float32 (n, levels**3): the square-rooted soft histogram of the foreground over a finer palette."""
    grid = np.linspace(0.0, 1.0, levels, dtype=np.float32)
    centres = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    parts = []
    for start in range(0, len(pixels), 250):  # (250, side, side, bins) at a time: bounded memory
        chunk, weight = pixels[start : start + 250], mask[start : start + 250]
        distance = (chunk**2).sum(-1)[..., None] - 2.0 * chunk @ centres.T + (centres**2).sum(-1)
        soft = np.exp(-(distance - distance.min(-1, keepdims=True)) / (2.0 * softness**2))
        soft = soft / soft.sum(-1, keepdims=True) * weight[..., None]
        parts.append(np.sqrt(soft.sum((1, 2)) / (weight.sum((1, 2))[:, None] + 1e-6)))
    return np.concatenate(parts).astype(np.float32)


def chroma_statistics(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float32 (n, 6 * (1 + cells)): foreground means and spreads of log R/G, log B/G and lightness, whole photo
    then per grid cell: a dark brown and a black differ in chromaticity long before they differ in RGB."""
    eps = 0.03
    channels = np.stack([np.log(pixels[..., 0] + eps) - np.log(pixels[..., 1] + eps),
                         np.log(pixels[..., 2] + eps) - np.log(pixels[..., 1] + eps), pixels.mean(-1)], -1)

    def stats(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
        total = weight.sum((1, 2))[:, None] + 1e-6
        mean = (values * weight[..., None]).sum((1, 2)) / total
        spread = np.sqrt(((values - mean[:, None, None]) ** 2 * weight[..., None]).sum((1, 2)) / total + 1e-6)
        return np.concatenate([mean, spread], 1)

    side = pixels.shape[1]
    parts = [stats(channels, mask)] + [stats(channels[:, t:b, lo:hi], mask[:, t:b, lo:hi])
                                       for t, b in _cells(side) for lo, hi in _cells(side)]
    return np.concatenate(parts, 1).astype(np.float32)


def linear_probe(inputs: np.ndarray, codes: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The test rows' predicted codes from a logistic regression on the standardised train rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit(inputs[train]).transform(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at its iteration cap: the probe is what it is
        model = LogisticRegression(max_iter=500, C=0.1).fit(scaled[train], codes[train])
    return model.predict(scaled[test])


def thumbnail_cnn(images: np.ndarray, descriptor: np.ndarray | None, codes: np.ndarray, train: np.ndarray,
                  val: np.ndarray, test: np.ndarray, classes: int, seed: int = 0) -> np.ndarray:
    """The test rows' predicted codes from a small CNN over (n, side, side, 4) thumbnails (+ the descriptor)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(seed)
    image_in = keras.Input(images.shape[1:])
    x = keras.layers.Conv2D(32, 1, activation="relu")(image_in)  # a learned per-pixel colour map first
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPool2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x))
    inputs, branches = [image_in], [x]
    if descriptor is not None:
        inputs.append(keras.Input(descriptor.shape[1:]))
        branches.append(inputs[-1])
    x = branches[0] if len(branches) == 1 else keras.layers.Concatenate()(branches)
    x = keras.layers.Dense(256, activation="relu")(keras.layers.Dropout(0.2)(x))
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
    model.compile(keras.optimizers.AdamW(1e-3, weight_decay=1e-4), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    def rows(mask: np.ndarray, flip: bool = False) -> list[np.ndarray]:
        picked = images[mask][:, :, ::-1] if flip else images[mask]
        return [picked] + ([descriptor[mask]] if descriptor is not None else [])

    train_inputs = [np.concatenate(pair) for pair in zip(rows(train), rows(train, flip=True), strict=True)]
    model.fit(train_inputs, np.concatenate([codes[train]] * 2), epochs=40, batch_size=64, verbose=0,
              validation_data=(rows(val), codes[val]),
              callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=5,
                                                       restore_best_weights=True)])
    return model.predict(rows(test), verbose=0).argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    params, description = project_catalogue(args.project)
    if description.colour is None or not params["model"].get("colour_descriptor"):
        raise SystemExit("the probe needs a colour column and features with the colour descriptor")
    items = read_table(args.project / "artifacts/items.csv")
    features = np.load(args.project / "artifacts/features.npy", mmap_mode="r")[0]
    colour = items[description.colour].astype(str).to_numpy()
    split = items["split"].to_numpy()
    names = sorted(set(colour[split == "train"]))
    codes = np.array([names.index(c) if c in names else -1 for c in colour])
    train, val, test = ((split == part) & (codes >= 0) for part in ("train", "val", "test"))
    families = description.families_of(description.colour)
    family = np.array(family_values(colour.tolist(), families)) if families else None

    backbone = params["backbone"]
    thumbs = thumbnails(np.load(args.project / "artifacts/image_paths.npy"), backbone["image_size"],
                        backbone["resize_mode"])
    pixels = thumbs.astype(np.float32) / 255.0
    mask = foreground(pixels)
    lab = np.stack([cv2.cvtColor(t, cv2.COLOR_RGB2LAB) for t in thumbs]).astype(np.float32) / 255.0
    descriptor = np.asarray(features[:, -COLOUR_FEATURES:], np.float32)
    inputs = {
        "descriptor": descriptor,
        "descriptor_global": descriptor[:, :COLOUR_BINS],
        "palette_6": palette_histogram(pixels, mask, 6, 0.10),
        "lab_6": palette_histogram(lab, mask, 6, 0.10),
        "descriptor_chroma": np.concatenate([descriptor, chroma_statistics(pixels, mask)], 1),
        "backbone": np.asarray(features[:, :-COLOUR_FEATURES], np.float32),
    }
    records = []

    def record(name: str, predicted: np.ndarray, dim: int) -> None:
        found = np.array(names)[predicted]
        row = {"input": name, "dim": dim, "test_rows": int(test.sum()),
               "colour_accuracy": round(float((found == colour[test]).mean()), 4)}
        if family is not None:
            row["colour_family_accuracy"] = round(float(
                (np.array(family_values(found.tolist(), families)) == family[test]).mean()), 4)
        records.append(row)
        print(row, flush=True)

    for name, values in inputs.items():
        record(name, linear_probe(values, codes, train, test), values.shape[1])
    images = np.concatenate([pixels, mask[..., None]], -1)
    record("thumbnail_cnn", thumbnail_cnn(images, None, codes, train, val, test, len(names)), images[0].size)
    record("thumbnail_cnn_descriptor", thumbnail_cnn(images, descriptor, codes, train, val, test, len(names)),
           images[0].size + descriptor.shape[1])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records).to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
