"""The model card: everything the runtime needs to feed and read an ONNX image encoder.

A card is ``model_card.json`` beside the ``.onnx`` files. Our exporter writes one; any other
encoder (a CLIP image tower, a fine-tuned ResNet, ...) plugs in by writing its own card next
to its graph: input size, colour order, per-channel mean/std in 0..255 pixel units, the
input and output tensor names and the embedding width.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from models.exceptions import ModelCardError

CARD_FILE = "model_card.json"

ColorOrder = Literal["RGB", "BGR"]
Layout = Literal["NCHW"]


@dataclass(frozen=True)
class ModelCard:
    """How to feed an ONNX image encoder and what comes out of it."""

    model_id: str
    name: str
    input_size: int
    color_order: ColorOrder
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: Layout
    input_name: str
    output_name: str
    dim: int
    onnx_fp32: str
    onnx_fp16: str | None = None
    # Shorter side is resized to input_size / crop_fraction before the centre crop
    # (0.875 is the usual ImageNet evaluation crop: 224 out of 256).
    crop_fraction: float = 0.875
    # Optional second output with ImageNet logits; only tests and demos read it.
    logits_name: str | None = None
    # sha256 of the weight file the graph was exported from (our exports only).
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ModelCardError(f"input_size {self.input_size} is too small")
        if self.color_order not in ("RGB", "BGR"):
            raise ModelCardError(f"color_order must be RGB or BGR, not {self.color_order!r}")
        if self.layout != "NCHW":
            raise ModelCardError(f"only NCHW layout is supported, not {self.layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ModelCardError("mean and std need one value per channel")
        if any(s <= 0 for s in self.std):
            raise ModelCardError("std values must be positive")
        if self.dim < 1:
            raise ModelCardError("dim must be positive")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ModelCardError("crop_fraction must be in (0, 1]")
        if not self.model_id or len(self.model_id) > 128:
            raise ModelCardError("model_id must be 1..128 characters")

    @property
    def resize_size(self) -> int:
        """Shorter side after resizing, before the centre crop."""
        return round(self.input_size / self.crop_fraction)

    def to_json(self) -> str:
        """Serialise the card as pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        """Build a card from parsed JSON, rejecting unknown or missing fields."""
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ModelCardError(f"unknown model card fields: {sorted(unknown)}")
        try:
            values = dict(raw)
            values["mean"] = _triple(values["mean"])
            values["std"] = _triple(values["std"])
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise ModelCardError(f"invalid model card: {exc}") from exc

    @classmethod
    def load(cls, model_dir: Path) -> ModelCard:
        """Read ``model_card.json`` from a model folder and check its files exist."""
        path = Path(model_dir) / CARD_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelCardError(f"no {CARD_FILE} in {model_dir}") from exc
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelCardError(f"{path} must hold a JSON object")
        card = cls.from_dict(raw)
        for name in (card.onnx_fp32, card.onnx_fp16):
            if name is not None and not (Path(model_dir) / name).is_file():
                raise ModelCardError(f"{path} names {name}, which is not in {model_dir}")
        return card

    def save(self, model_dir: Path) -> Path:
        """Write ``model_card.json`` into a model folder; returns its path."""
        path = Path(model_dir) / CARD_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path


def _triple(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_id_for(name: str, onnx_fp32: Path) -> str:
    """Derive an encoder's id: its name plus the fp32 graph's sha256 prefix."""
    return f"{name}-{file_sha256(onnx_fp32)[:16]}"
