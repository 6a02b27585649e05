"""Upload hardening: bounded cost for any file, only the formats we name, colours right.

Memory and time per hostile file are measured by bench/hostile_uploads.py; these tests pin the
mechanisms that bound them (what is decoded, how large any intermediate image gets) and the outcomes.
"""

from __future__ import annotations

import functools
import io
import threading
import tracemalloc
import warnings

import numpy as np
import pytest
from bad_inputs import extreme_corpus
from PIL import Image, ImageFile

from lookalike.model.preprocessing import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    SUPPORTED_FORMATS_TEXT,
    UPLOAD_EXTENSIONS,
    InvalidImageError,
    PreprocessSpec,
    fit_square,
    load_image,
    preprocess,
)

SPEC = PreprocessSpec(image_size=224)
CORPUS = functools.cache(extreme_corpus)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# ---------------------------------------------------------------- item 1: bounded cost


@pytest.mark.parametrize("case", list(CORPUS()))
def test_extreme_shapes_are_answered_or_refused_with_a_message(case: str) -> None:
    """Never MemoryError or another exception type: the page and the CLI catch InvalidImageError only."""
    data, answers = CORPUS()[case]
    if answers:
        pixels = preprocess(data, SPEC)
        assert pixels.shape == (224, 224, 3) and np.isfinite(pixels).all()
    else:
        with pytest.raises(InvalidImageError) as caught:
            preprocess(data, SPEC)
        assert 10 < len(str(caught.value)) < 200


@pytest.fixture
def largest_image(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pixels of the largest image created by Image.new, resize, convert or transpose during the test."""
    largest = [0]

    def recording(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            if isinstance(result, Image.Image):
                largest[0] = max(largest[0], result.width * result.height)
            return result
        return wrapper

    monkeypatch.setattr(Image, "new", recording(Image.new))
    for method in ("resize", "convert", "transpose", "copy"):
        monkeypatch.setattr(Image.Image, method, recording(getattr(Image.Image, method)))
    return largest


@pytest.mark.parametrize("case", ["40000x1 PNG", "65535x2 GIF", "16383x1 WebP (WebP's widest)"])
def test_long_strips_never_materialise_a_canvas_larger_than_the_model_input(largest_image: list[int],
                                                                            case: str) -> None:
    """Padding a 65535 x 2 strip to a square first would build a 65535 x 65535 canvas (12.9 GB as RGB)."""
    data, _ = CORPUS()[case]
    decoded = Image.open(io.BytesIO(data))
    preprocess(data, SPEC)
    assert largest_image[0] <= max(224 * 224, decoded.width * decoded.height)


def test_fit_square_shrinks_before_padding(largest_image: list[int]) -> None:
    strip = Image.new("RGB", (20000, 3), "red")
    largest_image[0] = 0
    square = fit_square(strip, 224, "pad")
    assert square.size == (224, 224)
    assert largest_image[0] <= 224 * 224
    pixels = np.asarray(square)
    assert (pixels[112, :, 0] > 200).all() and (pixels[0] == 255).all()  # a red line across white


def test_catalogue_size_photos_pad_exactly_as_before() -> None:
    """Shrink-first applies only above the model input: an 80 x 60 photo is padded then upsampled as always."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8))
    canvas = Image.new("RGB", (80, 80), (255, 255, 255))
    canvas.paste(photo, (10, 0))
    expected = canvas.resize((224, 224), Image.Resampling.BICUBIC, reducing_gap=3.0)
    assert np.array_equal(np.asarray(fit_square(photo, 224, "pad")), np.asarray(expected))


def test_files_over_the_pixel_limit_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    for case in ("1x40000000 PNG", "40000x1000 PNG", "40000x1000 GIF", "16383x1000 WebP"):
        with pytest.raises(InvalidImageError, match="megapixels"):
            load_image(CORPUS()[case][0])
    assert loads == []


def test_large_jpeg_is_counted_at_its_draft_scale() -> None:
    """A 40000 x 1000 JPEG decodes at 1/4 scale (10 MP under the limit at full size would be 40 MP)."""
    data, _ = CORPUS()["40000x1000 JPEG (draft-decoded at 1/4)"]
    assert Image.open(io.BytesIO(data)).size == (40000, 1000)
    assert 40000 * 1000 > DEFAULT_MAX_PIXELS
    image = load_image(data, max_side=224)
    assert max(image.size) == 224


def test_sixteen_bit_images_are_never_copied_to_float64() -> None:
    """A 2000 x 2000 16-bit PNG: a float64 copy alone would take 32 MB of numpy memory."""
    values = np.tile(np.linspace(0, 65535, 2000).astype(np.uint16), (2000, 1))
    data = encode(Image.fromarray(values), "PNG")
    tracemalloc.start()
    try:
        image = load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * values.size  # uint16 input, one uint16 temporary, the uint8 result: ~5 bytes a pixel
    grey = np.asarray(image)[..., 0]
    assert np.array_equal(grey, (values // 257).astype(np.uint8))


# ---------------------------------------------------------------- item 2: decode only what we accept


def _accepted_files() -> dict[str, bytes]:
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    mpo = io.BytesIO()
    photo.save(mpo, "MPO", save_all=True, append_images=[photo.rotate(180)])
    return {"JPEG": encode(photo, "JPEG"), "PNG": encode(photo, "PNG"), "WEBP": encode(photo, "WEBP"),
            "BMP": encode(photo, "BMP"), "GIF": encode(photo, "GIF"), "MPO (a camera's JPEG)": mpo.getvalue()}


def _refused_files() -> dict[str, bytes]:
    """Every format this Pillow can write that is not on our list, so each decoder is tried for real."""
    photo = Image.new("RGB", (32, 24), "red")
    written = {}
    for fmt in ("TIFF", "PCX", "SGI", "TGA", "DDS", "IM", "QOI", "JPEG2000", "ICO", "PPM", "EPS", "SPIDER",
                "ICNS", "AVIF", "XBM", "MSP", "DIB"):
        source = photo.convert("1") if fmt in ("XBM", "MSP") else photo.convert("L") if fmt == "SPIDER" else photo
        written[fmt] = encode(source, fmt)
    return written


def test_the_format_list_is_one_list() -> None:
    assert set(SUPPORTED_FORMATS) == {"JPEG", "PNG", "WEBP", "BMP", "GIF"}
    assert UPLOAD_EXTENSIONS == ("jpg", "jpeg", "png", "webp", "bmp", "gif")
    for name in ("JPEG", "PNG", "WebP", "BMP", "GIF"):
        assert name in SUPPORTED_FORMATS_TEXT


@pytest.mark.parametrize("fmt", list(_accepted_files()))
def test_each_listed_format_is_answered(fmt: str) -> None:
    image = load_image(_accepted_files()[fmt])
    assert image.mode == "RGB" and image.size in ((30, 40), (40, 30))


@pytest.mark.parametrize("fmt", list(_refused_files()))
def test_every_other_format_is_refused_with_the_list(fmt: str) -> None:
    data = _refused_files()[fmt]
    assert Image.open(io.BytesIO(data)).format  # Pillow itself identifies the file: only our list refuses it
    with pytest.raises(InvalidImageError) as caught:
        load_image(data)
    assert f"supported format ({SUPPORTED_FORMATS_TEXT})" in str(caught.value)


# ---------------------------------------------------------------- item 3: colours for the rarer modes


def test_colour_key_transparency_in_an_rgb_png_lands_on_white() -> None:
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    image.paste((200, 30, 30), (0, 0, 2, 2))
    pixels = np.asarray(load_image(encode(image, "PNG", transparency=(0, 0, 0))))
    assert (pixels[:, :2] == (200, 30, 30)).all()
    assert (pixels[:, 2:] == 255).all()


def test_colour_key_transparency_in_a_grey_png_lands_on_white() -> None:
    image = Image.new("L", (4, 2), 0)
    image.paste(80, (0, 0, 2, 2))
    pixels = np.asarray(load_image(encode(image, "PNG", transparency=0)))
    assert (pixels[:, :2] == 80).all()
    assert (pixels[:, 2:] == 255).all()


def test_colour_key_transparency_in_a_16_bit_png_lands_on_white() -> None:
    values = np.array([[0, 0, 40000, 40000]], np.uint16)
    pixels = np.asarray(load_image(encode(Image.fromarray(values), "PNG", transparency=0)))
    assert (pixels[0, :2] == 255).all()
    assert (pixels[0, 2:] == 40000 // 257).all()


def test_colour_key_survives_a_large_image_shrunk_for_the_model() -> None:
    """The key becomes alpha before shrinking, so averaging never turns key pixels into dark fringes."""
    image = Image.new("RGB", (1000, 500), (0, 0, 0))
    image.paste((30, 30, 200), (0, 0, 500, 500))
    pixels = np.asarray(load_image(encode(image, "PNG", transparency=(0, 0, 0)), max_side=224))
    assert pixels.shape == (112, 224, 3)
    assert (pixels[:, 120:] == 255).all()
    assert (pixels[:, :100] == (30, 30, 200)).all()


def test_decoding_never_touches_the_process_wide_warning_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamlit serves sessions in threads: a per-request catch_warnings would race between them."""
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("warnings filters changed while decoding")

    monkeypatch.setattr(warnings, "catch_warnings", forbidden)
    monkeypatch.setattr(warnings, "simplefilter", forbidden)
    monkeypatch.setattr(warnings, "filterwarnings", forbidden)
    for data, _ in CORPUS().values():
        try:
            load_image(data, max_side=224)
        except InvalidImageError:
            pass


def test_concurrent_decodes_of_hostile_files_all_finish_with_their_outcome() -> None:
    outcomes: dict[str, str] = {}

    def decode(case: str) -> None:
        data, _ = CORPUS()[case]
        try:
            preprocess(data, SPEC)
            outcomes[case] = "answered"
        except InvalidImageError:
            outcomes[case] = "refused"

    threads = [threading.Thread(target=decode, args=(case,)) for case in CORPUS()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {case: "answered" if answers else "refused" for case, (_, answers) in CORPUS().items()}
