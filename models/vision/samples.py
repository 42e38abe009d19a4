"""Real photos for the demo, tests and benchmarks, from images that ship inside wheels.

``sample_photos()`` gathers the photographs bundled with scikit-image, scikit-learn and
matplotlib (no downloads), encoded as the bytes a producer would send.
``derived_catalogue(n)`` turns them into ``n`` distinct product-like JPEGs (random crops,
flips, colour variants, 400-800 px, varied quality) for load tests.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageEnhance, ImageOps

RGB = npt.NDArray[np.uint8]

# scikit-image photographs bundled in its wheel (colour and greyscale); synthetic images
# (colorwheel, logo, text, page) are left out on purpose.
_SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "clock",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "brick",
    "grass",
    "gravel",
)

# Which sample is which, for tests that check rankings.
MOTORCYCLE_PAIR = ("motorcycle_left", "motorcycle_right")
CAT = "chelsea"
# ImageNet-1k domestic cat classes: tabby, tiger cat, Persian, Siamese, Egyptian cat.
IMAGENET_CAT_CLASSES = frozenset({281, 282, 283, 284, 285})


def _as_rgb(arr: npt.NDArray[np.generic]) -> RGB:
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8)


def _skimage(name: str) -> Callable[[], RGB]:
    def load() -> RGB:
        import skimage.data

        return _as_rgb(getattr(skimage.data, name)())

    return load


def _motorcycle(side: int) -> RGB:
    import skimage.data

    pair = skimage.data.stereo_motorcycle()  # type: ignore[no-untyped-call]  # untyped upstream
    return _as_rgb(pair[side])


def _sklearn(name: str) -> RGB:
    from sklearn.datasets import load_sample_image

    return _as_rgb(load_sample_image(name))


def _grace_hopper() -> RGB:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as im:
        return _as_rgb(np.asarray(im.convert("RGB")))


@cache
def sample_arrays() -> dict[str, RGB]:
    """Every bundled photo as an (H, W, 3) uint8 RGB array, by name."""
    photos: dict[str, RGB] = {name: _skimage(name)() for name in _SKIMAGE_PHOTOS}
    photos["motorcycle_left"] = _motorcycle(0)
    photos["motorcycle_right"] = _motorcycle(1)
    photos["china"] = _sklearn("china.jpg")
    photos["flower"] = _sklearn("flower.jpg")
    photos["grace_hopper"] = _grace_hopper()
    return photos


def encode(rgb: RGB, fmt: str = "JPEG", **params: int | bool) -> bytes:
    """Encode an RGB array as image bytes (JPEG quality 92 unless given)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        params.setdefault("quality", 92)
    Image.fromarray(rgb).save(buf, fmt, **params)
    return buf.getvalue()


@cache
def _sample_photos() -> tuple[tuple[str, bytes], ...]:
    out: list[tuple[str, bytes]] = []
    for i, (name, rgb) in enumerate(sorted(sample_arrays().items())):
        # Mostly JPEG, with a few PNGs so both common product formats are exercised.
        out.append((name, encode(rgb, "PNG" if i % 5 == 4 else "JPEG")))
    return tuple(out)


def sample_photos() -> dict[str, bytes]:
    """The bundled photos as encoded JPEG/PNG bytes, by name."""
    return dict(_sample_photos())


def _variant(rgb: RGB, rng: np.random.Generator) -> Image.Image:
    h, w = rgb.shape[:2]
    # Random crop keeping 55-100% of each side.
    ch, cw = int(h * rng.uniform(0.55, 1.0)), int(w * rng.uniform(0.55, 1.0))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    im = Image.fromarray(rgb[top : top + ch, left : left + cw])
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    roll = rng.random()
    if roll < 0.1:
        im = ImageOps.grayscale(im).convert("RGB")
    elif roll < 0.6:
        im = ImageEnhance.Color(im).enhance(float(rng.uniform(0.6, 1.4)))
        im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.8, 1.2)))
    # Longer side 400-800 px, aspect ratio kept.
    longest = int(rng.integers(400, 801))
    scale = longest / max(im.size)
    size = (max(16, round(im.size[0] * scale)), max(16, round(im.size[1] * scale)))
    return im.resize(size, Image.Resampling.LANCZOS)


def derived_catalogue(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` distinct product-like JPEGs (400-800 px) derived from the bundled photos."""
    rng = np.random.default_rng(seed)
    photos = sorted(sample_arrays().items())
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        name, rgb = photos[i % len(photos)]
        im = _variant(rgb, rng)
        buf = io.BytesIO()
        quality = int(rng.integers(75, 96))
        im.save(buf, "JPEG", quality=quality, progressive=bool(rng.random() < 0.2))
        out.append((f"{name}-{i:04d}", buf.getvalue()))
    return out
