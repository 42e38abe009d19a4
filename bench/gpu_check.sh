#!/usr/bin/env bash
# GPU check of the image encoder: CUDA unit tests + bench/embed.py --device cuda, with the
# host input path (CPU decode) and the device input path (nvJPEG + resize on the GPU).
#
#   bash bench/gpu_check.sh prepare   # here, with PyPI: fill the .whl/ carry folder
#   bash bench/gpu_check.sh           # on the offline GPU host, with .whl carried
#
# The GPU host (python3 3.12, torch 2.11.0+cu130, torchvision 0.26.0, onnx, numpy, pillow,
# scikit-image, pytest; the CPU build of onnxruntime 1.30.0) gets, in the gitignored .whl/:
#   .whl/*.whl   simplejpeg and pydantic (+ its deps), which it lacks
#   .whl/ort/    onnxruntime-gpu 1.30.0 repacked for sm_90 (/work/shared/gpu/make_carry.sh)
#   .whl/tv/     a torchvision wheel (~7.5 MB), installed only if the host's own torchvision
#                does not import; it must match the host's torch (TV_VERSION, TV_INDEX below)
#   .whl/model/  the exported EfficientNet-Lite0: fp16 graph (xz) + model_card.json.
#                The weight wheel (18 MB) and the fp32 graph do not fit the upload, so the
#                host runs the carried fp16 graph; its card keeps the fp32 graph's model_id.
# Results (logs, JSON) go to $OUT. The upload limit is 64 MiB: prepare prints the total.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CACHE=${VISREC_MODEL_CACHE:-$HOME/.cache/visrec/models}

if [[ "${1:-}" == "prepare" ]]; then
    set -e
    PLAT=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    mkdir -p .whl/model
    # Same versions as the dev venv; the host has numpy, pillow, onnx and pytest already.
    py=.venv/bin/python
    pins=()
    for pkg in simplejpeg pydantic pydantic_core annotated_types typing_inspection typing_extensions; do
        pins+=("$pkg==$($py -c "import importlib.metadata as m; print(m.version('$pkg'))")")
    done
    python3 -m pip download -q "${PLAT[@]}" -d .whl "${pins[@]}"
    # torchvision for the host's torch 2.11.0 (+cu130): 0.26.0. TV_VERSION=none skips it;
    # TV_INDEX=https://download.pytorch.org/whl/cu130 fetches the CUDA 13 build by name.
    TV_VERSION=${TV_VERSION:-0.26.0}
    if [[ "$TV_VERSION" != none ]]; then
        mkdir -p .whl/tv
        python3 -m pip download -q "${PLAT[@]}" -d .whl/tv ${TV_INDEX:+--index-url "$TV_INDEX"} \
            "torchvision==$TV_VERSION"
    fi
    model=$($py -c "from pathlib import Path; from models.vision.export import ensure_encoder; print(ensure_encoder('efficientnet-lite0', Path('$CACHE')))")
    cp "$model/model_card.json" .whl/model/
    xz -9e -T2 -c "$model/model.fp16.onnx" > .whl/model/model.fp16.onnx.xz
    du -ab .whl | sort -n | awk '{printf "%8.2f MiB  %s\n", $1/1048576, $2}' | tail -15
    total=$(du -sb .whl | cut -f1)
    if (( total > 62 * 1048576 )); then
        echo "WARNING: .whl is $((total / 1048576)) MiB; the upload limit is 64 MiB with the tree" >&2
    fi
    exit 0
fi

# Knobs for a dry run on a CPU box:
#   SKIP_CARRY=1 PY=.venv/bin/python DEVICE=cpu N=64 MODEL_DIR=~/.cache/visrec/models/<lite0>
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
N=${N:-1024}
INPUT=${INPUT:-both}  # bench/embed.py --input: host, device or both
OUT=${OUT:-/tmp/visrec-gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"

if [[ -z "${SKIP_CARRY:-}" ]]; then
    # 1. Carried wheels into /tmp/site.
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    # 2. onnxruntime-gpu from the repacked kit (~60 s).
    $PY -m pip install -q --no-index --no-deps --target /tmp/zsite .whl/ort/zstandard-*.whl || exit 1
    if [[ ! -d /tmp/ortgpu/onnxruntime ]]; then
        PYTHONPATH=/tmp/zsite $PY .whl/ort/ortgpu_unpack.py \
            .whl/ort/ortgpu-*-sm90.host.tar.xz .whl/ort/ortgpu-*-sm90.cubins.xz /tmp/ortgpu || exit 1
    fi
    SP=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    LIBS=$(ls -d "$SP"/nvidia/*/lib 2>/dev/null | paste -sd:)
    export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PYTHONPATH="/tmp/ortgpu:/tmp/site:$ROOT"
    # torchvision: the host's own when it imports (it must match the host's torch), else
    # the carried wheel.
    if ! $PY -c "import torchvision.io" 2>/dev/null && ls .whl/tv/torchvision-*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/tvsite .whl/tv/torchvision-*.whl && export PYTHONPATH="/tmp/tvsite:$PYTHONPATH"
    fi
else
    export PYTHONPATH="$ROOT"
fi
export PYTHONUNBUFFERED=1
$PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
# The card, torch/torchvision, and whether nvJPEG decodes (the device input path's condition).
$PY - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
try:
    import torchvision
    from models.vision.device_input import cuda_decode_problem
    print("torchvision", torchvision.__version__, "nvJPEG:", cuda_decode_problem() or "decodes")
except ImportError as exc:
    print("torchvision missing: the device input path cannot run:", exc)
EOF

# 3. The model: carried fp16 graph; the card's fp32 entry points at it (see header).
#    MODEL_DIR (a dry run here) uses an exported folder as it is.
MODEL=${MODEL_DIR:-/tmp/visrec-model}
mkdir -p "$MODEL"
[[ -n "${MODEL_DIR:-}" ]] || $PY - "$MODEL" <<'EOF' || exit 1
import json, lzma, shutil, sys
from pathlib import Path
dst = Path(sys.argv[1])
card = json.loads(Path(".whl/model/model_card.json").read_text())
with lzma.open(".whl/model/model.fp16.onnx.xz") as src, open(dst / card["onnx_fp16"], "wb") as out:
    shutil.copyfileobj(src, out)
card["onnx_fp32"] = card["onnx_fp16"]
(dst / "model_card.json").write_text(json.dumps(card, indent=2))
print("model", card["model_id"], "->", dst)
EOF

# 4. Unit tests of decoding, the encoder and the device input path (tiny graphs; CUDA
#    provider + fp16 + IO binding, nvJPEG, CUDA streams and graphs when there). The real
#    model's device-vs-CPU-path cosine test reads VISREC_TEST_MODEL_DIR. --noconftest: the
#    integration fixtures import redis, which the host lacks and these tests do not use.
VISREC_TEST_MODEL_DIR="$MODEL" $PY -m pytest -q -p no:cacheprovider --noconftest -rs \
    --junitxml="$OUT/unit.xml" \
    tests/unit/test_encoder.py tests/unit/test_images.py tests/unit/test_device_input.py \
    tests/unit/test_device_resize.py
echo "unit tests rc=$?"

# 5. Throughput on the real model at batch 1, 32 and 256: bare model (host and device
#    input), host decode, device decode (nvJPEG + resize), full path on each input.
timeout 330 $PY bench/embed.py --device "$DEVICE" --input "$INPUT" --batch 1,32,256 --n "$N" \
    --rounds 3 --threads "$(nproc)" --model-dir "$MODEL" --json "$OUT/bench_$DEVICE.json"
echo "bench rc=$?"

# 6. Layout choices at batch 256 on the device input path: NCHW kernels, then a CUDA graph
#    of 64-row chunks (the embedder's GPU chunk), each beside the same run's bare model.
if [[ "$DEVICE" == cuda && -z "${SKIP_LAYOUTS:-}" ]]; then
    timeout 100 $PY bench/embed.py --device cuda --input device --batch 256 --n "$N" --rounds 3 \
        --threads "$(nproc)" --model-dir "$MODEL" --nhwc 0 --json "$OUT/bench_nchw.json"
    echo "bench nchw rc=$?"
    timeout 100 $PY bench/embed.py --device cuda --input device --batch 256 --n "$N" --rounds 3 \
        --threads "$(nproc)" --model-dir "$MODEL" --cuda-graph 64 --json "$OUT/bench_graph64.json"
    echo "bench cuda graph rc=$?"
fi
