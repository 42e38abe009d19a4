"""Image bytes to model input: guarded decoding to RGB, then resize, centre crop and normalise.

Decoding is defensive because product images come from anyone: the encoded size, the pixel
count (read from the header, before any pixel is decoded, so a decompression bomb costs
nothing) and the shorter side are checked against ``ImageLimits``, and every failure is an
``ImageError`` whose ``code`` is the dead-letter ``ErrorCode``.

Only JPEG, PNG, WebP, GIF (first frame) and BMP are accepted: the format is sniffed from the
magic bytes and the matching Pillow plugin is opened directly, so none of Pillow's other
parsers ever sees untrusted bytes. Baseline/progressive YCbCr and greyscale JPEGs (nearly
all product photos) go through libjpeg-turbo via ``simplejpeg`` with DCT-domain downscaling
when the photo is much larger than the model input; ``bench/embed.py --decoders`` measures
it against Pillow. Everything else goes through Pillow.

``read_header`` runs the same pixel-free checks alone and says whether a JPEG is plain
enough for any decoder (nvJPEG included): ``models.vision.device_input`` routes images with it.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from PIL import BmpImagePlugin, GifImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin

from models.exceptions import ImageError
from schemas import ErrorCode

if TYPE_CHECKING:
    from models.vision.modelcard import ModelCard

try:
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dependency; Pillow still works
    simplejpeg = None

try:
    from PIL import WebPImagePlugin
except ImportError:  # pragma: no cover - Pillow wheels ship libwebp
    WebPImagePlugin = None  # type: ignore[assignment]  # optional plugin, checked at use

RGBArray = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]

_ORIENTATION_TAG: Final = 0x0112
# Errors Pillow's parsers raise on malformed input (they are not consistent about which).
_PARSE_ERRORS: Final = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError)
_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass(frozen=True)
class ImageLimits:
    """Guard rails applied before and while decoding (all from settings)."""

    max_bytes: int
    max_pixels: int
    min_side: int


def sniff_format(data: bytes) -> str | None:
    """Name the Pillow format of ``data`` from its magic bytes (None if not supported)."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _open_header(fmt: str, data: bytes) -> ImageFile.ImageFile:
    """Parse only the header with the one plugin for ``fmt``.

    Calling the plugin class (rather than ``Image.open``) also skips Pillow's process-wide
    decompression-bomb check: ours runs next with the configured limit, and Pillow's would
    otherwise turn large-but-allowed images into warnings.
    """
    fp = io.BytesIO(data)
    if fmt == "JPEG":
        return JpegImagePlugin.JpegImageFile(fp)
    if fmt == "PNG":
        return PngImagePlugin.PngImageFile(fp)
    if fmt == "GIF":
        return GifImagePlugin.GifImageFile(fp)
    if fmt == "BMP":
        return BmpImagePlugin.BmpImageFile(fp)
    if WebPImagePlugin is None:
        raise ImageError(ErrorCode.IMAGE_UNDECODABLE, "WebP support is not available")
    return WebPImagePlugin.WebPImageFile(fp)


def check_size(width: int, height: int, limits: ImageLimits) -> None:
    """Raise ``ImageError`` if the header dimensions break the pixel or side limits."""
    if width * height > limits.max_pixels:
        raise ImageError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS,
            f"{width}x{height} = {width * height} pixels exceeds {limits.max_pixels}",
        )
    if min(width, height) < limits.min_side:
        raise ImageError(
            ErrorCode.IMAGE_TOO_SMALL,
            f"{width}x{height} has a side shorter than {limits.min_side} px",
        )


def open_header(data: bytes, limits: ImageLimits) -> tuple[str, ImageFile.ImageFile]:
    """Apply every guard rail that needs no pixel; return the format and the opened header.

    Checks the encoded size, sniffs the format, parses the header with that format's plugin
    only, then checks the pixel count and the shorter side. The caller closes the image.
    """
    if len(data) > limits.max_bytes:
        raise ImageError(ErrorCode.IMAGE_TOO_LARGE, f"{len(data)} bytes exceeds {limits.max_bytes}")
    if not data:
        raise ImageError(ErrorCode.IMAGE_UNDECODABLE, "empty image")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(ErrorCode.IMAGE_UNDECODABLE, "not a JPEG, PNG, WebP, GIF or BMP image")
    try:
        im = _open_header(fmt, data)
    except Image.DecompressionBombError as exc:
        # Some plugins (GIF frames larger than the screen) check while parsing the header.
        raise ImageError(ErrorCode.IMAGE_TOO_MANY_PIXELS, f"{fmt} header: {exc}") from exc
    except _PARSE_ERRORS as exc:
        raise ImageError(ErrorCode.IMAGE_UNDECODABLE, f"bad {fmt} header: {exc}") from exc
    try:
        check_size(*im.size, limits)
    except ImageError:
        im.close()
        raise
    return fmt, im


def decode_rgb(data: bytes, limits: ImageLimits, *, min_output_side: int | None = None) -> RGBArray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array, upright per EXIF orientation.

    ``min_output_side``: the decoder may downscale (in the DCT domain for JPEG) as long as
    the shorter side stays at least this long; ``None`` decodes at full size.
    """
    fmt, im = open_header(data, limits)
    with im:
        try:
            if fmt == "JPEG" and im.mode in ("RGB", "L") and simplejpeg is not None:
                rgb = _decode_jpeg_turbo(data, min_output_side)
            else:
                rgb = _decode_pillow(im, min_output_side)
            orientation = _orientation(im)
        except ImageError:
            raise
        except (*_PARSE_ERRORS, Image.DecompressionBombError) as exc:
            raise ImageError(ErrorCode.IMAGE_UNDECODABLE, f"cannot decode {fmt}: {exc}") from exc
    return apply_orientation(rgb, orientation)


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, once the pixel-free guard rails have passed."""

    format: str
    width: int
    height: int
    # EXIF orientation 1..8; read for JPEG only, whose EXIF block precedes the pixels.
    orientation: int
    # An 8-bit Huffman sequential JPEG in YCbCr or greyscale that ends in EOI: the kind every
    # JPEG decoder (libjpeg-turbo, nvJPEG) decodes alike. Progressive, arithmetic-coded,
    # CMYK, Adobe-RGB and truncated files are False.
    plain_jpeg: bool


def read_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Run ``decode_rgb``'s pixel-free guard rails and describe the image; decodes no pixel.

    Raises the same ``ImageError`` as ``decode_rgb`` would for every check before decoding.
    """
    fmt, im = open_header(data, limits)
    with im:
        width, height = im.size
        if fmt != "JPEG":
            return ImageHeader(fmt, width, height, 1, plain_jpeg=False)
        return ImageHeader(fmt, width, height, _orientation(im), _plain_jpeg(im, data))


_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SEQUENTIAL_HUFFMAN: Final = (0xC0, 0xC1)
_RGB_COMPONENT_IDS: Final = [ord("R"), ord("G"), ord("B")]


def _plain_jpeg(im: ImageFile.ImageFile, data: bytes) -> bool:
    if im.mode not in ("RGB", "L") or im.info.get("progressive"):
        return False
    if im.mode == "RGB":
        # Components stored as RGB rather than YCbCr: an Adobe transform of 0, or ids R, G, B.
        layers = getattr(im, "layer", [])
        if im.info.get("adobe_transform") == 0 or [c[0] for c in layers] == _RGB_COMPONENT_IDS:
            return False
    return _frame_marker(data) in _SEQUENTIAL_HUFFMAN and data.endswith(b"\xff\xd9")


def _frame_marker(data: bytes) -> int | None:
    """The JPEG's SOFn marker (0xC0 baseline, 0xC2 progressive, ...); None if there is none."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _SOF_MARKERS:
            return marker
        elif marker in (0xDA, 0xD9):  # start of scan or end of image before any frame
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _decode_jpeg_turbo(data: bytes, min_output_side: int | None) -> RGBArray:
    side = min_output_side or 0
    # strict=True turns libjpeg's "premature end of data" warnings into errors: a truncated
    # upload is rejected rather than embedded with a grey lower half. min_factor=2: the
    # fractional DCT scales (7/8 .. 5/8) decode slower than full size (bench/embed.py
    # --decoders), so only 1/2, 3/8, 1/4 and 1/8 are used (models/vision/device_resize.py, which
    # reproduces this path on a GPU, depends on that choice).
    out: RGBArray = simplejpeg.decode_jpeg(
        data, colorspace="RGB", min_height=side, min_width=side, min_factor=2, strict=True
    )
    return out


def _decode_pillow(im: ImageFile.ImageFile, min_output_side: int | None) -> RGBArray:
    if min_output_side and im.format == "JPEG":
        # Pillow's JPEG draft mode picks a DCT scale of 1/2, 1/4 or 1/8 that keeps both
        # sides at least the requested size.
        im.draft(im.mode, (min_output_side, min_output_side))
    im.load()
    return to_rgb(im)


def to_rgb(im: Image.Image) -> RGBArray:
    """Any Pillow mode as (H, W, 3) uint8 RGB; transparency is composited over white."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit samples keep their top byte ('I' is how older Pillows open 16-bit PNGs).
        wide = np.clip(np.asarray(im), 0, 65535)
        grey = (wide >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        # Integer "over white": c*a/255 + 255*(255-a)/255, rounded.
        blended = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return blended.astype(np.uint8)
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except _PARSE_ERRORS:
        # A broken EXIF block should not reject an otherwise fine photo.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(rgb: RGBArray, orientation: int) -> RGBArray:
    """Rotate/flip an array so that an EXIF ``orientation`` (1..8) image is upright."""
    if orientation == 2:
        return rgb[:, ::-1]
    if orientation == 3:
        return rgb[::-1, ::-1]
    if orientation == 4:
        return rgb[::-1]
    if orientation == 5:
        return rgb.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(rgb, k=-1)
    if orientation == 7:
        return rgb.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(rgb, k=1)
    return rgb


def crop_box(width: int, height: int, card: ModelCard) -> tuple[float, float, float, float]:
    """Map "resize the shorter side, then centre crop" to a box in source pixels.

    Resizing straight from this box to ``input_size`` gives the same picture as resizing the
    whole image and then cropping, at a fraction of the work.
    """
    side = min(width, height) * card.input_size / card.resize_size
    left = (width - side) / 2
    top = (height - side) / 2
    return (left, top, left + side, top + side)


def preprocess(rgb: RGBArray, card: ModelCard, out: FloatArray | None = None) -> FloatArray:
    """Resize + centre crop + normalise an RGB array to the card's float32 CHW input.

    ``out`` (shape (3, S, S), float32) is filled in place when given, e.g. a row of a batch.
    """
    size = card.input_size
    height, width = rgb.shape[:2]
    im = Image.fromarray(np.ascontiguousarray(rgb))
    resized = im.resize((size, size), Image.Resampling.BILINEAR, box=crop_box(width, height, card))
    pixels = np.asarray(resized)
    if card.color_order == "BGR":
        pixels = pixels[:, :, ::-1]
    if out is None:
        out = np.empty((3, size, size), dtype=np.float32)
    mean, inv_std = _norm_constants(card)
    np.subtract(pixels.transpose(2, 0, 1), mean, out=out, dtype=np.float32)
    np.multiply(out, inv_std, out=out)
    return out


def _norm_constants(card: ModelCard) -> tuple[FloatArray, FloatArray]:
    # The card lists mean/std in the model's channel order, which is the order we feed.
    mean = np.asarray(card.mean, dtype=np.float32).reshape(3, 1, 1)
    inv_std = 1.0 / np.asarray(card.std, dtype=np.float32).reshape(3, 1, 1)
    return mean, inv_std


def load_image(
    data: bytes, limits: ImageLimits, card: ModelCard, out: FloatArray | None = None
) -> FloatArray:
    """Bytes to the card's model input: ``decode_rgb`` with draft decoding, then ``preprocess``."""
    rgb = decode_rgb(data, limits, min_output_side=card.resize_size)
    return preprocess(rgb, card, out)


def load_into(
    data: bytes, limits: ImageLimits, card: ModelCard, out: FloatArray
) -> ImageError | None:
    """``load_image`` into ``out``; returns the ``ImageError`` instead of raising it.

    Any other exception becomes ``image_undecodable``: Pillow raises assorted types on crafted
    files, and one hostile file must not take the rest of its batch down.
    """
    try:
        load_image(data, limits, card, out=out)
    except ImageError as exc:
        return exc
    except Exception as exc:
        return ImageError(
            ErrorCode.IMAGE_UNDECODABLE, f"decoder failed: {type(exc).__name__}: {exc}"
        )
    return None
