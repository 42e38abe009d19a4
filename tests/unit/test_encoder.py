"""Encoder, model card and embedder on small ONNX graphs built here.

The graphs stand in for a third-party encoder plugged in through its model card alone:
global average pool, then a fixed linear map to ``dim``. Their exact output is computed in
numpy, so every assertion checks real numbers. On a machine with onnxruntime-gpu the same
tests run the CUDA provider (fp16 graph, IO binding); elsewhere the CPU provider.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.exceptions import EncoderError, ImageError, ModelCardError
from models.vision.embedder import Embedder
from models.vision.encoder import CPU, CUDA, Encoder, l2_normalise
from models.vision.images import ImageLimits, load_image
from models.vision.modelcard import CARD_FILE, ModelCard, model_id_for
from tests.photos import encode, sample_photos

SIZE = 32
DIM = 6
LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, min_side=16)
HAS_CUDA = CUDA in ort.get_available_providers()


def projection(dim: int = DIM) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((3, dim)).astype(np.float32)


def write_pool_linear(
    folder: Path,
    *,
    dim: int = DIM,
    input_name: str = "pixels",
    output_name: str = "features",
    card_dim: int | None = None,
    fp16: bool = True,
) -> ModelCard:
    """GlobalAveragePool -> Flatten -> MatMul(W): a tiny encoder with a known answer."""
    folder.mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", dim])
    weight = numpy_helper.from_array(projection(dim), name="W")
    nodes = [
        helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], [output_name]),
    ]
    graph = helper.make_graph(nodes, "pool_linear", [x], [y], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "encoder.onnx"))
    fp16_name = None
    if fp16:
        from models.vision.export import write_fp16

        write_fp16(folder / "encoder.onnx", folder / "encoder.fp16.onnx")
        fp16_name = "encoder.fp16.onnx"
    card = ModelCard(
        model_id=model_id_for("pool-linear", folder / "encoder.onnx"),
        name="pool-linear",
        input_size=SIZE,
        color_order="BGR",
        mean=(100.0, 110.0, 120.0),
        std=(50.0, 60.0, 70.0),
        layout="NCHW",
        input_name=input_name,
        output_name=output_name,
        dim=card_dim if card_dim is not None else dim,
        onnx_fp32="encoder.onnx",
        onnx_fp16=fp16_name,
    )
    card.save(folder)
    return card


def reference(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return l2_normalise(batch.mean(axis=(2, 3)) @ projection())


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    write_pool_linear(tmp_path / "m")
    return tmp_path / "m"


# --- model card ----------------------------------------------------------------------------


def test_card_round_trips(model_dir: Path) -> None:
    card = ModelCard.load(model_dir)
    assert card.color_order == "BGR"
    assert card.mean == (100.0, 110.0, 120.0)
    assert card.resize_size == round(SIZE / 0.875)
    assert card.model_id.startswith("pool-linear-")
    assert len(card.model_id) == len("pool-linear-") + 16
    raw = json.loads((model_dir / CARD_FILE).read_text())
    assert raw["onnx_fp16"] == "encoder.fp16.onnx"


def test_card_rejects_unknown_fields_and_missing_files(model_dir: Path) -> None:
    raw = json.loads((model_dir / CARD_FILE).read_text())
    (model_dir / CARD_FILE).write_text(json.dumps({**raw, "colour": "RGB"}))
    with pytest.raises(ModelCardError, match="unknown"):
        ModelCard.load(model_dir)
    (model_dir / CARD_FILE).write_text(json.dumps({**raw, "onnx_fp32": "missing.onnx"}))
    with pytest.raises(ModelCardError, match=r"missing\.onnx"):
        ModelCard.load(model_dir)
    with pytest.raises(ModelCardError, match=r"no model_card\.json"):
        ModelCard.load(model_dir / "nowhere")


@pytest.mark.parametrize(
    "change",
    [{"std": (1.0, 0.0, 1.0)}, {"color_order": "RGBA"}, {"layout": "NHWC"}, {"dim": 0}],
)
def test_card_rejects_bad_values(model_dir: Path, change: dict[str, object]) -> None:
    card = ModelCard.load(model_dir)
    with pytest.raises(ModelCardError):
        dataclasses.replace(card, **change)  # type: ignore[arg-type]  # bad on purpose


# --- encoder -------------------------------------------------------------------------------


def test_embed_matches_numpy_reference(model_dir: Path) -> None:
    encoder = Encoder.load(model_dir)
    assert encoder.provider == (CUDA if HAS_CUDA else CPU)
    assert encoder.dim == DIM
    assert encoder.model_id == ModelCard.load(model_dir).model_id
    rng = np.random.default_rng(0)
    for n in (1, 3, 8):  # 3 exercises the power-of-two padding on CUDA
        batch = rng.standard_normal((n, 3, SIZE, SIZE)).astype(np.float32) + 0.5
        out = encoder.embed(batch)
        assert out.shape == (n, DIM)
        assert out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        # fp16 on the GPU: compare directions, not digits.
        cosine = (out * reference(batch)).sum(axis=1)
        assert (cosine > (0.999 if encoder.provider == CUDA else 0.999999)).all()


def test_embed_empty_and_bad_shapes(model_dir: Path) -> None:
    encoder = Encoder.load(model_dir)
    assert encoder.embed(np.empty((0, 3, SIZE, SIZE), np.float32)).shape == (0, DIM)
    with pytest.raises(ValueError, match="expected"):
        encoder.embed(np.zeros((2, SIZE, SIZE, 3), np.float32))


def test_one_session_per_process(model_dir: Path) -> None:
    assert Encoder.load(model_dir) is Encoder.load(model_dir)


def test_cpu_device_uses_fp32_graph(model_dir: Path) -> None:
    encoder = Encoder.load(model_dir, device="cpu", intra_op_threads=1)
    assert encoder.provider == CPU
    batch = np.random.default_rng(1).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(encoder.embed(batch), reference(batch), atol=1e-6)


def test_cuda_device_needs_the_cuda_provider(model_dir: Path) -> None:
    if HAS_CUDA:
        assert Encoder.load(model_dir, device="cuda").provider == CUDA
    else:
        with pytest.raises(EncoderError, match="CUDAExecutionProvider"):
            Encoder.load(model_dir, device="cuda")


def test_card_names_must_match_the_graph(tmp_path: Path) -> None:
    card = write_pool_linear(tmp_path / "m", fp16=False)
    dataclasses.replace(card, input_name="image").save(tmp_path / "m")
    with pytest.raises(EncoderError, match="no input 'image'"):
        Encoder.load(tmp_path / "m", device="cpu")
    write_pool_linear(tmp_path / "d", card_dim=DIM + 1, fp16=False)
    with pytest.raises(EncoderError, match="output width"):
        Encoder.load(tmp_path / "d", device="cpu")


# --- embedder ------------------------------------------------------------------------------


def test_embedder_returns_one_result_per_input_in_order(model_dir: Path) -> None:
    encoder = Encoder.load(model_dir)
    photos = sample_photos()
    good = [photos["chelsea"], photos["coffee"], photos["rocket"], photos["motorcycle_left"]]
    bad = {
        1: b"",
        3: b"not an image at all",
        4: photos["astronaut"][:5000],  # truncated JPEG
        6: encode(np.zeros((8, 400, 3), np.uint8), "PNG"),  # too small
    }
    images: list[bytes] = []
    good_iter = iter(good)
    for i in range(8):
        images.append(bad[i] if i in bad else next(good_iter))
    with Embedder(encoder, LIMITS, decode_threads=2, chunk_size=3) as embedder:
        results = embedder.embed_images(images)
    assert len(results) == 8
    codes = {i: r.code for i, r in enumerate(results) if isinstance(r, ImageError)}
    assert codes == {
        1: "image_undecodable",
        3: "image_undecodable",
        4: "image_undecodable",
        6: "image_too_small",
    }
    expected = np.stack([load_image(data, LIMITS, encoder.card) for data in good])
    vectors = np.stack([r for r in results if isinstance(r, np.ndarray)])
    cosine = (vectors * reference(expected)).sum(axis=1)
    assert (cosine > 0.999).all()


@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
def test_chunking_does_not_change_results(model_dir: Path, chunk: int) -> None:
    encoder = Encoder.load(model_dir)
    images = list(sample_photos().values())[:7]
    with Embedder(encoder, LIMITS, decode_threads=1, chunk_size=64) as embedder:
        whole = np.stack(embedder.embed_images(images))  # type: ignore[arg-type]  # all valid
    with Embedder(encoder, LIMITS, decode_threads=3, chunk_size=chunk) as embedder:
        parts = embedder.embed_images(images)
    assert all(isinstance(p, np.ndarray) for p in parts)
    # fp16 on CUDA: other batch shapes may pick other kernels, so allow fp16 rounding.
    atol = 5e-3 if encoder.provider == CUDA else 1e-6
    np.testing.assert_allclose(np.stack(parts), whole, atol=atol)  # type: ignore[arg-type]


def test_embedder_lifecycle(model_dir: Path) -> None:
    encoder = Encoder.load(model_dir)
    with pytest.raises(ValueError, match="decode_threads"):
        Embedder(encoder, LIMITS, decode_threads=0)
    embedder = Embedder(encoder, LIMITS, decode_threads=1)
    assert embedder.embed_images([]) == []
    embedder.close()
    with pytest.raises(RuntimeError, match="closed"):
        embedder.embed_images([sample_photos()["coffee"]])
