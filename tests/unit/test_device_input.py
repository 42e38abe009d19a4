"""The device input path (models/vision/device_input.py) against the CPU path it must agree with.

Everything here runs on the CPU too: torchvision decodes JPEGs with libjpeg on a CPU device
and ``roi_align`` runs there, so the batching, the per-image fallbacks, the resize and the
embedder's pipeline are tested without a GPU. The tests that need CUDA itself (nvJPEG, IO
binding from a device pointer, CUDA streams, CUDA graphs) skip, saying so, where there is
no CUDA device; ``bench/gpu_check.sh`` runs them on a GPU host.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import models.vision.device_input as device_input
from models.exceptions import ImageError
from models.vision.device_input import DeviceInput
from models.vision.embedder import Embedder
from models.vision.encoder import CUDA, CudaOptions, Encoder
from models.vision.images import load_image, read_header
from models.vision.modelcard import ModelCard
from tests.photos import derived_catalogue, encode, sample_arrays, sample_photos
from tests.unit.test_encoder import reference, write_pool_linear
from tests.unit.test_images import LIMITS
from tests.unit.test_images import make_card as images_card

HAS_CUDA = torch.cuda.is_available()
HAS_CUDA_EP = CUDA in ort.get_available_providers()
NEEDS_CUDA = pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA device: run bench/gpu_check.sh on a GPU host"
)
NEEDS_CUDA_EP = pytest.mark.skipif(
    not (HAS_CUDA and HAS_CUDA_EP),
    reason="needs a CUDA device and onnxruntime-gpu: run bench/gpu_check.sh on a GPU host",
)
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]
# The CPU path's guard rails may not change: every failure keeps its dead-letter code.
MIN_COSINE = 0.995


# Per-channel statistics unlike each other: a channel mixed up shows.
make_card = functools.partial(images_card, mean=(120.0, 115.0, 100.0), std=(60.0, 55.0, 50.0))


def jpeg(rgb: npt.NDArray[np.uint8], mode: str = "RGB", **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, "JPEG", quality=92, **params)
    return buf.getvalue()


def exif_jpeg(rgb: npt.NDArray[np.uint8], orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(rgb, exif=exif.tobytes())


def huge_header(data: bytes) -> bytes:
    """A JPEG whose SOF claims 65000 x 65000 pixels: a decompression bomb by its header."""
    out = bytearray(data)
    sof = out.find(b"\xff\xc0")
    out[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(out)


def cpu_path(data: bytes, card: ModelCard) -> npt.NDArray[np.float32] | ImageError:
    try:
        return load_image(data, LIMITS, card)
    except ImageError as exc:
        return exc


def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)


def rows(prepared: device_input.PreparedBatch) -> dict[int, npt.NDArray[np.float32]]:
    tensor = prepared.tensor.float().cpu().numpy()
    return dict(zip(prepared.positions, tensor, strict=True))


# --- header routing --------------------------------------------------------------------------


def test_header_says_which_jpegs_any_decoder_takes() -> None:
    rgb = sample_arrays()["chelsea"]
    assert read_header(jpeg(rgb), LIMITS).plain_jpeg
    assert read_header(jpeg(rgb, "L"), LIMITS).plain_jpeg
    assert not read_header(jpeg(rgb, progressive=True), LIMITS).plain_jpeg
    assert not read_header(jpeg(rgb, "CMYK"), LIMITS).plain_jpeg
    assert not read_header(jpeg(rgb)[:-2], LIMITS).plain_jpeg  # no EOI: maybe truncated
    assert not read_header(jpeg(rgb) + b"trailer", LIMITS).plain_jpeg
    assert not read_header(encode(rgb, "PNG"), LIMITS).plain_jpeg
    header = read_header(exif_jpeg(rgb, 6), LIMITS)
    assert (header.width, header.height, header.orientation) == (451, 300, 6)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image\n" * 20,
        huge_header(jpeg(sample_arrays()["coffee"])),
        jpeg(np.zeros((8, 300, 3), np.uint8)),
        b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
    ],
    ids=["empty", "text", "bomb", "too_small", "garbage_header"],
)
def test_header_fails_exactly_like_the_cpu_path(data: bytes) -> None:
    expected = cpu_path(data, make_card())
    assert isinstance(expected, ImageError)
    with pytest.raises(ImageError) as info:
        read_header(data, LIMITS)
    assert info.value.code == expected.code


# --- one batch, every kind of image ----------------------------------------------------------


@pytest.fixture(scope="module")
def mixed() -> list[tuple[str, bytes]]:
    """Good JPEGs and every fallback and failure the CPU path knows, in one batch."""
    arrays = sample_arrays()
    chelsea, coffee, rocket = arrays["chelsea"], arrays["coffee"], arrays["rocket"]
    return [
        ("jpeg", jpeg(chelsea)),
        ("png", encode(coffee, "PNG")),
        ("progressive", jpeg(rocket, progressive=True)),
        ("jpeg2", jpeg(coffee)),
        ("cmyk", jpeg(coffee, "CMYK")),
        ("grey", jpeg(rocket, "L")),
        ("exif6", exif_jpeg(chelsea, 6)),
        ("exif3", exif_jpeg(coffee, 3)),
        ("truncated", jpeg(rocket)[:20000]),
        ("bomb", huge_header(jpeg(coffee))),
        ("zero", b""),
        ("text", b"a product description, not a photo\n" * 8),
        ("too_small", jpeg(np.full((10, 300, 3), 128, np.uint8))),
        ("trailer", jpeg(rocket) + b"\x00trailing bytes"),
        ("webp", encode(chelsea, "WEBP")),
    ]


ON_DEVICE = {"jpeg", "jpeg2", "grey", "exif6", "exif3"}
ON_HOST = {"png", "progressive", "cmyk", "trailer", "webp"}
FAILS = {"truncated", "bomb", "zero", "text", "too_small"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_every_image_gets_the_cpu_paths_outcome(
    mixed: list[tuple[str, bytes]], device: str, order: str
) -> None:
    # 224: the CPU path decodes these photos at full size (a smaller card would let it
    # decode at 1/2 or 1/4 scale in the DCT domain, a different picture to compare with).
    card = make_card(224, order)
    names = [name for name, _ in mixed]
    prepared = DeviceInput(card, LIMITS, device=device).prepare([d for _, d in mixed])
    assert prepared.tensor.device.type == device
    assert prepared.tensor.shape == (len(prepared.positions), 3, 224, 224)
    assert {names[i] for i in prepared.on_device} == ON_DEVICE
    assert {names[i] for i in prepared.errors} == FAILS
    assert {names[i] for i in prepared.positions} == ON_DEVICE | ON_HOST
    ours = rows(prepared)
    for index, (name, data) in enumerate(mixed):
        expected = cpu_path(data, card)
        if isinstance(expected, ImageError):
            assert prepared.errors[index].code == expected.code, name
        elif name in ON_HOST:
            np.testing.assert_array_equal(ours[index], expected, err_msg=name)
        else:
            assert np.abs(ours[index] - expected).mean() < 0.03, name
            assert cosine(ours[index][None], expected[None])[0] > 0.999, name


@pytest.mark.parametrize("device", DEVICES)
def test_good_images_are_unaffected_by_bad_neighbours(
    mixed: list[tuple[str, bytes]], device: str
) -> None:
    card = make_card(64)
    inputs = DeviceInput(card, LIMITS, device=device)
    good = [data for name, data in mixed if name not in FAILS]
    clean = inputs.prepare(good).tensor
    full = rows(inputs.prepare([data for _, data in mixed]))
    dirty = [full[i] for i, (name, _) in enumerate(mixed) if name not in FAILS]
    np.testing.assert_allclose(np.stack(dirty), clean.float().cpu().numpy(), atol=1e-5)


def test_a_jpeg_the_device_refuses_takes_the_cpu_path(
    mixed: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvJPEG refuses some files the header calls plain: the batch is retried one by one."""
    refused = jpeg(sample_arrays()["clock"])
    real = device_input._decode_jpegs
    calls: list[int] = []

    def picky(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        calls.append(len(encoded))
        if any(t.numel() == len(refused) and bytes(t.numpy()) == refused for t in encoded):
            raise RuntimeError("nvjpeg: unsupported JPEG")
        return real(encoded, device)

    monkeypatch.setattr(device_input, "_decode_jpegs", picky)
    card = make_card(64)
    images = [data for _, data in mixed] + [refused]
    prepared = DeviceInput(card, LIMITS, device="cpu").prepare(images)
    last = len(images) - 1
    assert last in prepared.positions and last not in prepared.on_device
    np.testing.assert_array_equal(rows(prepared)[last], load_image(refused, LIMITS, card))
    names = [name for name, _ in mixed]
    assert {names[i] for i in prepared.on_device} == ON_DEVICE
    assert calls == [len(ON_DEVICE) + 1] + [1] * (len(ON_DEVICE) + 1)


def test_large_batches_decode_in_bounded_parts(
    mixed: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = device_input._decode_jpegs
    calls: list[int] = []

    def counted(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        calls.append(len(encoded))
        return real(encoded, device)

    monkeypatch.setattr(device_input, "_decode_jpegs", counted)
    card = make_card(64)
    images = [data for _, data in mixed]
    whole = DeviceInput(card, LIMITS, device="cpu").prepare(images)
    assert calls == [len(ON_DEVICE)]
    calls.clear()
    # 300 x 451 and 400 x 600 photos: a 300,000-pixel budget takes one or two at a time.
    parts = DeviceInput(card, LIMITS, device="cpu", decode_pixels=300_000).prepare(images)
    assert len(calls) > 2 and max(calls) <= 2
    assert parts.positions == whole.positions and parts.on_device == whole.on_device
    torch.testing.assert_close(parts.tensor, whole.tensor, atol=0, rtol=0)


def test_fallbacks_run_on_the_given_pool(mixed: list[tuple[str, bytes]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    card = make_card(64)
    inputs = DeviceInput(card, LIMITS, device="cpu")
    images = [data for _, data in mixed]
    with ThreadPoolExecutor(2) as pool:
        pooled = inputs.prepare(images, pool)
    serial = inputs.prepare(images)
    assert pooled.positions == serial.positions
    assert {i: e.code for i, e in pooled.errors.items()} == {
        i: e.code for i, e in serial.errors.items()
    }
    torch.testing.assert_close(pooled.tensor, serial.tensor)


def test_empty_and_all_bad_batches() -> None:
    inputs = DeviceInput(make_card(), LIMITS, device="cpu")
    empty = inputs.prepare([])
    assert empty.tensor.shape == (0, 3, 32, 32) and empty.positions == [] and empty.errors == {}
    bad = inputs.prepare([b"", b"junk"])
    assert bad.tensor.shape[0] == 0 and set(bad.errors) == {0, 1}


def test_rows_come_out_in_the_requested_dtype() -> None:
    data = jpeg(sample_arrays()["chelsea"])
    half = DeviceInput(make_card(), LIMITS, device="cpu", dtype=torch.float16).prepare([data])
    assert half.tensor.dtype == torch.float16
    full = DeviceInput(make_card(), LIMITS, device="cpu").prepare([data]).tensor
    torch.testing.assert_close(half.tensor.float(), full, atol=1e-2, rtol=1e-2)


# --- embedder and encoder --------------------------------------------------------------------


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    write_pool_linear(tmp_path / "m")
    return tmp_path / "m"


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_embedder_on_the_device_path_matches_the_host_path(
    tiny_dir: Path, mixed: list[tuple[str, bytes]], chunk: int
) -> None:
    encoder = Encoder.load(tiny_dir, device="cpu")
    images = [data for _, data in mixed] * 2
    with Embedder(encoder, LIMITS, 2, chunk_size=chunk) as host:
        assert host.input_path == "host"  # a CPU encoder never picks the device path
        expected = host.embed_images(images)
    inputs = DeviceInput(encoder.card, LIMITS, device="cpu")
    with Embedder(encoder, LIMITS, 2, chunk_size=chunk, device_input=inputs) as on_device:
        assert on_device.input_path == "device:cpu"
        results = on_device.embed_images(images)
    assert len(results) == len(images)
    for ours, theirs in zip(results, expected, strict=True):
        if isinstance(theirs, ImageError):
            assert isinstance(ours, ImageError) and ours.code == theirs.code
        else:
            assert isinstance(ours, np.ndarray)
            assert float(ours @ theirs) > 0.999


def test_embedder_gpu_decode_off_or_no_cuda_keeps_the_host_path(tiny_dir: Path) -> None:
    encoder = Encoder.load(tiny_dir, device="cpu")
    for mode in ("auto", "off"):
        with Embedder(encoder, LIMITS, 1, gpu_decode=mode) as embedder:  # type: ignore[arg-type]
            assert embedder.input_path == "host"


def test_embed_tensor_matches_embed(tiny_dir: Path) -> None:
    encoder = Encoder.load(tiny_dir, device="cpu")
    batch = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(
        encoder.embed_tensor(torch.from_numpy(batch)), encoder.embed(batch)
    )
    np.testing.assert_allclose(encoder.embed(batch), reference(batch), atol=1e-6)
    np.testing.assert_array_equal(
        encoder.embed_tensor(torch.from_numpy(batch).half()),
        encoder.embed(batch.astype(np.float16).astype(np.float32)),
    )
    assert encoder.embed_tensor(torch.empty((0, 3, 32, 32))).shape == (0, 6)
    with pytest.raises(ValueError, match="expected"):
        encoder.embed_tensor(torch.zeros((2, 32, 32, 3)))


# --- the real encoder: device path vs CPU path ----------------------------------------------


@pytest.fixture(scope="module")
def real_encoder() -> Encoder:
    """The default exported encoder (VISREC_TEST_MODEL_DIR points a GPU host at its copy)."""
    folder = os.environ.get("VISREC_TEST_MODEL_DIR")
    if folder:
        return Encoder.load(Path(folder))
    from models.vision.export import DEFAULT_ENCODER, ensure_encoder

    return Encoder.load(ensure_encoder(DEFAULT_ENCODER, Path.home() / ".cache/visrec/models"))


def large_photos() -> Iterator[tuple[str, bytes]]:
    """Product-photo sizes (2-3k px): far more downscaling than the bundled photos need."""
    for name, side in (("chelsea", 2400), ("coffee", 3000), ("motorcycle_left", 2000)):
        im = Image.fromarray(sample_arrays()[name])
        im = im.resize((side, round(side * im.height / im.width)), Image.Resampling.LANCZOS)
        yield f"{name}-{side}", jpeg(np.asarray(im))


@pytest.mark.export
@pytest.mark.parametrize("device", DEVICES)
def test_real_encoder_vectors_match_the_cpu_path(real_encoder: Encoder, device: str) -> None:
    """Cosine >= 0.995 per image, bundled photos and derived catalogue, device vs CPU path."""
    photos = [
        *sample_photos().items(),
        *derived_catalogue(48, seed=5),
        *large_photos(),
        ("exif6", exif_jpeg(sample_arrays()["chelsea"], 6)),
    ]
    images = [data for _, data in photos]
    inputs = DeviceInput(
        real_encoder.card,
        LIMITS,
        device=device,
        dtype=device_input.torch_dtype(real_encoder.input_type),
    )
    with Embedder(real_encoder, LIMITS, 2, gpu_decode="off") as host:
        expected = host.embed_images(images)
    with Embedder(real_encoder, LIMITS, 2, chunk_size=16, device_input=inputs) as on_device:
        results = on_device.embed_images(images)
    cosines = {
        name: float(np.dot(ours, theirs))  # type: ignore[arg-type]  # all decode
        for (name, _), ours, theirs in zip(photos, results, expected, strict=True)
    }
    worst = min(cosines, key=cosines.__getitem__)
    assert cosines[worst] >= MIN_COSINE, (worst, cosines[worst])
    assert np.mean(list(cosines.values())) > 0.998


# --- CUDA only -------------------------------------------------------------------------------


@NEEDS_CUDA
def test_cuda_prepare_matches_cpu_prepare_and_is_complete(mixed: list[tuple[str, bytes]]) -> None:
    """nvJPEG + roi_align on the GPU against libjpeg + roi_align on the CPU, same batch."""
    card = make_card(64)
    images = [data for _, data in mixed]
    gpu = DeviceInput(card, LIMITS, device="cuda", dtype=torch.float16).prepare(images)
    cpu = DeviceInput(card, LIMITS, device="cpu").prepare(images)
    assert gpu.positions == cpu.positions and gpu.on_device == cpu.on_device
    assert gpu.tensor.is_cuda and gpu.tensor.dtype == torch.float16
    # prepare() synchronised its stream: reading on another stream needs no further wait.
    other = torch.cuda.Stream()
    with torch.cuda.stream(other):
        copied = gpu.tensor.float().cpu().numpy()
    assert cosine(copied, cpu.tensor.numpy()).min() > 0.999


@NEEDS_CUDA
def test_cuda_decode_probe() -> None:
    assert device_input.cuda_decode_problem() is None


@NEEDS_CUDA_EP
def test_io_binding_from_a_device_pointer(tiny_dir: Path) -> None:
    encoder = Encoder.load(tiny_dir, device="cuda")
    batch = np.random.default_rng(4).standard_normal((3, 3, 32, 32)).astype(np.float32)
    on_device = torch.from_numpy(batch).cuda()
    out = encoder.embed_tensor(on_device)
    assert (cosine(out, reference(batch)) > 0.999).all()
    assert (cosine(encoder.embed_tensor(on_device.half()), reference(batch)) > 0.999).all()


@NEEDS_CUDA_EP
def test_embedder_picks_the_cuda_input_path(tiny_dir: Path, mixed: list[tuple[str, bytes]]) -> None:
    encoder = Encoder.load(tiny_dir, device="cuda")
    images = [data for _, data in mixed] * 3
    with Embedder(encoder, LIMITS, 2, chunk_size=8) as embedder:
        assert embedder.input_path.startswith("device:cuda")
        results = embedder.embed_images(images)
    with Embedder(encoder, LIMITS, 2, chunk_size=8, gpu_decode="off") as host:
        assert host.input_path == "host"
        expected = host.embed_images(images)
    for ours, theirs in zip(results, expected, strict=True):
        if isinstance(theirs, ImageError):
            assert isinstance(ours, ImageError) and ours.code == theirs.code
        else:
            assert float(np.dot(ours, theirs)) > 0.999  # type: ignore[arg-type]


@NEEDS_CUDA_EP
@pytest.mark.parametrize("rows_in", [1, 4, 9])
def test_cuda_graph_matches_plain_runs(tiny_dir: Path, rows_in: int) -> None:
    plain = Encoder.load(tiny_dir, device="cuda")
    graphed = Encoder.load(tiny_dir, device="cuda", cuda=CudaOptions(graph_batch=4))
    assert graphed.graph_batch == 4 and graphed is not plain
    batch = np.random.default_rng(rows_in).standard_normal((rows_in, 3, 32, 32))
    batch = batch.astype(np.float32)
    for _ in range(3):  # capture, then replays
        out = graphed.embed_tensor(torch.from_numpy(batch).cuda())
        np.testing.assert_allclose(out, plain.embed(batch), atol=5e-3)
        np.testing.assert_allclose(graphed.embed(batch), plain.embed(batch), atol=5e-3)


def test_cuda_options_reach_the_provider() -> None:
    from models.vision.encoder import cuda_provider_options

    assert cuda_provider_options()["prefer_nhwc"] == "1"
    assert "enable_cuda_graph" not in cuda_provider_options()
    options = cuda_provider_options(CudaOptions(prefer_nhwc=False, graph_batch=64))
    assert options["prefer_nhwc"] == "0" and options["enable_cuda_graph"] == "1"
    with pytest.raises(ValueError, match="graph_batch"):
        CudaOptions(graph_batch=0)
    assert dataclasses.replace(CudaOptions(), fp16=False) != CudaOptions()
