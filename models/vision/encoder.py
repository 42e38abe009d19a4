"""The ONNX Runtime image encoder: one session per process, CUDA when present, CPU otherwise.

On a GPU the fp16 graph runs on the CUDA execution provider through IO binding: the input
batch is copied to the device once, only the embedding output is bound (the logits of our
exports stay on the device and are never copied back), and batches are padded to a power
of two so that cuDNN's algorithm search runs for a handful of shapes only. On a CPU the
fp32 graph runs with the configured number of intra-op threads. Either way the output is
an (N, dim) float32 array of L2-normalised rows.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from models.exceptions import EncoderError
from models.vision.modelcard import ModelCard

Device = Literal["auto", "cpu", "cuda"]
CUDA: Final = "CUDAExecutionProvider"
CPU: Final = "CPUExecutionProvider"


def l2_normalise(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scale each row to unit length (all-zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    out: npt.NDArray[np.float32] = np.divide(rows, norms, dtype=np.float32)
    return out


def session_options(intra_op_threads: int) -> Any:
    """Build the ONNX Runtime session options every encoder session uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Idle intra-op threads otherwise spin between parallel sections, taking cores from the
    # decode threads and from other processes. Interleaved A/B on the shared 2-core dev box
    # (192 photos, batch 32): full path 37 -> 49 img/s, bare session 49 -> 57 img/s.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def cuda_provider_options() -> dict[str, str]:
    """CUDA execution provider options: exhaustive cuDNN search, NHWC kernels on Hopper."""
    return {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "prefer_nhwc": "1"}


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class Encoder:
    """An ONNX image encoder described by a ``ModelCard``; ``embed`` returns unit vectors."""

    _cache: dict[tuple[Path, str, int], Encoder] = {}
    _cache_lock = threading.Lock()

    def __init__(self, session: Any, card: ModelCard, provider: str) -> None:
        self._session = session
        self._card = card
        self._provider = provider
        # ORT sessions are thread-safe for run(), but an IO binding object is not.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path, device: Device = "auto", intra_op_threads: int = 0) -> Encoder:
        """Return the process's encoder for ``model_dir`` (created once, then reused)."""
        key = (Path(model_dir).resolve(), device, intra_op_threads)
        with cls._cache_lock:
            found = cls._cache.get(key)
            if found is None:
                found = cls._create(Path(model_dir), device, intra_op_threads)
                cls._cache[key] = found
            return found

    @classmethod
    def _create(cls, model_dir: Path, device: Device, intra_op_threads: int) -> Encoder:
        import onnxruntime as ort

        card = ModelCard.load(model_dir)
        options = session_options(intra_op_threads)
        want_cuda = device != "cpu" and CUDA in ort.get_available_providers()
        if device == "cuda" and not want_cuda:
            raise EncoderError(
                "device='cuda' but ONNX Runtime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu, or use device='auto'/'cpu')"
            )
        if want_cuda:
            graph = model_dir / (card.onnx_fp16 or card.onnx_fp32)
            session = ort.InferenceSession(
                str(graph), options, providers=[(CUDA, cuda_provider_options()), CPU]
            )
            if session.get_providers()[0] == CUDA:
                encoder = cls(session, card, CUDA)
                encoder._check_io()
                return encoder
            if device == "cuda":
                raise EncoderError("the CUDA execution provider failed to initialise")
        session = ort.InferenceSession(str(model_dir / card.onnx_fp32), options, providers=[CPU])
        encoder = cls(session, card, CPU)
        encoder._check_io()
        return encoder

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if self._card.input_name not in inputs:
            raise EncoderError(f"graph has no input {self._card.input_name!r}: {list(inputs)}")
        if self._card.output_name not in outputs:
            raise EncoderError(f"graph has no output {self._card.output_name!r}: {list(outputs)}")
        width = outputs[self._card.output_name].shape[-1]
        if isinstance(width, int) and width != self._card.dim:
            raise EncoderError(f"output width {width} != card dim {self._card.dim}")

    @property
    def card(self) -> ModelCard:
        """The model card the encoder was loaded with."""
        return self._card

    @property
    def model_id(self) -> str:
        """The content-derived id every vector from this encoder is tagged with."""
        return self._card.model_id

    @property
    def dim(self) -> int:
        """Embedding width."""
        return self._card.dim

    @property
    def provider(self) -> str:
        """``CUDAExecutionProvider`` or ``CPUExecutionProvider``."""
        return self._provider

    def embed(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Embed a preprocessed (N, 3, S, S) float32 batch into (N, dim) unit vectors."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, S, S) batch, got shape {batch.shape}")
        n = batch.shape[0]
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._provider == CUDA:
            raw = self._run_cuda(batch)
        else:
            raw = self._session.run([self._card.output_name], {self._card.input_name: batch})[0]
        return l2_normalise(np.asarray(raw, dtype=np.float32).reshape(n, -1))

    def run_outputs(self, batch: npt.NDArray[np.float32], names: list[str]) -> list[Any]:
        """Raw (un-normalised) graph outputs by name, e.g. ``logits`` for sanity checks."""
        inputs = {self._card.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return list(self._session.run(names, inputs))

    def _run_cuda(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n = batch.shape[0]
        padded_n = _bucket(n)
        if padded_n != n:
            pad = np.zeros((padded_n - n, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, pad])
        with self._lock:
            binding = self._session.io_binding()
            binding.bind_cpu_input(self._card.input_name, batch)
            # Only the embedding is bound; other outputs are neither kept nor copied.
            binding.bind_output(self._card.output_name, "cpu")
            self._session.run_with_iobinding(binding)
            out: npt.NDArray[np.float32] = binding.copy_outputs_to_cpu()[0]
        return out[:n]
