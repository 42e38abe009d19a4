"""The demo catalogue: real sample photos plus crops, flips and colour variants of each."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageOps

from models.vision.samples import sample_photos

CATEGORIES = {
    "astronaut": "people",
    "grace_hopper": "people",
    "chelsea": "animals",
    "coffee": "food",
    "rocket": "space",
    "motorcycle_left": "vehicles",
    "motorcycle_right": "vehicles",
    "china": "places",
    "flower": "plants",
}


@dataclass(frozen=True)
class DemoProduct:
    """One catalogue entry: id, category, JPEG bytes, availability."""

    item_id: str
    category: str
    image: bytes
    available: bool = True


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def _variants(img: Image.Image, short: bool) -> dict[str, Image.Image]:
    w, h = img.size
    out = {
        "crop": img.crop((w // 8, h // 8, w - w // 8, h - h // 8)),
        "flip": ImageOps.mirror(img),
    }
    if not short:
        out["warm"] = ImageEnhance.Color(img).enhance(1.6)
        out["grey"] = ImageOps.grayscale(img).convert("RGB")
    return out


def demo_catalogue(short: bool = False) -> list[DemoProduct]:
    """Each sample photo and its variants as separate products; the flips of two are unavailable."""
    products: list[DemoProduct] = []
    unavailable = {"chelsea-flip", "rocket-flip"}
    for name, data in sorted(sample_photos().items()):
        category = CATEGORIES.get(name, "photos")
        with Image.open(io.BytesIO(data)) as opened:
            img = opened.convert("RGB")
        products.append(DemoProduct(name, category, _jpeg(img)))
        for suffix, variant in _variants(img, short).items():
            item_id = f"{name}-{suffix}"
            products.append(
                DemoProduct(item_id, category, _jpeg(variant), item_id not in unavailable)
            )
    return products
