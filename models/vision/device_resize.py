"""The CPU path's resize, done for a batch of decoded images on any torch device.

``models.vision.images.load_image`` does three things to a JPEG after reading its header: libjpeg-
turbo decodes it scaled down in the DCT domain (by 1/2, 3/8, 1/4 or 1/8, the most that keeps
both sides at least the card's ``resize_size``), the result is turned upright per EXIF, and
PIL's antialiased bilinear filter resizes the ``crop_box`` to the input size, one axis at a
time, rounding to 8 bits after each pass. Each step is a linear map along each axis followed
by rounding, so ``resize_crop`` applies the same maps as matrices to whole canvases of images:

- the DCT-domain scaling, emulated on the full-size pixels block by block (8 x 8 blocks, as
  the JPEG codes them): libjpeg-turbo's 1/2, 1/4 and 1/8 outputs are the blocks' box averages
  and its 3/8 output is the 3-point inverse DCT of the 3 x 3 lowest frequencies;
- PIL's bilinear resample over a float box: output pixel o of a box [b0, b1) is the triangle-
  weighted mean of the source pixels around b0 + (o + 0.5) * scale, the triangle's half-width
  being max(scale, 1), weights normalised over the pixels inside the image.

With pixels decoded alike the result equals the CPU path's (tests/unit/test_device_input.py:
exactly, where no DCT scaling applies; within a grey level or two, mostly, where it does).
Images of different sizes share a zero-padded canvas; each image's weights are zero outside
it. Canvases are bounded by ``canvas_elements`` so that a batch of large photos is resized in
several groups rather than in one giant allocation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import torch

from models.vision.images import crop_box
from models.vision.modelcard import ModelCard

# Elements of one resize canvas (2**26: 256 MiB as float32), which bounds the device memory a
# group of images resized together takes: e.g. 21 photos of 1000 x 1000, or one of 40 Mpx.
CANVAS_ELEMENTS: Final = 1 << 26
# libjpeg-turbo's DCT scaling factors below 1/2 that simplejpeg (min_factor=2) chooses from.
DCT_SCALES: Final = (1 / 8, 1 / 4, 3 / 8, 1 / 2)


def dct_scale(height: int, width: int, min_side: int) -> float:
    """The scale the CPU path decodes a JPEG at: the smallest that keeps both sides >= min_side."""
    for scale in DCT_SCALES:
        if math.ceil(height * scale) >= min_side and math.ceil(width * scale) >= min_side:
            return scale
    return 1.0


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Rotate/flip a (3, H, W) image upright for an EXIF ``orientation``, as the CPU path does."""
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1, 2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(image, k=-1, dims=(1, 2))
    if orientation == 7:
        return image.transpose(1, 2).flip(1, 2)
    if orientation == 8:
        return torch.rot90(image, k=1, dims=(1, 2))
    return image


def resize_crop(
    images: Sequence[torch.Tensor],
    card: ModelCard,
    orientations: Sequence[int] | None = None,
    *,
    dct_scaling: bool = True,
    canvas_elements: int = CANVAS_ELEMENTS,
) -> torch.Tensor:
    """Scale, orient, resize and centre crop decoded images as ``models.vision.images.load_image``.

    ``images``: (3, H, W) uint8 tensors, as stored (before EXIF orientation), on one device.
    ``dct_scaling``: emulate the JPEG decoder's DCT-domain downscaling (JPEGs); off for
    pixels that were not decoded from a JPEG. Returns (N, 3, S, S) float32 pixel values,
    whole numbers in 0..255 like the CPU path's 8-bit ones.
    """
    orientations = orientations or [1] * len(images)
    size = card.input_size
    device = images[0].device if images else torch.device("cpu")
    scaled = _scale_jpegs(images, card, canvas_elements) if dct_scaling else list(images)
    windows = [
        _window(orient(image, o), card) for image, o in zip(scaled, orientations, strict=True)
    ]
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    shapes = [(int(pixels.shape[1]), int(pixels.shape[2])) for pixels, _ in windows]
    for group in _groups(shapes, canvas_elements):
        pixels = _resample([windows[i] for i in group], size)
        out.index_copy_(0, torch.tensor(group, dtype=torch.long, device=device), pixels)
    return out


Box = tuple[float, float, float, float]


def _window(image: torch.Tensor, card: ModelCard) -> tuple[torch.Tensor, Box]:
    """The part of ``image`` the resize reads (its crop box plus the filter's reach).

    Pixels outside it get zero weight, so dropping them changes nothing but the work.
    """
    h, w = int(image.shape[1]), int(image.shape[2])
    left, top, right, bottom = crop_box(w, h, card)
    x0, x1 = _reach(left, right, w, card.input_size)
    y0, y1 = _reach(top, bottom, h, card.input_size)
    return image[:, y0:y1, x0:x1], (left - x0, top - y0, right - x0, bottom - y0)


def _reach(start: float, stop: float, length: int, out: int) -> tuple[int, int]:
    half_width = max((stop - start) / out, 1.0)
    return max(0, math.floor(start - half_width)), min(length, math.ceil(stop + half_width))


def _scale_jpegs(
    images: Sequence[torch.Tensor], card: ModelCard, canvas_elements: int
) -> list[torch.Tensor]:
    """Each image as the JPEG decoder's DCT scaling would have given it, a canvas at a time."""
    scaled = list(images)
    by_scale: dict[float, list[int]] = {}
    for i, image in enumerate(images):
        scale = dct_scale(int(image.shape[1]), int(image.shape[2]), card.resize_size)
        if scale < 1:
            by_scale.setdefault(scale, []).append(i)
    for scale, members in by_scale.items():
        padded = [
            (_ceil8(int(images[i].shape[1])), _ceil8(int(images[i].shape[2]))) for i in members
        ]
        for part in _groups(padded, canvas_elements):
            group = [members[k] for k in part]
            smaller = _scale_blocks([images[i] for i in group], scale)
            for i, small in zip(group, smaller, strict=True):
                scaled[i] = small
    return scaled


def _resample(windows: list[tuple[torch.Tensor, Box]], size: int) -> torch.Tensor:
    """PIL's bilinear resize of each image's box to ``size`` x ``size``, in one batch."""
    device = windows[0][0].device
    height = max(int(pixels.shape[1]) for pixels, _ in windows)
    width = max(int(pixels.shape[2]) for pixels, _ in windows)
    canvas = torch.zeros((len(windows), 3, height, width), dtype=torch.uint8, device=device)
    boxes = []
    for k, (pixels, box) in enumerate(windows):
        h, w = int(pixels.shape[1]), int(pixels.shape[2])
        canvas[k, :, :h, :w] = pixels
        boxes.append((h, w, *box))
    spec = torch.tensor(boxes, dtype=torch.float64, device=device)
    heights, widths, left, top, right, bottom = spec.unbind(1)
    across = _triangle_weights(widths, left, right, size, width)  # (N, S, W)
    down = _triangle_weights(heights, top, bottom, size, height)  # (N, S, H)
    # Horizontal pass first, each pass rounded to 8 bits, as PIL resamples.
    rows = _round8(torch.matmul(canvas.float(), across.transpose(1, 2).unsqueeze(1)))
    return _round8(torch.matmul(down.unsqueeze(1), rows))


def _triangle_weights(
    sizes: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, out: int, length: int
) -> torch.Tensor:
    """(N, out, length) weights of PIL's bilinear filter from [start, stop) to ``out`` pixels."""
    scale = (stop - start) / out
    half_width = scale.clamp(min=1.0)
    steps = torch.arange(out, dtype=torch.float64, device=sizes.device) + 0.5
    centres = start[:, None] + steps[None, :] * scale[:, None]
    source = torch.arange(length, dtype=torch.float64, device=sizes.device)
    distance = (source[None, None, :] + 0.5 - centres[:, :, None]) / half_width[:, None, None]
    weights = (1 - distance.abs()).clamp(min=0) * (source[None, None, :] < sizes[:, None, None])
    return (weights / weights.sum(-1, keepdim=True)).float()


def _scale_blocks(images: list[torch.Tensor], scale: float) -> list[torch.Tensor]:
    """libjpeg-turbo's DCT-domain downscaling, emulated on 8 x 8 blocks of decoded pixels."""
    device = images[0].device
    height = max(_ceil8(int(im.shape[1])) for im in images)
    width = max(_ceil8(int(im.shape[2])) for im in images)
    canvas = torch.empty((len(images), 3, height, width), dtype=torch.uint8, device=device)
    for k, image in enumerate(images):
        _paste_padded(canvas[k], image)
    kernel = _block_kernel(scale).to(device)  # (n, 8): one block of 8 pixels to n
    n = kernel.shape[0]
    blocks = canvas.float().view(len(images), 3, height // 8, 8, width)
    columns = torch.matmul(kernel, blocks).view(len(images), 3, height // 8 * n, width // 8, 8)
    scaled = torch.matmul(columns, kernel.T).view(len(images), 3, height // 8 * n, width // 8 * n)
    small = _round8(scaled).to(torch.uint8)
    return [
        small[k, :, : math.ceil(int(im.shape[1]) * scale), : math.ceil(int(im.shape[2]) * scale)]
        for k, im in enumerate(images)
    ]


def _block_kernel(scale: float) -> torch.Tensor:
    """The (n, 8) map of one row of an 8-pixel block to its n = 8 * scale scaled pixels."""
    n = round(8 * scale)
    if n == 3:
        # libjpeg-turbo's 3/8 is a true reduced inverse DCT: keep the 3 lowest frequencies.
        return (_dct(3).T @ _dct(8)[:3] * math.sqrt(3 / 8)).float()
    # 1/2, 1/4, 1/8: its output is the mean of each 8/n pixels (1/8: the block's DC term).
    return torch.kron(torch.eye(n, dtype=torch.float64), torch.full((1, 8 // n), n / 8)).float()


def _dct(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix of size n (rows: frequencies)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix


def _paste_padded(canvas: torch.Tensor, image: torch.Tensor) -> None:
    """Copy ``image`` to the top left of ``canvas``, edge pixels repeated to whole 8 x 8 blocks.

    A JPEG encoder pads a partial block by repeating the edge, so the decoder's scaled output
    for the last block averages those repeats too.
    """
    _, h, w = image.shape
    h8, w8 = _ceil8(h), _ceil8(w)
    canvas[:, :h, :w] = image
    if w8 > w:
        canvas[:, :h, w:w8] = image[:, :, w - 1 : w]
    if h8 > h:
        canvas[:, h:h8, :w8] = canvas[:, h - 1 : h, :w8]


def _round8(values: torch.Tensor) -> torch.Tensor:
    # Halves round up and results clamp to 0..255, as libjpeg's and PIL's integer code does.
    return torch.floor(values + 0.5).clamp_(0, 255)


def _ceil8(n: int) -> int:
    return -(-n // 8) * 8


def _groups(shapes: list[tuple[int, int]], canvas_elements: int) -> list[list[int]]:
    """Indices grouped so that each group's shared canvas stays within ``canvas_elements``."""
    # Landscape and portrait apart, then by height and width: little canvas goes to padding.
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0] > shapes[i][1], *shapes[i]))
    groups: list[list[int]] = []
    group: list[int] = []
    height = width = 0
    for i in order:
        h, w = max(height, shapes[i][0]), max(width, shapes[i][1])
        if group and (len(group) + 1) * 3 * h * w > canvas_elements:
            groups.append(group)
            group, h, w = [], shapes[i][0], shapes[i][1]
        group.append(i)
        height, width = h, w
    if group:
        groups.append(group)
    return groups
