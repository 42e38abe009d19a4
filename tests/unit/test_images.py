from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageOps

from models.exceptions import ImageError
from models.vision.images import (
    ImageLimits,
    crop_box,
    decode_rgb,
    load_image,
    preprocess,
    sniff_format,
)
from models.vision.modelcard import ModelCard
from schemas import ErrorCode
from tests.photos import encode, sample_arrays

LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, min_side=16)
RGB = npt.NDArray[np.uint8]


def make_card(
    size: int = 32,
    order: str = "RGB",
    *,
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0),
    std: tuple[float, float, float] = (128.0, 128.0, 128.0),
) -> ModelCard:
    return ModelCard(
        model_id="test-model",
        name="test",
        input_size=size,
        color_order=order,  # type: ignore[arg-type]  # parametrised in tests
        mean=mean,
        std=std,
        layout="NCHW",
        input_name="image",
        output_name="embedding",
        dim=8,
        onnx_fp32="model.onnx",
    )


def quadrants(h: int = 96, w: int = 128) -> RGB:
    """Red, green / blue, white quadrants: any flip or rotation changes the picture."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2 :] = (0, 255, 0)
    img[h // 2 :, : w // 2] = (0, 0, 255)
    img[h // 2 :, w // 2 :] = (255, 255, 255)
    return img


def save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def code_of(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ImageError) as info:
        decode_rgb(data, limits)
    return info.value.code


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("GIF", {})],
)
def test_lossless_formats_decode_exactly(fmt: str, params: dict[str, object]) -> None:
    rgb = quadrants()
    data = save(Image.fromarray(rgb), fmt, **params)
    assert sniff_format(data) == fmt
    out = decode_rgb(data, LIMITS)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(("fmt", "params"), [("JPEG", {"quality": 95}), ("WEBP", {"quality": 90})])
def test_lossy_formats_decode_close(fmt: str, params: dict[str, object]) -> None:
    rgb = quadrants()
    out = decode_rgb(save(Image.fromarray(rgb), fmt, **params), LIMITS)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 4


def test_real_photo_jpeg_matches_pillow() -> None:
    data = encode(sample_arrays()["chelsea"], quality=90)
    ours = decode_rgb(data, LIMITS)
    with Image.open(io.BytesIO(data)) as im:
        reference = np.asarray(im.convert("RGB"))
    assert ours.shape == reference.shape == (300, 451, 3)
    # Both are libjpeg-turbo builds with the accurate IDCT; allow rounding differences.
    assert np.abs(ours.astype(int) - reference).max() <= 2


def test_gif_first_frame_is_used() -> None:
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    blue = Image.new("RGB", (40, 30), (0, 0, 255))
    data = save(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    out = decode_rgb(data, LIMITS)
    assert out.shape == (30, 40, 3)
    assert (out == (255, 0, 0)).all()


def test_greyscale_jpeg_becomes_three_equal_channels() -> None:
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    out = decode_rgb(save(Image.fromarray(grey), "JPEG", quality=95), LIMITS)
    assert out.shape == (48, 64, 3)
    assert (out[:, :, 0] == out[:, :, 1]).all()
    assert (out[:, :, 1] == out[:, :, 2]).all()
    assert np.abs(out[:, :, 0].astype(int) - grey).mean() < 2


def test_cmyk_jpeg_converts_like_pillow() -> None:
    cmyk = Image.fromarray(quadrants()).convert("CMYK")
    data = save(cmyk, "JPEG", quality=95)
    out = decode_rgb(data, LIMITS)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "CMYK"
        reference = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(out, reference)
    assert np.abs(out.astype(int) - quadrants()).mean() < 6


def test_palette_png() -> None:
    rgb = quadrants()
    data = save(Image.fromarray(rgb).convert("P"), "PNG")
    np.testing.assert_array_equal(decode_rgb(data, LIMITS), rgb)


def test_palette_transparency_goes_over_white() -> None:
    im = Image.fromarray(quadrants()).convert("P")
    red_index = im.getpixel((0, 0))
    data = save(im, "PNG", transparency=red_index)
    out = decode_rgb(data, LIMITS)
    assert (out[:48, :64] == 255).all()  # the red quadrant was transparent
    assert (out[:48, 64:] == (0, 255, 0)).all()


def test_rgba_composites_over_white() -> None:
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[:, :, 0] = 255  # pure red
    rgba[:, :10, 3] = 0
    rgba[:, 10:20, 3] = 128
    rgba[:, 20:, 3] = 255
    out = decode_rgb(save(Image.fromarray(rgba), "PNG"), LIMITS)
    assert (out[:, :10] == 255).all()
    assert (out[:, 10:20] == (255, 127, 127)).all()
    assert (out[:, 20:] == (255, 0, 0)).all()


def test_la_composites_over_white() -> None:
    la = np.zeros((20, 20, 2), dtype=np.uint8)  # black
    la[:, 10:, 1] = 255
    out = decode_rgb(save(Image.fromarray(la), "PNG"), LIMITS)
    assert (out[:, :10] == 255).all()
    assert (out[:, 10:] == 0).all()


def test_sixteen_bit_png_keeps_top_byte() -> None:
    wide = np.full((20, 20), 0x1234, dtype=np.uint16)
    wide[:, 10:] = 0xFF00
    data = save(Image.fromarray(wide), "PNG")
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode.startswith("I")
    out = decode_rgb(data, LIMITS)
    assert (out[:, :10] == 0x12).all()
    assert (out[:, 10:] == 0xFF).all()


def test_one_bit_png() -> None:
    bits = np.zeros((20, 20), dtype=bool)
    bits[:, 10:] = True
    out = decode_rgb(save(Image.fromarray(bits), "PNG"), LIMITS)
    assert (out[:, :10] == 0).all()
    assert (out[:, 10:] == 255).all()


# --- EXIF orientation ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_matches_pillow_transpose(orientation: int, fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, object] = {"exif": exif.tobytes()}
    if fmt == "JPEG":
        params["quality"] = 95
    data = save(Image.fromarray(quadrants(64, 96)), fmt, **params)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = decode_rgb(data, LIMITS)
    assert out.shape == expected.shape
    assert out.shape[:2] == ((96, 64) if orientation >= 5 else (64, 96))
    assert np.abs(out.astype(int) - expected).max() <= 2


def test_broken_exif_is_ignored() -> None:
    data = save(Image.fromarray(quadrants()), "JPEG", quality=95, exif=b"Exif\x00\x00garbage!")
    assert decode_rgb(data, LIMITS).shape == (96, 128, 3)


# --- guard rails ---------------------------------------------------------------------------


def test_error_codes_are_dead_letter_codes() -> None:
    assert {e.value for e in ErrorCode} >= {
        "image_too_large",
        "image_undecodable",
        "image_too_many_pixels",
        "image_too_small",
    }


def test_zero_bytes() -> None:
    assert code_of(b"") == ErrorCode.IMAGE_UNDECODABLE


def test_text_file_named_jpg() -> None:
    assert code_of(b"this is a product description, not a photo\n" * 10) == "image_undecodable"


def test_jpeg_magic_then_garbage() -> None:
    assert code_of(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4) == "image_undecodable"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_truncated_files(fmt: str) -> None:
    rgb = sample_arrays()["coffee"]
    data = encode(rgb, fmt)
    assert code_of(data[: len(data) // 2]) == "image_undecodable"


def test_too_many_bytes() -> None:
    data = encode(quadrants(), "PNG")
    small = ImageLimits(max_bytes=len(data) - 1, max_pixels=10**9, min_side=1)
    assert code_of(data, small) == "image_too_large"
    assert decode_rgb(data, ImageLimits(len(data), 10**9, 1)).shape == (96, 128, 3)


def png_bomb(side: int) -> bytes:
    """A valid 1-bit greyscale PNG of side x side zero pixels, a few dozen KB on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    parts = [packer.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(packer.compress(row * (side % 1000)))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def test_png_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = png_bomb(20000)
    assert len(bomb) < 200_000
    with Image.open(io.BytesIO(png_bomb(200))) as small:  # the builder makes real PNGs
        assert small.size == (200, 200)
        small.load()
    started = time.perf_counter()
    assert code_of(bomb) == "image_too_many_pixels"
    # Decoding 4e8 pixels would take seconds and over a gigabyte; the header check does not.
    assert time.perf_counter() - started < 2.0


def test_jpeg_header_claiming_huge_size_is_refused() -> None:
    data = bytearray(encode(quadrants(), "JPEG"))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    # SOF0: marker, length (2), precision (1), height (2), width (2).
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    assert code_of(bytes(data)) == "image_too_many_pixels"


def test_min_side() -> None:
    narrow = encode(np.zeros((500, 10, 3), dtype=np.uint8), "PNG")
    assert code_of(narrow) == "image_too_small"
    exact = encode(np.zeros((16, 16, 3), dtype=np.uint8), "PNG")
    assert decode_rgb(exact, LIMITS).shape == (16, 16, 3)


def test_max_pixels_boundary() -> None:
    data = encode(np.zeros((100, 100, 3), dtype=np.uint8), "PNG")
    assert decode_rgb(data, ImageLimits(10**6, 10_000, 1)).shape == (100, 100, 3)
    assert code_of(data, ImageLimits(10**6, 9_999, 1)) == "image_too_many_pixels"


# --- scaled decoding and preprocessing -----------------------------------------------------


def test_draft_decode_downscales_large_jpegs_but_not_below_the_target() -> None:
    big = Image.fromarray(sample_arrays()["chelsea"]).resize((2000, 1330))
    data = save(big, "JPEG", quality=90)
    full = decode_rgb(data, LIMITS)
    scaled = decode_rgb(data, LIMITS, min_output_side=256)
    assert full.shape == (1330, 2000, 3)
    assert 256 <= min(scaled.shape[:2]) < 1330
    card = make_card(224)
    a = preprocess(full, card)
    b = load_image(data, LIMITS, card)
    assert np.abs(a - b).mean() < 0.05  # same picture, within resampling noise


def test_crop_box_matches_resize_then_centre_crop() -> None:
    card = make_card(224)  # resize 256, crop 224
    assert card.resize_size == 256
    left, top, right, bottom = crop_box(400, 300, card)
    assert (left, top) == pytest.approx((68.75, 18.75))
    assert (right - left, bottom - top) == pytest.approx((262.5, 262.5))


def test_preprocess_normalises_per_card() -> None:
    rgb = np.empty((50, 70, 3), dtype=np.uint8)
    rgb[:] = (255, 127, 0)
    out = preprocess(rgb, make_card(32))
    assert out.shape == (3, 32, 32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1], 0.0)
    np.testing.assert_allclose(out[2], -127 / 128)
    bgr = preprocess(rgb, make_card(32, "BGR"))
    np.testing.assert_allclose(bgr[0], -127 / 128)
    np.testing.assert_allclose(bgr[2], 1.0)


@pytest.mark.parametrize("shape", [(100, 300), (300, 100)])
def test_preprocess_keeps_the_centre(shape: tuple[int, int]) -> None:
    h, w = shape
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[:, :, 1] = 255  # green borders
    if w > h:
        rgb[:, w // 3 : 2 * w // 3] = (255, 0, 0)
    else:
        rgb[h // 3 : 2 * h // 3, :] = (255, 0, 0)
    out = preprocess(rgb, make_card(32))
    np.testing.assert_allclose(out[0], 1.0)  # all red
    np.testing.assert_allclose(out[1], -127 / 128)


def test_preprocess_fills_the_given_row() -> None:
    batch = np.zeros((2, 3, 32, 32), dtype=np.float32)
    rgb = np.full((40, 40, 3), 255, dtype=np.uint8)
    returned = preprocess(rgb, make_card(32), out=batch[1])
    assert np.shares_memory(returned, batch)
    np.testing.assert_allclose(batch[1], 1.0)
    assert (batch[0] == 0).all()


def test_preprocess_accepts_rotated_views() -> None:
    rgb = quadrants(64, 96)
    rotated = np.rot90(rgb)  # a non-contiguous view, as EXIF handling returns
    out = preprocess(rotated, make_card(32))
    expected = preprocess(np.ascontiguousarray(rotated), make_card(32))
    np.testing.assert_array_equal(out, expected)
