"""Embedding throughput: our full path against its two lower bounds, measured in one run.

On N distinct 400-800 px JPEGs derived from the bundled real photos (tests/photos.py; a
fifth of them progressive, which the device input path leaves to the host):

  (a) bare ONNX Runtime: a plain ``session.run`` (same graph, session options, provider and
      thread count as the Encoder) on tensors decoded beforehand -- inference alone;
  (b) decode + preprocess alone on a thread pool of the same size -- no inference;
  (c) the full ``Embedder`` path: bytes in, unit vectors out, decode overlapping inference.

With the device input path (``--input device|both``; the default with ``--device cuda``):

  (a') bare ONNX Runtime with the input already on the device, bound by IO binding (CUDA);
  (b') ``DeviceInput.prepare`` alone: header checks, nvJPEG batch decode, resize, normalise
       on the device (host fallbacks included), synchronised;
  (c') the full ``Embedder`` on the device path: nvJPEG for chunk k+1 while ORT runs chunk k.

All stages are interleaved batch by batch (the machine may be shared); each reports images/s
(median over rounds) and per-batch latency p50/p99 (all batches), and the script prints
(c) / min(a, b) and (c') / (a') per round and their medians. The worker's own path (Kafka
in, Redis out) is not in here: ``bench/pipeline.py`` measures it where the services run.
Raw results go to ``bench/results/embed_<device>_<time>.json`` unless ``--json`` names a file.

    python bench/embed.py --device cpu --batch 32 --n 320
    python bench/embed.py --device cuda --batch 32,256 --n 1024   # host and device input
    python bench/embed.py --decoders          # Pillow vs simplejpeg vs PyTurboJPEG
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.vision.embedder import Embedder  # noqa: E402
from models.vision.encoder import (  # noqa: E402
    CUDA,
    CudaOptions,
    Encoder,
    cuda_provider_options,
    session_options,
)
from models.vision.images import ImageLimits, load_image  # noqa: E402
from models.vision.modelcard import ModelCard  # noqa: E402
from tests.photos import derived_catalogue  # noqa: E402

LIMITS = ImageLimits(max_bytes=20 << 20, max_pixels=40_000_000, min_side=16)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "numpy": np.__version__,
    }
    try:
        import torch
        import torchvision

        info["torch"] = torch.__version__
        info["torchvision"] = torchvision.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def default_model_dir() -> Path:
    from models.vision.export import DEFAULT_ENCODER, ensure_encoder

    return ensure_encoder(DEFAULT_ENCODER, Path.home() / ".cache" / "visrec" / "models")


class Stage:
    """One measured path: a callable per batch, its latencies and per-round rates."""

    def __init__(self, name: str, run_batch: Callable[[int], None]):
        self.name = name
        self.run_batch = run_batch
        self.latencies: list[float] = []
        self.round_seconds: list[float] = []

    def timed(self, batch: int) -> float:
        t0 = time.perf_counter()
        self.run_batch(batch)
        elapsed = time.perf_counter() - t0
        self.latencies.append(elapsed)
        return elapsed

    def summary(self, images_per_round: int) -> dict[str, Any]:
        rates = [images_per_round / s for s in self.round_seconds]
        return {
            "img_s": round(statistics.median(rates), 1),
            "img_s_rounds": [round(r, 1) for r in rates],
            "p50_ms": round(percentile(self.latencies, 50) * 1e3, 2),
            "p99_ms": round(percentile(self.latencies, 99) * 1e3, 2),
        }


def measure(stages: list[Stage], n_batches: int, rounds: int) -> None:
    """Time every stage on every batch, interleaved batch by batch.

    The dev machine is shared, so its speed drifts by 2-3x within a minute; running a, b
    and c back to back on each batch (rotating who goes first) exposes all three to the
    same drift, which per-stage rounds would not.
    """
    for stage in stages:  # warm-up: first runs pay for allocation and algorithm search
        stage.run_batch(0)
    for r in range(rounds):
        spent = [0.0] * len(stages)
        for b in range(n_batches):
            order = [(b + r + k) % len(stages) for k in range(len(stages))]
            for k in order:
                spent[k] += stages[k].timed(b)
        for stage, seconds in zip(stages, spent, strict=True):
            stage.round_seconds.append(seconds)


def bare_session(
    card: ModelCard, model_dir: Path, device: str, threads: int, cuda: CudaOptions
) -> Any:
    """A plain session on the same graph, options and provider settings as the Encoder."""
    import onnxruntime as ort

    options = session_options(threads)
    if device == "cuda":
        graph = model_dir / (card.onnx_fp16 if cuda.fp16 and card.onnx_fp16 else card.onnx_fp32)
        # No CUDA graph here: the bare stages run every batch size, a graph fixes one.
        plain = CudaOptions(prefer_nhwc=cuda.prefer_nhwc, fp16=cuda.fp16)
        providers: list[Any] = [(CUDA, cuda_provider_options(plain)), "CPUExecutionProvider"]
    else:
        graph = model_dir / card.onnx_fp32
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(graph), options, providers=providers)


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    card = ModelCard.load(model_dir)
    threads = args.threads or os.cpu_count() or 1
    batch_sizes = [int(b) for b in str(args.batch).split(",")]
    catalogue = [data for _, data in derived_catalogue(args.n, seed=args.seed)]
    sizes_kb = [len(d) / 1024 for d in catalogue]
    print(
        f"{len(catalogue)} JPEGs, mean {statistics.mean(sizes_kb):.0f} KB; model {card.model_id};"
        f" device {args.device}; threads {threads}",
        flush=True,
    )
    size = card.input_size
    # Pre-decoded tensors for (a); decoding them is not timed.
    tensors = np.empty((len(catalogue), 3, size, size), dtype=np.float32)
    with ThreadPoolExecutor(threads) as pool:
        jobs = [
            pool.submit(load_image, data, LIMITS, card, tensors[i])
            for i, data in enumerate(catalogue)
        ]
        for job in jobs:
            job.result()
    cuda = CudaOptions(
        prefer_nhwc=bool(args.nhwc), fp16=bool(args.fp16), graph_batch=args.cuda_graph or None
    )
    session = bare_session(card, model_dir, args.device, threads, cuda)
    encoder = Encoder.load(model_dir, device=args.device, intra_op_threads=threads, cuda=cuda)
    if args.device == "cuda" and encoder.provider != CUDA:
        raise SystemExit("asked for cuda but the encoder runs on " + encoder.provider)
    inputs = args.input or ("both" if args.device == "cuda" else "host")
    device_input = None
    if inputs != "host":
        from models.vision.device_input import DeviceInput, torch_dtype

        device_input = DeviceInput(
            card, LIMITS, device=args.device, dtype=torch_dtype(encoder.input_type)
        )
        routed = device_input.prepare(catalogue[:256])
        share = len(routed.on_device) / len(routed.positions)
        print(f"device input: {share:.0%} of the first 256 JPEGs decode on {args.device}")
    runs = []
    for batch in batch_sizes:
        runs.append(
            run_batch_size(
                args, card, catalogue, tensors, session, encoder, batch, threads, device_input
            )
        )
    return {
        "runs": runs,
        "config": {
            "device": args.device,
            "provider": encoder.provider,
            "input": inputs,
            "cuda_options": vars(cuda) if args.device == "cuda" else None,
            "n": len(catalogue),
            "threads": threads,
            "rounds": args.rounds,
            "model_id": card.model_id,
            "mean_jpeg_kb": round(statistics.mean(sizes_kb), 1),
            "on_device_share": round(share, 3) if device_input is not None else None,
        },
        "machine": machine(),
    }


def run_batch_size(
    args: argparse.Namespace,
    card: ModelCard,
    catalogue: list[bytes],
    tensors: npt.NDArray[np.float32],
    session: Any,
    encoder: Encoder,
    batch: int,
    threads: int,
    device_input: Any = None,
) -> dict[str, Any]:
    batches = [
        list(range(i, min(i + batch, len(catalogue)))) for i in range(0, len(catalogue), batch)
    ]
    size = card.input_size
    feed = card.input_name
    host = (args.input or ("both" if args.device == "cuda" else "host")) != "device"

    def bare(b: int) -> None:
        rows = batches[b]
        session.run([card.output_name], {feed: tensors[rows[0] : rows[-1] + 1]})

    decode_pool = ThreadPoolExecutor(threads)
    buffer = np.empty((batch, 3, size, size), dtype=np.float32)

    def decode(b: int) -> None:
        rows = batches[b]
        jobs = [
            decode_pool.submit(load_image, catalogue[i], LIMITS, card, buffer[k])
            for k, i in enumerate(rows)
        ]
        for job in jobs:
            job.result()

    embedders: list[Embedder] = []

    def full_path(embedder: Embedder) -> Callable[[int], None]:
        embedders.append(embedder)

        def full(b: int) -> None:
            out = embedder.embed_images([catalogue[i] for i in batches[b]])
            if any(not isinstance(v, np.ndarray) for v in out):
                raise SystemExit(f"embedder rejected an image: {out}")

        return full

    stages = [Stage("a_bare_ort", bare)]
    if device_input is not None and args.device == "cuda":
        stages.append(
            Stage("a_bare_ort_device_input", bare_on_device(card, session, tensors, batches))
        )
    if host:
        stages.append(Stage("b_decode_preprocess", decode))
    if device_input is not None:

        def prepare(b: int) -> None:
            device_input.prepare([catalogue[i] for i in batches[b]], decode_pool)

        stages.append(Stage("b_device_decode_resize", prepare))
    if host:
        host_embedder = Embedder(encoder, LIMITS, threads, chunk_size=args.chunk, gpu_decode="off")
        stages.append(Stage("c_embedder", full_path(host_embedder)))
    if device_input is not None:
        device_embedder = Embedder(
            encoder, LIMITS, threads, chunk_size=args.chunk, device_input=device_input
        )
        stages.append(Stage("c_embedder_device_input", full_path(device_embedder)))
    measure(stages, len(batches), args.rounds)
    for embedder in embedders:
        embedder.close()
    decode_pool.shutdown()

    result: dict[str, Any] = {"batch": batch, "chunk": args.chunk}
    result.update({s.name: s.summary(len(catalogue)) for s in stages})
    seconds = {s.name: s.round_seconds for s in stages}
    print(f"batch {batch}:")
    for stage in stages:
        r = result[stage.name]
        print(
            f"  {stage.name:26s} {r['img_s']:9.1f} img/s   p50 {r['p50_ms']:8.2f} ms"
            f"   p99 {r['p99_ms']:8.2f} ms   rounds {r['img_s_rounds']}"
        )
    # Per round, the slower of (a) and (b) is the one that took more seconds.
    if host:
        ratio(
            result,
            "ratio_c_over_min_ab",
            "(c)/min(a,b)",
            seconds,
            "c_embedder",
            ["a_bare_ort", "b_decode_preprocess"],
        )
    if device_input is not None:
        bare_name = "a_bare_ort_device_input" if args.device == "cuda" else "a_bare_ort"
        ratio(
            result,
            "ratio_c_device_over_a",
            "(c')/(a')",
            seconds,
            "c_embedder_device_input",
            [bare_name],
        )
        ratio(
            result,
            "ratio_c_device_over_min_ab_device",
            "(c')/min(a',b')",
            seconds,
            "c_embedder_device_input",
            [bare_name, "b_device_decode_resize"],
        )
    return result


def ratio(
    result: dict[str, Any],
    key: str,
    label: str,
    seconds: dict[str, list[float]],
    full: str,
    bounds: list[str],
) -> None:
    """Median over rounds of the full path's rate over the slowest bound's rate."""
    per_round = [
        max(seconds[b][r] for b in bounds) / seconds[full][r] for r in range(len(seconds[full]))
    ]
    result[key] = round(statistics.median(per_round), 3)
    result[key + "_rounds"] = [round(x, 3) for x in per_round]
    print(f"  ratio {label} = {result[key]:.3f} (median; rounds {result[key + '_rounds']})")


def bare_on_device(
    card: ModelCard, session: Any, tensors: npt.NDArray[np.float32], batches: list[list[int]]
) -> Callable[[int], None]:
    """(a'): the bare session fed by IO binding from tensors already on the GPU."""
    import torch

    element = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    on_device = torch.from_numpy(tensors).to(
        "cuda", torch.float16 if element is np.float16 else torch.float32
    )
    out_element = np.float16 if "float16" in session.get_outputs()[0].type else np.float32
    torch.cuda.synchronize()

    def run(b: int) -> None:
        rows = batches[b]
        x = on_device[rows[0] : rows[-1] + 1]
        out = torch.empty(
            (len(rows), card.dim),
            dtype=torch.float16 if out_element is np.float16 else torch.float32,
            device="cuda",
        )
        binding = session.io_binding()
        binding.bind_input(card.input_name, "cuda", 0, element, list(x.shape), x.data_ptr())
        binding.bind_output(
            card.output_name, "cuda", 0, out_element, list(out.shape), out.data_ptr()
        )
        session.run_with_iobinding(binding)

    return run


def run_decoders(args: argparse.Namespace) -> dict[str, Any]:
    import simplejpeg
    from PIL import Image

    catalogue = [data for _, data in derived_catalogue(args.n, seed=args.seed)]
    target = 256  # the default encoders' resize size: 224 / 0.875

    def pillow_full(data: bytes) -> Any:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def pillow_draft(data: bytes) -> Any:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (target, target))
            return np.asarray(im.convert("RGB"))

    def sj_full(data: bytes) -> Any:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")

    def sj_scaled(data: bytes) -> Any:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=target, min_width=target)

    def sj_scaled_f2(data: bytes) -> Any:  # what models.vision.images uses
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=target, min_width=target, min_factor=2
        )

    decoders: dict[str, Callable[[bytes], Any]] = {
        "pillow_full": pillow_full,
        "pillow_draft": pillow_draft,
        "simplejpeg_full": sj_full,
        "simplejpeg_scaled": sj_scaled,
        "simplejpeg_scaled_min_factor2": sj_scaled_f2,
    }
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        tj = TurboJPEG()
        factors = sorted(tj.scaling_factors, key=lambda f: f[0] / f[1])

        def tj_full(data: bytes) -> Any:
            return tj.decode(data, pixel_format=TJPF_RGB)

        def tj_scaled(data: bytes) -> Any:
            w, h, _, _ = tj.decode_header(data)
            pick = (1, 1)
            for num, den in factors:
                if min(w, h) * num / den >= target:
                    pick = (num, den)
                    break
            return tj.decode(data, pixel_format=TJPF_RGB, scaling_factor=pick)

        decoders["turbojpeg_full"] = tj_full
        decoders["turbojpeg_scaled"] = tj_scaled
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"PyTurboJPEG unavailable: {exc}")

    rates: dict[str, list[float]] = {name: [] for name in decoders}
    for fn in decoders.values():
        fn(catalogue[0])
    # Interleaved image by image, so that a shared machine's drifting speed hits all alike.
    for _ in range(args.rounds):
        spent = dict.fromkeys(decoders, 0.0)
        for data in catalogue:
            for name, fn in decoders.items():
                t0 = time.perf_counter()
                fn(data)
                spent[name] += time.perf_counter() - t0
        for name, seconds in spent.items():
            rates[name].append(len(catalogue) / seconds)
    result: dict[str, Any] = {
        name: {"img_s_1thread": round(statistics.median(r), 1)} for name, r in rates.items()
    }
    result["machine"] = machine()
    result["n"] = len(catalogue)
    for name, r in rates.items():
        rounds = [round(x) for x in r]
        print(f"{name:30s} {statistics.median(r):8.1f} img/s (1 thread)  rounds {rounds}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", default="32", help="Batch size, or a list: 1,32,256.")
    parser.add_argument(
        "--chunk", type=int, default=None, help="Embedder chunk size (default: its own)."
    )
    parser.add_argument("--n", type=int, default=320, help="Number of distinct JPEGs.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="ORT and decode threads (0 = all cores)."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model-dir", default=None, help="Exported model folder (default: export/cached)."
    )
    parser.add_argument(
        "--input",
        choices=["host", "device", "both"],
        default=None,
        help="Input path(s) to measure (default: both with --device cuda, host on cpu).",
    )
    parser.add_argument("--nhwc", type=int, choices=[0, 1], default=1, help="CUDA prefer_nhwc.")
    parser.add_argument("--fp16", type=int, choices=[0, 1], default=1, help="CUDA fp16 graph.")
    parser.add_argument(
        "--cuda-graph", type=int, default=0, help="Encoder CUDA graph batch size (0 = none)."
    )
    parser.add_argument(
        "--json", default=None, help="Results file (default: bench/results/embed_*.json)."
    )
    parser.add_argument("--decoders", action="store_true", help="Compare JPEG decoders instead.")
    args = parser.parse_args(argv)
    result = run_decoders(args) if args.decoders else run_pipeline(args)
    if args.json:
        out = Path(args.json)
    else:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        kind = "decoders" if args.decoders else args.device
        out = ROOT / "bench" / "results" / f"embed_{kind}_{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
