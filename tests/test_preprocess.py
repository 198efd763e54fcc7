"""Decoding and preprocessing of odd, bad and hostile images: plain functions, no broker needed."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from common.preprocess import ImageError, Preprocessing, center_crop_aspect, decode_rgb, preprocess

PREP = Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
MAX_PIXELS = 64_000_000


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 320, height: int = 240, mode: str = "RGB") -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    rgb = np.stack([x, x[:, ::-1], np.full_like(x, 90)], axis=2)
    return Image.fromarray(rgb).convert(mode)


ODD_BUT_VALID = {
    "greyscale jpeg": lambda: encode(gradient(mode="L"), "JPEG"),
    "cmyk jpeg": lambda: encode(gradient(mode="CMYK"), "JPEG"),
    "16-bit png": lambda: encode(Image.fromarray((np.arange(240 * 320).reshape(240, 320) % 65535).astype(np.uint16)), "PNG"),
    "palette png": lambda: encode(gradient().convert("P"), "PNG"),
    "transparent png": lambda: encode(gradient(mode="RGBA"), "PNG"),
    "gif": lambda: encode(gradient().convert("P"), "GIF"),
    "webp": lambda: encode(gradient(), "WEBP"),
    "bmp": lambda: encode(gradient(), "BMP"),
    "tiny 1x1": lambda: encode(Image.new("RGB", (1, 1), "red"), "PNG"),
    "panorama 4000x300": lambda: encode(gradient(4000, 300), "JPEG"),
    "tall 200x3000": lambda: encode(gradient(200, 3000), "PNG"),
    "photo 4000x3000": lambda: encode(gradient(4000, 3000), "JPEG", quality=90),
}


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
    wide = gradient(300, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_rgb(encode(wide, "JPEG", exif=exif), 224, MAX_PIXELS)
    assert decoded.size == (100, 300)


def test_large_jpeg_decodes_at_reduced_scale():
    decoded = decode_rgb(encode(gradient(4000, 3000), "JPEG"), 224, MAX_PIXELS)
    assert 448 <= min(decoded.size) < 3000  # draft mode: at least 2x the input size, far below full


def test_aspect_is_limited_to_four_thirds():
    assert center_crop_aspect(Image.new("RGB", (1600, 900)), 4 / 3).size == (1200, 900)
    assert center_crop_aspect(Image.new("RGB", (900, 1600)), 4 / 3).size == (900, 1200)
    assert center_crop_aspect(Image.new("RGB", (640, 480)), 4 / 3).size == (640, 480)


BAD = {
    "empty": (b"", "empty_file"),
    "text named .jpg": (b"hello, this is text", "not_an_image"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\n", "not_an_image"),
    "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not_an_image"),
    "eps (a format we do not open)": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not_an_image"),
}


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
    bomb = encode(Image.new("1", (24000, 24000)), "PNG")  # 576 megapixels in a few tens of KB
    assert len(bomb) < 200_000
    with pytest.raises(ImageError) as error:
        preprocess(bomb, PREP, MAX_PIXELS)
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
