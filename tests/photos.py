"""Test-side names for the bundled real photos (the code lives in ``models.vision.samples``)."""

from __future__ import annotations

from models.vision.samples import (
    CAT,
    IMAGENET_CAT_CLASSES,
    MOTORCYCLE_PAIR,
    derived_catalogue,
    encode,
    sample_arrays,
    sample_photos,
)

__all__ = [
    "CAT",
    "IMAGENET_CAT_CLASSES",
    "MOTORCYCLE_PAIR",
    "derived_catalogue",
    "encode",
    "sample_arrays",
    "sample_photos",
]
