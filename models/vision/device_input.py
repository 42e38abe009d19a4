"""Image bytes to a model-ready batch on the inference device, JPEGs decoded there (nvJPEG).

A GPU embed worker is bound by JPEG decoding on the host's cores; ``DeviceInput`` moves that
work to the device. Per image, on the host, the CPU path's pixel-free guard rails run first
(``models.vision.images.read_header``: encoded size, format sniffing, header parse by the one
Pillow plugin, pixel count and shorter side, EXIF orientation), so a decompression bomb
still costs nothing and fails with the same ``ImageError``. Plain JPEGs (8-bit sequential
Huffman, YCbCr or greyscale, complete) are then batch-decoded by
``torchvision.io.decode_jpeg`` on the device (nvJPEG on CUDA; libjpeg on a CPU device, which
is how the unit tests run this code), scaled, turned upright, resized and centre-cropped as
the CPU path does, a canvas of images at a time (``models.vision.device_resize.resize_crop``), and
normalised per the card.

Everything else takes the CPU path (``models.vision.images.load_image``) image by image inside the
same batch: other formats, progressive, arithmetic-coded or CMYK JPEGs, and any JPEG the
device decoder refuses (a failed batch decode is retried image by image to find it). So an
image that fails gets the CPU path's ``ImageError`` and dead-letter code, always.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from models.exceptions import ImageError
from models.vision.device_resize import CANVAS_ELEMENTS, resize_crop
from models.vision.images import ImageHeader, ImageLimits, load_into, read_header
from models.vision.modelcard import ModelCard

# Pixels decoded on the device at a time (2**27: 384 MiB of RGB): a batch of large photos is
# decoded and resized in parts, so its device memory stays bounded whatever the batch size.
DECODE_PIXELS: Final = 1 << 27


@dataclass(frozen=True)
class PreparedBatch:
    """A model-ready batch on the device, and what became of every input image."""

    # (len(positions), 3, S, S), normalised per the card, in the encoder's input dtype.
    tensor: torch.Tensor
    # Input index of each row, ascending.
    positions: list[int]
    # Input index -> why that image has no row.
    errors: dict[int, ImageError]
    # Input indices decoded on the device; the other rows came from the CPU path.
    on_device: frozenset[int]


class DeviceInput:
    """Decodes, resizes and normalises batches of encoded images on a torch device."""

    def __init__(
        self,
        card: ModelCard,
        limits: ImageLimits,
        *,
        device: str | torch.device = "cuda",
        dtype: torch.dtype = torch.float32,
        canvas_elements: int = CANVAS_ELEMENTS,
        decode_pixels: int = DECODE_PIXELS,
    ) -> None:
        """Build the input path for ``card`` on ``device``; rows come out as ``dtype``."""
        self._card = card
        self._limits = limits
        self.device = torch.device(device)
        self.dtype = dtype
        self._canvas_elements = canvas_elements
        self._decode_pixels = decode_pixels
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(card.mean, dtype=torch.float32).view(shape).to(self.device)
        inv_std = 1.0 / torch.tensor(card.std, dtype=torch.float32)
        self._inv_std = inv_std.view(shape).to(self.device)
        # Decoding runs on its own stream, so that batch k+1 decodes while the encoder runs k.
        self._stream: torch.cuda.Stream | None = None
        if self.device.type == "cuda":
            self._stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]  # torch's __new__ is unannotated

    def prepare(self, images: Sequence[bytes], pool: Executor | None = None) -> PreparedBatch:
        """Decode ``images`` into one batch; the CPU-path fallbacks run on ``pool`` if given.

        On CUDA the batch is complete when this returns (its stream is synchronised), so any
        other stream, ONNX Runtime's included, may read it.
        """
        if self._stream is None:
            return self._prepare(images, pool)
        with torch.cuda.stream(self._stream):
            prepared = self._prepare(images, pool)
        self._stream.synchronize()
        return prepared

    def _prepare(self, images: Sequence[bytes], pool: Executor | None) -> PreparedBatch:
        errors: dict[int, ImageError] = {}
        plain: dict[int, ImageHeader] = {}
        host: list[int] = []
        for index, data in enumerate(images):
            try:
                header = read_header(data, self._limits)
            except ImageError as exc:
                errors[index] = exc
                continue
            except Exception:
                host.append(index)  # the CPU path decides what this is, and names its error
                continue
            if header.plain_jpeg:
                plain[index] = header
            else:
                host.append(index)
        # CPU-path images decode on the pool while the device decodes the plain JPEGs.
        loads = self._load_on_host(images, host, pool)
        resized: list[tuple[list[int], torch.Tensor]] = []
        for part in self._parts(plain):
            decoded, refused = self._decode(images, part)
            loads.update(self._load_on_host(images, refused, pool))
            if decoded:
                order = list(decoded)
                pixels = resize_crop(
                    [decoded[i] for i in order],
                    self._card,
                    [plain[i].orientation for i in order],
                    canvas_elements=self._canvas_elements,
                )
                resized.append((order, self._normalise(pixels)))

        rows: dict[int, npt.NDArray[np.float32]] = {}
        for index, (row, future) in loads.items():
            error = future.result() if isinstance(future, Future) else future
            if error is None:
                rows[index] = row
            else:
                errors[index] = error
        on_device = frozenset(i for order, _ in resized for i in order)
        positions = sorted([*on_device, *rows])
        size = self._card.input_size
        batch = torch.empty((len(positions), 3, size, size), dtype=self.dtype, device=self.device)
        row_of = {index: r for r, index in enumerate(positions)}
        for order, values in resized:
            self._place(batch, [row_of[i] for i in order], values)
        if rows:
            order = list(rows)
            host_rows = torch.from_numpy(np.stack([rows[i] for i in order]))
            self._place(batch, [row_of[i] for i in order], host_rows.to(self.device))
        return PreparedBatch(batch, positions, errors, on_device)

    def _parts(self, headers: dict[int, ImageHeader]) -> list[list[int]]:
        """The plain JPEGs in runs of at most ``decode_pixels`` pixels (one at least)."""
        parts: list[list[int]] = []
        part: list[int] = []
        pixels = 0
        for index, header in headers.items():
            area = header.width * header.height
            if part and pixels + area > self._decode_pixels:
                parts.append(part)
                part, pixels = [], 0
            part.append(index)
            pixels += area
        if part:
            parts.append(part)
        return parts

    def _load_on_host(
        self, images: Sequence[bytes], indices: list[int], pool: Executor | None
    ) -> dict[int, tuple[npt.NDArray[np.float32], Future[ImageError | None] | ImageError | None]]:
        size = self._card.input_size
        buffer = np.empty((len(indices), 3, size, size), dtype=np.float32)
        loads: dict[
            int, tuple[npt.NDArray[np.float32], Future[ImageError | None] | ImageError | None]
        ] = {}
        for k, index in enumerate(indices):
            args = (images[index], self._limits, self._card, buffer[k])
            result = pool.submit(load_into, *args) if pool is not None else load_into(*args)
            loads[index] = (buffer[k], result)
        return loads

    def _decode(
        self, images: Sequence[bytes], indices: list[int]
    ) -> tuple[dict[int, torch.Tensor], list[int]]:
        """Decode on the device; returns the (3, H, W) uint8 images and the indices refused."""
        if not indices:
            return {}, []
        # bytearray: torch.frombuffer wants a writable buffer, and bytes are read-only.
        encoded = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in indices]
        try:
            return dict(zip(indices, _decode_jpegs(encoded, self.device), strict=True)), []
        except RuntimeError:
            pass  # one bad image fails the whole batch decode: find it
        decoded: dict[int, torch.Tensor] = {}
        refused: list[int] = []
        for index, data in zip(indices, encoded, strict=True):
            try:
                decoded[index] = _decode_jpegs([data], self.device)[0]
            except RuntimeError:
                refused.append(index)
        return decoded, refused

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._card.color_order == "BGR":
            pixels = pixels.flip(1)
        return (pixels - self._mean) * self._inv_std

    def _place(self, batch: torch.Tensor, rows: list[int], values: torch.Tensor) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        batch.index_copy_(0, index, values.to(self.dtype))


def _decode_jpegs(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    out: list[torch.Tensor] = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    return out


def torch_dtype(element: type[np.floating[Any]]) -> torch.dtype:
    """The torch dtype of a numpy element type (the encoder's input type)."""
    return torch.float16 if element is np.float16 else torch.float32


def cuda_decode_problem() -> str | None:
    """Why JPEGs cannot be decoded on this process's CUDA device, or None if they can."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    from PIL import Image

    probe = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(probe, "JPEG")
    try:
        data = torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)
        _decode_jpegs([data], torch.device("cuda"))
    except RuntimeError as exc:
        return f"torchvision cannot decode JPEG on CUDA: {exc}"
    return None
