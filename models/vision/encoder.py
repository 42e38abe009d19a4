"""The ONNX Runtime image encoder: one session per process, CUDA when present, CPU otherwise.

On a GPU the fp16 graph runs on the CUDA execution provider through IO binding: the input
batch is copied to the device once, only the embedding output is bound (the logits of our
exports stay on the device and are never copied back), and batches are padded to a power
of two so that cuDNN's algorithm search runs for a handful of shapes only. A batch that is
already on the device (a torch tensor from ``models.vision.device_input``) is bound where it lies,
with no copy through the host (``embed_tensor``). ``CudaOptions`` selects the graph (fp16
or fp32), NHWC kernels and an optional CUDA graph for one fixed batch size. On a CPU the
fp32 graph runs with the configured number of intra-op threads. Either way the output is
an (N, dim) float32 array of L2-normalised rows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

from models.exceptions import EncoderError
from models.vision.modelcard import ModelCard

if TYPE_CHECKING:  # torch is optional: only the device-input path and CUDA graphs need it
    import torch

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


@dataclass(frozen=True)
class CudaOptions:
    """How the CUDA execution provider runs the encoder; each is a speed choice to measure."""

    # NHWC convolution kernels (ORT transposes the NCHW input once): faster on Hopper.
    prefer_nhwc: bool = True
    # The card's fp16 graph when it has one; the fp32 graph otherwise.
    fp16: bool = True
    # Capture a CUDA graph for batches of exactly this many rows (fewer are padded, more are
    # split); None runs without. Needs torch for the fixed device buffers the graph reads.
    graph_batch: int | None = None

    def __post_init__(self) -> None:
        if self.graph_batch is not None and self.graph_batch < 1:
            raise ValueError("graph_batch must be at least 1")


def cuda_provider_options(options: CudaOptions | None = None) -> dict[str, str]:
    """CUDA execution provider options: exhaustive cuDNN search, NHWC kernels on Hopper."""
    options = options or CudaOptions()
    provider = {
        "device_id": "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "prefer_nhwc": "1" if options.prefer_nhwc else "0",
    }
    if options.graph_batch is not None:
        provider["enable_cuda_graph"] = "1"
    return provider


def _element_type(onnx_type: str) -> type[np.floating[Any]]:
    # Our fp16 exports keep float32 inputs and outputs (cast on the device); others may not.
    return np.float16 if onnx_type == "tensor(float16)" else np.float32


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class Encoder:
    """An ONNX image encoder described by a ``ModelCard``; ``embed`` returns unit vectors."""

    _cache: dict[tuple[Path, str, int, CudaOptions], Encoder] = {}
    _cache_lock = threading.Lock()

    def __init__(
        self, session: Any, card: ModelCard, provider: str, cuda: CudaOptions | None = None
    ) -> None:
        self._session = session
        self._card = card
        self._provider = provider
        inputs = {i.name: i.type for i in session.get_inputs()}
        outputs = {o.name: o.type for o in session.get_outputs()}
        self._input_type = _element_type(inputs.get(card.input_name, ""))
        self._output_type = _element_type(outputs.get(card.output_name, ""))
        self._graph_batch = cuda.graph_batch if cuda is not None and provider == CUDA else None
        self._graph: _CudaGraph | None = None
        # ORT sessions are thread-safe for run(), but an IO binding object is not.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: Device = "auto",
        intra_op_threads: int = 0,
        cuda: CudaOptions | None = None,
    ) -> Encoder:
        """Return the process's encoder for ``model_dir`` (created once, then reused)."""
        cuda = cuda or CudaOptions()
        key = (Path(model_dir).resolve(), device, intra_op_threads, cuda)
        with cls._cache_lock:
            found = cls._cache.get(key)
            if found is None:
                found = cls._create(Path(model_dir), device, intra_op_threads, cuda)
                cls._cache[key] = found
            return found

    @classmethod
    def _create(
        cls, model_dir: Path, device: Device, intra_op_threads: int, cuda: CudaOptions
    ) -> Encoder:
        import onnxruntime as ort

        card = ModelCard.load(model_dir)
        options = session_options(intra_op_threads)
        want_cuda = device != "cpu" and CUDA in ort.get_available_providers()
        if device == "cuda" and not want_cuda:
            raise EncoderError(
                "device='cuda' but ONNX Runtime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu, or use device='auto'/'cpu')"
            )
        if want_cuda and cuda.graph_batch is not None:
            try:
                import torch  # noqa: F401  # the graph's fixed buffers are torch tensors
            except ImportError as exc:
                raise EncoderError(f"a CUDA graph (graph_batch) needs torch: {exc}") from exc
        if want_cuda:
            name = card.onnx_fp16 if cuda.fp16 and card.onnx_fp16 else card.onnx_fp32
            session = ort.InferenceSession(
                str(model_dir / name), options, providers=[(CUDA, cuda_provider_options(cuda)), CPU]
            )
            if session.get_providers()[0] == CUDA:
                encoder = cls(session, card, CUDA, cuda)
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

    @property
    def input_type(self) -> type[np.floating[Any]]:
        """Element type of the graph's input (``np.float32`` for our exports, fp16 ones too)."""
        return self._input_type

    @property
    def graph_batch(self) -> int | None:
        """Rows of the CUDA graph's fixed batch, or None when the encoder runs without one."""
        return self._graph_batch

    def embed(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Embed a preprocessed (N, 3, S, S) float32 batch into (N, dim) unit vectors."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, S, S) batch, got shape {batch.shape}")
        n = batch.shape[0]
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._graph_batch is not None:
            import torch

            raw = self._run_graph(torch.from_numpy(batch).to("cuda"))
        elif self._provider == CUDA:
            raw = self._run_cuda(batch)
        else:
            raw = self._session.run([self._card.output_name], {self._card.input_name: batch})[0]
        return l2_normalise(np.asarray(raw, dtype=np.float32).reshape(n, -1))

    def embed_tensor(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        """Embed a preprocessed (N, 3, S, S) torch batch into (N, dim) unit vectors.

        With the CUDA provider and a CUDA tensor, the tensor's memory is bound as the graph's
        input where it lies (IO binding from its device pointer; no copy through the host).
        All work queued on the tensor's stream must be finished: ONNX Runtime runs on its own
        stream and does not wait for others. Elsewhere the batch is copied to the host and
        goes through ``embed``.
        """
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, S, S) batch, got shape {tuple(batch.shape)}")
        n = int(batch.shape[0])
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        if self._provider != CUDA or batch.device.type != "cuda":
            import torch

            return self.embed(batch.detach().to("cpu", torch.float32).numpy())
        raw = self._run_graph(batch) if self._graph_batch is not None else self._run_tensor(batch)
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

    def _run_tensor(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        import torch

        n = int(batch.shape[0])
        padded_n = _bucket(n)
        x = batch.to(_torch_type(self._input_type)).contiguous()
        if padded_n != n:
            x = torch.cat([x, x.new_zeros((padded_n - n, *x.shape[1:]))])
        out = torch.empty(
            (padded_n, self.dim), dtype=_torch_type(self._output_type), device=x.device
        )
        # The cast and padding above ran on this thread's stream; ORT reads on its own.
        torch.cuda.current_stream(x.device).synchronize()
        with self._lock:
            binding = self._session.io_binding()
            _bind(binding.bind_input, self._card.input_name, x, self._input_type)
            _bind(binding.bind_output, self._card.output_name, out, self._output_type)
            # ORT synchronises its own stream before run_with_iobinding returns.
            self._session.run_with_iobinding(binding)
        return out[:n].float().cpu().numpy()

    def _run_graph(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        import torch

        assert self._graph_batch is not None
        parts: list[npt.NDArray[np.float32]] = []
        with self._lock:
            if self._graph is None:
                self._graph = _CudaGraph(self._session, self._card, self._graph_batch)
            graph = self._graph
            for start in range(0, int(batch.shape[0]), self._graph_batch):
                rows = batch[start : start + self._graph_batch]
                graph.input[: rows.shape[0]].copy_(rows)
                torch.cuda.current_stream(graph.input.device).synchronize()
                self._session.run_with_iobinding(graph.binding)
                parts.append(graph.output[: rows.shape[0]].float().cpu().numpy())
        return np.concatenate(parts)


class _CudaGraph:
    """Fixed device buffers bound once: a CUDA graph replays the same addresses every run.

    ORT captures the graph on the first runs and replays it afterwards, so every input and
    output (the unused logits too) is bound to memory that never moves or changes shape.
    Rows beyond a short batch keep stale pixels; rows are independent, and their outputs
    are never read.
    """

    def __init__(self, session: Any, card: ModelCard, batch: int) -> None:
        import torch

        self.binding = session.io_binding()
        self._keep: list[torch.Tensor] = []
        for spec in session.get_inputs():
            element = _element_type(spec.type)
            tensor = torch.zeros(
                _static_shape(spec.shape, batch), dtype=_torch_type(element), device="cuda"
            )
            _bind(self.binding.bind_input, spec.name, tensor, element)
            if spec.name == card.input_name:
                self.input = tensor
            self._keep.append(tensor)
        for spec in session.get_outputs():
            element = _element_type(spec.type)
            tensor = torch.empty(
                _static_shape(spec.shape, batch), dtype=_torch_type(element), device="cuda"
            )
            _bind(self.binding.bind_output, spec.name, tensor, element)
            if spec.name == card.output_name:
                self.output = tensor
            self._keep.append(tensor)


def _static_shape(shape: list[Any], batch: int) -> list[int]:
    dims = [batch, *shape[1:]]
    if not all(isinstance(d, int) for d in dims):
        raise EncoderError(f"a CUDA graph needs static shapes beyond the batch axis: {shape}")
    return dims


def _bind(bind: Any, name: str, tensor: torch.Tensor, element: type[np.floating[Any]]) -> None:
    bind(name, "cuda", tensor.device.index or 0, element, list(tensor.shape), tensor.data_ptr())


def _torch_type(element: type[np.floating[Any]]) -> torch.dtype:
    import torch

    return torch.float16 if element is np.float16 else torch.float32
