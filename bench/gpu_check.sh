#!/usr/bin/env bash
# GPU check of the image encoder: CUDA unit tests + bench/embed.py --device cuda.
#
#   bash bench/gpu_check.sh prepare   # here, with PyPI: fill the .whl/ carry folder
#   bash bench/gpu_check.sh           # on the offline GPU host, with .whl carried
#
# The GPU host (python3 3.12, torch, onnx, numpy, pillow, scikit-image, pytest; the CPU
# build of onnxruntime 1.30.0) gets, in the gitignored .whl/:
#   .whl/*.whl   simplejpeg and pydantic (+ its deps), which it lacks
#   .whl/ort/    onnxruntime-gpu 1.30.0 repacked for sm_90 (/work/shared/gpu/make_carry.sh)
#   .whl/model/  the exported EfficientNet-Lite0: fp16 graph (xz) + model_card.json.
#                The weight wheel (18 MB) and the fp32 graph do not fit the upload, so the
#                host runs the carried fp16 graph; its card keeps the fp32 graph's model_id.
# Results (logs, JSON) go to $OUT.
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
    model=$($py -c "from pathlib import Path; from models.vision.export import ensure_encoder; print(ensure_encoder('efficientnet-lite0', Path('$CACHE')))")
    cp "$model/model_card.json" .whl/model/
    xz -9e -T2 -c "$model/model.fp16.onnx" > .whl/model/model.fp16.onnx.xz
    du -ab .whl | sort -n | awk '{printf "%8.2f MiB  %s\n", $1/1048576, $2}' | tail -15
    exit 0
fi

# Knobs for a dry run on a CPU box (SKIP_CARRY=1 PY=.venv/bin/python DEVICE=cpu N=64).
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
N=${N:-1024}
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
else
    export PYTHONPATH="$ROOT"
fi
export PYTHONUNBUFFERED=1
$PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

# 3. The model: carried fp16 graph; the card's fp32 entry points at it (see header).
MODEL=/tmp/visrec-model
mkdir -p "$MODEL"
$PY - "$MODEL" <<'EOF' || exit 1
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

# 4. Unit tests of decoding and of the encoder (tiny graphs, CUDA provider + fp16 + IO
#    binding when the provider is there). --noconftest: the integration fixtures import
#    redis, which the host lacks and these tests do not use.
$PY -m pytest -q -p no:cacheprovider --noconftest --junitxml="$OUT/unit.xml" \
    tests/unit/test_encoder.py tests/unit/test_images.py
echo "unit tests rc=$?"

# 5. Throughput on the real model, CUDA provider, at batch 1, 32 and 256.
timeout 420 $PY bench/embed.py --device "$DEVICE" --batch 1,32,256 --n "$N" --rounds 3 \
    --threads "$(nproc)" --model-dir "$MODEL" --json "$OUT/bench_$DEVICE.json"
echo "bench rc=$?"
