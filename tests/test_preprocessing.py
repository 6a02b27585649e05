"""lookalike.model.preprocessing: decoding every image mode, normalisation, and refusing bad input."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lookalike.model.preprocessing import (
    InvalidImageError,
    PreprocessSpec,
    image_to_input,
    load_image,
    normalise,
    preprocess,
    query_input,
    restore_blur,
    sharpness,
)
from lookalike.model.views import augment, iter_input_batches

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def noise_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def bilevel_png(width: int, height: int) -> bytes:
    """A valid, all-black 1-bit greyscale PNG; zlib squeezes even 20000x20000 to a few tens of KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    scanline = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then packed bits
    rows_per_block = max(1, (1 << 20) // len(scanline))
    parts = []
    for start in range(0, height, rows_per_block):
        parts.append(compressor.compress(scanline * min(rows_per_block, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- modes to RGB


def test_greyscale_becomes_equal_rgb_channels():
    image = load_image(encode(Image.new("L", (10, 6), 100), "PNG"))
    assert image.mode == "RGB"
    assert image.size == (10, 6)
    assert (pixels(image) == 100).all()


def test_rgba_transparent_areas_become_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent black
    rgba.paste((255, 0, 0, 255), (0, 0, 5, 10))  # left half opaque red
    rgba.paste((0, 0, 0, 128), (5, 0, 10, 5))  # top-right quarter half-transparent black
    image = pixels(load_image(encode(rgba, "PNG")))
    assert (image[:, :5] == RED).all()
    assert (image[5:, 5:] == 255).all()
    assert np.abs(image[:5, 5:] - 127).max() <= 1  # 50 % black over white


def test_greyscale_with_alpha_is_flattened_onto_white():
    la = Image.new("LA", (4, 4), (0, 0))
    image = pixels(load_image(encode(la, "PNG")))
    assert (image == 255).all()


def test_palette_image_keeps_its_colours():
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.paste(1, (2, 0, 4, 2))
    image = pixels(load_image(encode(palette_image, "PNG")))
    assert (image[:, :2] == RED).all()
    assert (image[:, 2:] == BLUE).all()


def test_palette_image_with_transparent_index_becomes_white_there():
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.paste(1, (2, 0, 4, 2))
    data = encode(palette_image, "PNG", transparency=1)
    assert Image.open(io.BytesIO(data)).mode == "P"
    image = pixels(load_image(data))
    assert (image[:, :2] == RED).all()
    assert (image[:, 2:] == 255).all()


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # no ink: white
    cmyk.paste((0, 0, 0, 255), (0, 0, 8, 16))  # black ink on the left
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = pixels(load_image(data))
    assert image.shape == (16, 16, 3)
    assert image[:, :6].max() <= 10
    assert image[:, 10:].min() >= 245


def test_16_bit_greyscale_png_is_scaled_to_8_bits():
    values = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = pixels(load_image(data))
    expected = values.astype(np.float64) * 255 / 65535
    assert np.abs(image[..., 0] - expected).max() <= 1
    assert (image[..., 0] == image[..., 2]).all()


def test_exif_orientation_6_is_applied():
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste(RED, (0, 0, 8, 8))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image = load_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == (20, 40)  # upright: portrait
    upright = pixels(image)
    assert np.abs(upright[3, 16] - RED).max() <= 30  # the marker is now top-right
    assert upright[3, 3].min() >= 225
    assert upright[36, 16].min() >= 225


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    image = pixels(load_image(data))
    assert (image == RED).all()


# ---------------------------------------------------------------- sources, output, resizing


def test_path_and_bytes_give_identical_arrays(tmp_path):
    data = encode(noise_image(), "JPEG", quality=90)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    spec = PreprocessSpec(image_size=64)
    from_path = preprocess(path, spec)
    np.testing.assert_array_equal(from_path, preprocess(str(path), spec))
    np.testing.assert_array_equal(from_path, preprocess(data, spec))
    np.testing.assert_array_equal(from_path, preprocess(bytearray(data), spec))
    np.testing.assert_array_equal(from_path, preprocess(memoryview(data), spec))


@pytest.mark.parametrize("size", [32, 65, 224])
@pytest.mark.parametrize("mode", ["pad", "stretch"])
@pytest.mark.parametrize("normalisation", ["lite", "caffe"])
def test_output_shape_and_dtype(size, mode, normalisation):
    spec = PreprocessSpec(image_size=size, resize_mode=mode, normalisation=normalisation)
    out = preprocess(encode(noise_image(50, 30), "PNG"), spec)
    assert out.shape == (size, size, 3)
    assert out.dtype == np.float32


def test_pad_mode_keeps_aspect_with_white_borders():
    wide = Image.new("RGB", (40, 20), RED)  # padded onto a 40x40 white square
    out = image_to_input(wide, PreprocessSpec(image_size=32, resize_mode="pad", normalisation="lite"))
    white, red = np.float32(1.0), normalise(np.array(RED, dtype=np.uint8), "lite")
    assert (out[:6] == white).all()  # top band: rows 0-7 of 32 are padding
    assert (out[-6:] == white).all()
    np.testing.assert_allclose(out[12:20], np.broadcast_to(red, (8, 32, 3)), atol=0.02)


def test_stretch_mode_fills_the_square_without_borders():
    wide = Image.new("RGB", (40, 20), RED)
    out = image_to_input(wide, PreprocessSpec(image_size=32, resize_mode="stretch", normalisation="lite"))
    np.testing.assert_allclose(out, np.broadcast_to(normalise(np.array(RED, dtype=np.uint8), "lite"), out.shape),
                               atol=1e-6)


def test_lite_normalisation_is_x_minus_127_over_128():
    values = np.array([[[0, 127, 255]]], dtype=np.uint8)
    out = normalise(values, "lite")
    assert out.dtype == np.float32
    # (0 - 127) / 128 = -0.9921875; (127 - 127) / 128 = 0; (255 - 127) / 128 = 1.0
    np.testing.assert_array_equal(out, np.array([[[-0.9921875, 0.0, 1.0]]], dtype=np.float32))


def test_white_image_in_lite_normalisation_is_all_ones():
    out = preprocess(encode(Image.new("RGB", (20, 30), (255, 255, 255)), "PNG"), PreprocessSpec(image_size=32))
    assert (out == 1.0).all()


def test_caffe_normalisation_is_bgr_minus_imagenet_mean():
    out = normalise(np.array([[10, 20, 30]], dtype=np.uint8), "caffe")
    # RGB (10, 20, 30) -> BGR (30, 20, 10) minus the BGR mean (103.939, 116.779, 123.68)
    np.testing.assert_allclose(out, [[30 - 103.939, 20 - 116.779, 10 - 123.68]], rtol=1e-6)
    assert out.dtype == np.float32


def test_unknown_normalisation_raises():
    with pytest.raises(ValueError, match="normalisation"):
        normalise(np.zeros((1, 3), dtype=np.uint8), "torch")


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"resize_mode": "crop"}, "resize_mode"),
    ({"normalisation": "torch"}, "normalisation"),
    ({"image_size": 16}, "image_size"),
    ({"image_size": 2048}, "image_size"),
    ({"sharpen_queries_below": -1.0}, "sharpen_queries_below"),
    ({"sharpen_queries_below": float("nan")}, "sharpen_queries_below"),
])
def test_preprocess_spec_rejects_bad_values(kwargs, named):
    with pytest.raises(ValueError, match=named):
        PreprocessSpec(**kwargs)


def test_blurred_photo_is_sharpened_and_a_sharp_one_is_left_alone():
    sharp = noise_image(60, 80)
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    assert sharpness(blurred) < 400 <= sharpness(sharp)
    restoring, plain = PreprocessSpec(image_size=64, sharpen_queries_below=400), PreprocessSpec(image_size=64)
    np.testing.assert_array_equal(query_input(sharp, restoring), image_to_input(sharp, plain))
    restored = restore_blur(blurred, 400)
    assert sharpness(restored) > 2 * sharpness(blurred)  # the edges come back
    np.testing.assert_array_equal(query_input(blurred, restoring), image_to_input(restored, plain))
    # catalogue photos and training views are never restored: restoring them cost every metric
    np.testing.assert_array_equal(image_to_input(blurred, restoring), image_to_input(blurred, plain))
    assert restore_blur(blurred, 0) is blurred  # 0: never


def test_a_query_file_is_restored_like_a_query_image():
    blurred = noise_image(60, 80).filter(ImageFilter.GaussianBlur(2))
    data = encode(blurred, "PNG")
    spec = PreprocessSpec(image_size=96, sharpen_queries_below=400)  # the 60x80 photo decodes at its own size
    expected = image_to_input(restore_blur(blurred, 400), PreprocessSpec(image_size=96))
    np.testing.assert_array_equal(preprocess(data, spec), expected)


# ---------------------------------------------------------------- invalid input


def test_empty_bytes_are_refused():
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(b"")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(path)


def test_text_bytes_are_refused():
    with pytest.raises(InvalidImageError, match="not an image"):
        load_image(b"id,articleType\n1,Tshirts\n")


def test_truncated_jpeg_is_refused():
    data = encode(noise_image(128, 128), "JPEG", quality=90)
    with pytest.raises(InvalidImageError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(tmp_path / "nowhere.jpg")


@pytest.mark.parametrize("kind", ["directory", "fifo", "under a file"])
def test_a_path_that_is_no_regular_file_is_refused_without_waiting(tmp_path, kind):
    """A FIFO would block a blocking open until some writer came: the read opens without blocking and refuses it."""
    path = tmp_path / "photo.jpg"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        (tmp_path / "file").write_bytes(b"x")
        path = tmp_path / "file" / "photo.jpg"
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(path)


def test_a_path_given_as_text_reads_like_a_path(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode(noise_image(), "PNG"))
    assert np.array_equal(np.asarray(load_image(str(path))), np.asarray(load_image(path)))


def test_bytes_over_max_bytes_are_refused():
    data = encode(noise_image(), "PNG")
    with pytest.raises(InvalidImageError, match="limit"):
        load_image(data, max_bytes=len(data) - 1)
    assert load_image(data, max_bytes=len(data)).size == (64, 48)


def test_file_over_max_bytes_is_refused(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(noise_image(), "PNG"))
    with pytest.raises(InvalidImageError, match="limit"):
        preprocess(path, PreprocessSpec(image_size=32), max_bytes=100)


def test_decompression_bomb_is_refused():
    data = bilevel_png(20000, 20000)  # 400 megapixels in a few tens of KB
    assert len(data) < 200_000
    with pytest.raises(InvalidImageError, match="too large"):
        load_image(data)


def test_image_over_the_pixel_limit_is_refused():
    data = bilevel_png(7000, 7000)  # 49 MP: under PIL's own bomb limit, over ours (40 MP)
    with pytest.raises(InvalidImageError, match="megapixels"):
        load_image(data)


def test_small_bilevel_png_helper_is_a_real_image():
    image = load_image(bilevel_png(30, 10))  # guards the PNG writer used by the two tests above
    assert image.size == (30, 10)
    assert (pixels(image) == 0).all()


# ---------------------------------------------------------------- augmentation


def test_augment_is_deterministic_for_a_seed():
    image = noise_image(80, 60)
    first = np.asarray(augment(image, np.random.default_rng(7)))
    second = np.asarray(augment(image, np.random.default_rng(7)))
    np.testing.assert_array_equal(first, second)


def test_augment_differs_between_seeds():
    image = noise_image(80, 60)
    views = [np.asarray(augment(image, np.random.default_rng(seed))) for seed in range(4)]
    assert any(view.shape != views[0].shape or not np.array_equal(view, views[0]) for view in views[1:])


def test_augment_crops_to_at_least_80_percent():
    image = noise_image(100, 50)
    for seed in range(10):
        width, height = augment(image, np.random.default_rng(seed)).size
        assert 80 <= width <= 100
        assert 40 <= height <= 50


def test_iter_input_batches_are_independent_of_batch_size(tmp_path):
    """Augmented views are seeded per image, so neither the batch size nor the number of decoding
    threads may change them: every run below must give image i the view of its own seed [3, i]."""
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        path.write_bytes(encode(noise_image(30, 24, seed=i), "PNG"))  # within the 32 px input: no shrinking
        paths.append(str(path))
    spec = PreprocessSpec(image_size=32)
    own_seed = np.stack([image_to_input(augment(load_image(p), np.random.default_rng([3, i])), spec)
                         for i, p in enumerate(paths)])
    assert not np.array_equal(own_seed[0], image_to_input(load_image(paths[0]), spec))  # augmenting shows
    for batch_size, workers in [(2, 1), (7, 1), (1, 3), (3, 2), (2, 4)]:
        views = np.concatenate(list(iter_input_batches(paths, spec, batch_size=batch_size, augment_seed=3,
                                                       workers=workers)))
        assert views.shape == (7, 32, 32, 3)
        np.testing.assert_array_equal(views, own_seed, err_msg=f"batch_size={batch_size}, workers={workers}")
    plain = np.concatenate(list(iter_input_batches(paths, spec, batch_size=2, workers=3)))
    np.testing.assert_array_equal(plain, np.stack([preprocess(p, spec) for p in paths]))


def test_dark_16_bit_greyscale_png_stays_dark():
    data = encode(Image.fromarray(np.full((4, 4), 200, dtype=np.uint16)), "PNG")  # 200/65535: nearly black
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert pixels(load_image(data)).max() <= 1


def test_draft_decoding_leaves_catalogue_size_photos_bit_identical_and_large_ones_close(monkeypatch):
    """What load_image and the README promise: a photo within the model's input side (catalogue photos
    are 60 x 80) is preprocessed bit-identically with or without draft decoding and the reducing resize;
    a large JPEG decodes at the smallest DCT scale still covering the input side and stays close to the
    full decode."""
    from PIL import JpegImagePlugin

    spec = PreprocessSpec(224, "pad", "lite")
    decoded_sizes: list[tuple[int, int]] = []
    real_load, real_resize = JpegImagePlugin.JpegImageFile.load, Image.Image.resize

    def recording_load(self):
        decoded_sizes.append(self.size)  # after any draft(): the size libjpeg decodes at (load runs more than once)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", recording_load)

    def plain_decode(data: bytes) -> np.ndarray:
        """Full-size decode and resizes without a reducing gap: the behaviour the shortcuts must match."""
        def resize(self, size, resample=None, box=None, reducing_gap=None):
            return real_resize(self, size, resample, box)

        with monkeypatch.context() as patch:
            patch.setattr(Image.Image, "resize", resize)
            return image_to_input(load_image(data), spec)

    rng = np.random.default_rng(3)
    for width, height in [(60, 80), (224, 150)]:  # a catalogue photo; exactly the input side
        jpeg = encode(Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB"), "JPEG")
        decoded_sizes.clear()
        drafted = preprocess(jpeg, spec)
        assert set(decoded_sizes) == {(width, height)}
        assert np.array_equal(drafted, plain_decode(jpeg)), (width, height)
        assert np.array_equal(np.asarray(load_image(jpeg, max_side=224)), np.asarray(load_image(jpeg)))

    x, y = np.meshgrid(np.linspace(0, 1, 2000, dtype=np.float32), np.linspace(0, 1, 1500, dtype=np.float32))
    large = np.stack([255 * x, 255 * (1 - y), 128 + 100 * np.sin(150 * x) * np.cos(112 * y)], axis=-1)  # ~24 waves
    large_jpeg = encode(Image.fromarray(large.astype(np.uint8), "RGB"), "JPEG", quality=95)
    decoded_sizes.clear()
    drafted = preprocess(large_jpeg, spec)
    assert set(decoded_sizes) == {(500, 375)}  # 1/4 scale; 1/8 (250 x 188) would not cover 224 a side
    assert load_image(large_jpeg, max_side=224).size == (224, 168)
    full = plain_decode(large_jpeg)
    assert decoded_sizes[-1] == (2000, 1500)
    assert drafted.shape == full.shape == (224, 224, 3)
    # in units of the (x - 127) / 128 input; measured: mean 0.0016, max 0.016 (2 grey levels); a nearest-
    # neighbour shrink instead gives mean 0.011, max 0.12
    assert np.abs(drafted - full).mean() < 0.005
    assert np.abs(drafted - full).max() < 0.05
