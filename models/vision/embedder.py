"""Image bytes in, unit vectors out: decode in a thread pool while the encoder runs.

``embed_images`` cuts its input into chunks. The decode threads fill chunk k+1's input
buffer (each image straight into its row, no extra copy) while the calling thread runs the
encoder on chunk k, so decoding and inference overlap instead of taking turns. Every input
gets exactly one result, in order: a vector, or the ``ImageError`` that says why not.

When the encoder runs on CUDA and torchvision can decode there (``gpu_decode="auto"``), the
chunks are prepared by ``models.vision.device_input.DeviceInput`` instead: JPEGs decoded by nvJPEG
and resized on the GPU, on a stream of their own, chunk k+1 while the encoder runs chunk k,
and bound to ONNX Runtime where they lie. The images it cannot take decode on the decode
threads, as above, inside the same chunk. Without CUDA nothing changes: torch is not needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from models.exceptions import ImageError
from models.vision.encoder import CUDA, Encoder
from models.vision.images import ImageLimits, load_into

if TYPE_CHECKING:  # torch and torchvision are optional (the `gpu` extra)
    from models.vision.device_input import DeviceInput, PreparedBatch

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
Result = Vector | ImageError
GpuDecode = Literal["auto", "off"]

# On a CPU the encoder's cost per image hardly depends on the batch size, so a call is cut
# into at least four chunks of at most CPU_CHUNK images: more overlap for free. On the 2-core
# dev box, batch 8 went from 0.80 to 0.96 of min(bare ORT, decode) with chunks of 2 instead
# of 8 (bench/embed.py --chunk). On a GPU bigger batches are faster: chunks of GPU_CHUNK.
CPU_CHUNK = 4
GPU_CHUNK = 64


@dataclass
class _Chunk:
    start: int
    buffer: npt.NDArray[np.float32]
    decoded: list[Future[ImageError | None]]


class Embedder:
    """Embeds encoded images with an ``Encoder``, decoding on ``decode_threads`` threads."""

    def __init__(
        self,
        encoder: Encoder,
        limits: ImageLimits,
        decode_threads: int,
        *,
        chunk_size: int | None = None,
        gpu_decode: GpuDecode = "auto",
        device_input: DeviceInput | None = None,
    ) -> None:
        """Embed with ``encoder``; ``device_input`` overrides the choice ``gpu_decode`` makes."""
        if decode_threads < 1:
            raise ValueError("decode_threads must be at least 1")
        self._encoder = encoder
        self._limits = limits
        self._card = encoder.card
        self._chunk_size = chunk_size
        self._pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="visrec-decode")
        self._device_input = device_input or _cuda_input(encoder, limits, gpu_decode)
        # One thread prepares the next chunk on the device while this one runs the encoder.
        self._prepare_pool = (
            ThreadPoolExecutor(1, thread_name_prefix="visrec-prepare")
            if self._device_input is not None
            else None
        )
        self._closed = False
        self._lock = threading.Lock()

    @property
    def encoder(self) -> Encoder:
        """The encoder this embedder runs."""
        return self._encoder

    @property
    def input_path(self) -> str:
        """Where images are decoded: ``host``, or ``device:<torch device>`` (e.g. cuda)."""
        if self._device_input is None:
            return "host"
        return f"device:{self._device_input.device}"

    def embed_images(self, images: Sequence[bytes]) -> list[Result]:
        """One result per input, in order: an L2-normalised vector or an ``ImageError``."""
        if self._closed:
            raise RuntimeError("Embedder is closed")
        results: list[Result | None] = [None] * len(images)
        chunk = self._chunk_for(len(images))
        # One call at a time: the chunk buffers and the pool's queue are per call.
        with self._lock:
            if self._device_input is not None:
                self._embed_on_device(images, chunk, results)
                return _complete(results)
            starts = range(0, len(images), chunk)
            pending = self._submit(images, starts[0], chunk) if starts else None
            for index in range(len(starts)):
                current = pending
                assert current is not None
                # Queue the next chunk's decodes before running this one's inference.
                pending = (
                    self._submit(images, starts[index + 1], chunk)
                    if index + 1 < len(starts)
                    else None
                )
                self._finish(current, results)
        return _complete(results)

    def _chunk_for(self, n: int) -> int:
        if self._chunk_size is not None:
            return max(1, self._chunk_size)
        if self._encoder.graph_batch is not None:
            return self._encoder.graph_batch
        if self._encoder.provider == CUDA:
            return GPU_CHUNK
        return max(1, min(CPU_CHUNK, -(-n // 4)))

    def _submit(self, images: Sequence[bytes], start: int, chunk: int) -> _Chunk:
        stop = min(start + chunk, len(images))
        size = self._card.input_size
        buffer = np.empty((stop - start, 3, size, size), dtype=np.float32)
        decoded = [
            self._pool.submit(self._decode_into, images[i], buffer[i - start])
            for i in range(start, stop)
        ]
        return _Chunk(start, buffer, decoded)

    def _decode_into(self, data: bytes, row: npt.NDArray[np.float32]) -> ImageError | None:
        return load_into(data, self._limits, self._card, row)

    def _embed_on_device(
        self, images: Sequence[bytes], chunk: int, results: list[Result | None]
    ) -> None:
        assert self._device_input is not None and self._prepare_pool is not None
        prepare, pool = self._device_input.prepare, self._pool

        def submit(start: int) -> Future[PreparedBatch]:
            assert self._prepare_pool is not None
            return self._prepare_pool.submit(prepare, images[start : start + chunk], pool)

        starts = range(0, len(images), chunk)
        pending = submit(starts[0]) if starts else None
        for index, start in enumerate(starts):
            current = pending
            assert current is not None
            # The next chunk decodes on the device while this one runs in ONNX Runtime.
            pending = submit(starts[index + 1]) if index + 1 < len(starts) else None
            prepared = current.result()
            for offset, error in prepared.errors.items():
                results[start + offset] = error
            if not prepared.positions:
                continue
            vectors = self._encoder.embed_tensor(prepared.tensor)
            for offset, vector in zip(prepared.positions, vectors, strict=True):
                results[start + offset] = vector

    def _finish(self, chunk: _Chunk, results: list[Result | None]) -> None:
        good: list[int] = []
        for offset, future in enumerate(chunk.decoded):
            error = future.result()
            if error is None:
                good.append(offset)
            else:
                results[chunk.start + offset] = error
        if not good:
            return
        batch = chunk.buffer if len(good) == len(chunk.decoded) else chunk.buffer[good]
        vectors = self._encoder.embed(batch)
        for offset, vector in zip(good, vectors, strict=True):
            results[chunk.start + offset] = vector

    def close(self) -> None:
        """Stop the decode threads (waits for running decodes)."""
        self._closed = True
        if self._prepare_pool is not None:
            self._prepare_pool.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _complete(results: list[Result | None]) -> list[Result]:
    done: list[Result] = []
    for index, result in enumerate(results):
        if result is None:  # every index is filled by construction; this is a bug guard
            raise RuntimeError(f"no result was produced for image {index}")
        done.append(result)
    return done


def _cuda_input(encoder: Encoder, limits: ImageLimits, gpu_decode: GpuDecode) -> DeviceInput | None:
    """The CUDA input path when the encoder runs on CUDA and torchvision decodes there."""
    if gpu_decode == "off" or encoder.provider != CUDA:
        return None
    try:
        from models.vision.device_input import DeviceInput, cuda_decode_problem, torch_dtype
    except ImportError as exc:
        log.warning("JPEGs decode on the host: torch/torchvision are not installed (%s)", exc)
        return None
    problem = cuda_decode_problem()
    if problem is not None:
        log.warning("JPEGs decode on the host: %s", problem)
        return None
    return DeviceInput(encoder.card, limits, device="cuda", dtype=torch_dtype(encoder.input_type))
