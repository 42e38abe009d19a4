"""Where the GPU input path's time goes: each stage of ``DeviceInput.prepare`` alone.

    python bench/device_input_stages.py --model-dir DIR [--device cuda] [--n 1024] [--batch 256]

On the derived catalogue of ``bench/embed.py`` (real photos re-encoded at 400-800 px, a mix of
plain and progressive JPEGs), per batch, median of ``--rounds``:

- ``prepare``: the whole of ``DeviceInput.prepare`` with a pool of ``--threads`` (the
  baseline every stage is a share of);
- ``headers``: the host's per-image guard rails (``read_header``) alone;
- ``upload``: the plain JPEGs' bytes to tensors (``torch.frombuffer``) alone;
- ``decode``: nvJPEG's batched decode of the plain JPEGs alone;
- ``resize``: ``resize_crop`` of those decoded images alone;
- ``host_fallback``: the CPU path of the other images on the pool alone;
- ``plain_only``: ``prepare`` on the plain JPEGs of the batch only (what an all-plain
  catalogue would give).

Prints images/s per stage and its share of ``prepare``; ``--json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.vision.device_input import DeviceInput, _decode_jpegs  # noqa: E402
from models.vision.device_resize import resize_crop  # noqa: E402
from models.vision.images import ImageLimits, load_into, read_header  # noqa: E402
from models.vision.modelcard import ModelCard  # noqa: E402
from tests.photos import derived_catalogue  # noqa: E402

LIMITS = ImageLimits(max_bytes=20 << 20, max_pixels=40_000_000, min_side=16)


def _timed(fn: Callable[[], Any], device: torch.device, rounds: int) -> float:
    """Median seconds of ``fn`` (device synchronised), after one warm-up."""
    fn()
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def stages(
    card: ModelCard, batch: list[bytes], device: torch.device, pool: ThreadPoolExecutor, rounds: int
) -> dict[str, float]:
    """Seconds per stage for one batch (see the module docstring)."""
    import numpy as np

    di = DeviceInput(card, LIMITS, device=device)
    headers = [read_header(b, LIMITS) for b in batch]
    plain = [b for b, h in zip(batch, headers, strict=True) if h.plain_jpeg]
    other = [b for b, h in zip(batch, headers, strict=True) if not h.plain_jpeg]
    orient = [h.orientation for h in headers if h.plain_jpeg]
    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in plain]
    decoded = _decode_jpegs(encoded, device)
    size = card.input_size
    out = np.empty((max(len(other), 1), 3, size, size), dtype=np.float32)

    def host() -> None:
        futures = [pool.submit(load_into, b, LIMITS, card, out[k]) for k, b in enumerate(other)]
        for f in futures:
            f.result()

    return {
        "prepare": _timed(lambda: di.prepare(batch, pool), device, rounds),
        "headers": _timed(lambda: [read_header(b, LIMITS) for b in batch], device, rounds),
        "upload": _timed(
            lambda: [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in plain],
            device,
            rounds,
        ),
        "decode": _timed(lambda: _decode_jpegs(encoded, device), device, rounds),
        "resize": _timed(lambda: resize_crop(decoded, card, orient), device, rounds),
        "host_fallback": _timed(host, device, rounds),
        "plain_only": _timed(lambda: di.prepare(plain, pool), device, rounds),
        "plain_share": len(plain) / len(batch),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    card = ModelCard.load(args.model_dir)
    device = torch.device(args.device)
    catalogue = [data for _, data in derived_catalogue(args.n, seed=0)]
    batches = [catalogue[i : i + args.batch] for i in range(0, len(catalogue), args.batch)]
    with ThreadPoolExecutor(args.threads) as pool:
        per = [stages(card, b, device, pool, args.rounds) for b in batches]
    result: dict[str, Any] = {"device": args.device, "batch": args.batch, "n": args.n}
    total = statistics.median(p["prepare"] for p in per)
    print(f"{args.n} JPEGs in batches of {args.batch} on {args.device}, {args.threads} threads")
    for name in per[0]:
        value = statistics.median(p[name] for p in per)
        result[name] = value
        if name == "plain_share":
            print(f"  plain JPEGs (decoded on the device): {value:.0%}")
            continue
        rate = args.batch / value if value > 0 else float("inf")
        print(
            f"  {name:14s} {value * 1000:8.2f} ms/batch  {rate:9.0f} img/s  {value / total:5.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
