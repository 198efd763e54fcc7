"""Decoding and preprocessing of odd, bad and hostile images: plain functions, no broker needed."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from common.preprocess import ImageError, Preprocessing, center_crop_aspect, decode_rgb, preprocess
from common.settings import Settings
from samples import BAD, ODD_BUT_VALID, bomb, encode, exif_rotated, gradient

PREP = Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
MAX_PIXELS = Settings.max_pixels


@pytest.mark.parametrize("make", ODD_BUT_VALID.values(), ids=ODD_BUT_VALID.keys())
def test_odd_but_valid_images_are_prepared(make):
    array = preprocess(make(), PREP, MAX_PIXELS)
    assert array.shape == (3, 224, 224) and array.dtype == np.float32
    assert np.isfinite(array).all() and -1.01 <= array.min() and array.max() <= 1.01


def test_transparency_becomes_white():
    clear = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    assert decode_rgb(encode(clear, "PNG"), 224, MAX_PIXELS).getpixel((25, 25)) == (255, 255, 255)


def test_sixteen_bit_keeps_its_range():
    ramp = Image.fromarray(np.linspace(0, 65535, 100 * 100).reshape(100, 100).astype(np.uint16))
    pixels = np.asarray(decode_rgb(encode(ramp, "PNG"), 224, MAX_PIXELS))
    assert pixels.min() == 0 and pixels.max() == 255  # scaled, not clipped to white


def test_exif_orientation_is_applied():
    decoded = decode_rgb(exif_rotated(gradient(300, 100)), 224, MAX_PIXELS)
    assert decoded.size == (100, 300)


def test_large_jpeg_decodes_at_reduced_scale():
    decoded = decode_rgb(encode(gradient(4000, 3000), "JPEG"), 224, MAX_PIXELS)
    assert 448 <= min(decoded.size) < 3000  # draft mode: at least 2x the input size, far below full


def test_aspect_is_limited_to_four_thirds():
    assert center_crop_aspect(Image.new("RGB", (1600, 900)), 4 / 3).size == (1200, 900)
    assert center_crop_aspect(Image.new("RGB", (900, 1600)), 4 / 3).size == (900, 1200)
    assert center_crop_aspect(Image.new("RGB", (640, 480)), 4 / 3).size == (640, 480)


@pytest.mark.parametrize("data,code", BAD.values(), ids=BAD.keys())
def test_bad_input_is_a_clear_image_error(data, code):
    with pytest.raises(ImageError) as error:
        preprocess(data, PREP, MAX_PIXELS)
    assert error.value.code == code and error.value.message


def test_truncated_jpeg_is_corrupt():
    data = encode(gradient(800, 600), "JPEG")
    with pytest.raises(ImageError) as error:
        preprocess(data[: len(data) // 2], PREP, MAX_PIXELS)
    assert error.value.code == "corrupt_image"


def test_decompression_bomb_is_refused_before_decoding():
    data = bomb()
    assert len(data) < 200_000
    with pytest.raises(ImageError) as error:
        preprocess(data, PREP, MAX_PIXELS)
    assert error.value.code == "image_too_large" and "pixels" in error.value.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_any_bytes_give_an_array_or_an_image_error(data):
    try:
        assert preprocess(data, PREP, MAX_PIXELS).shape == (3, 224, 224)
    except ImageError as error:
        assert error.code and error.message


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 600), st.integers(1, 600), st.sampled_from(["PNG", "JPEG", "WEBP", "BMP", "GIF"]),
       st.sampled_from(["RGB", "L", "RGBA", "P"]), st.integers(0, 300))
def test_mangled_real_images_never_crash(width, height, fmt, mode, cut):
    image = gradient(width, height).convert(mode if fmt != "JPEG" or mode in ("RGB", "L") else "RGB")
    data = encode(image, fmt)
    data = data[: len(data) - cut] if cut else data
    try:
        assert preprocess(data, PREP, MAX_PIXELS).shape == (3, 224, 224)
    except ImageError as error:
        assert error.code in {"corrupt_image", "not_an_image", "empty_file"}
