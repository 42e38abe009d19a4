"""``ProductImage``: a new or updated catalogue item with its picture, on ``visrec.products.v1``."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Identifier, Record, TimestampMs

ALLOWED_URI_SCHEMES = ("file", "http", "https", "s3")


class ProductAttributes(BaseModel):
    """Catalogue attributes used for filtering and display."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    title: str = Field(default="", max_length=1000)
    category: str = Field(default="", max_length=256)
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    available: bool = Field(default=True, description="False keeps the item stored but unlisted.")


class ProductImage(Record):
    """An item and its image: exactly one of inline ``image_b64`` or ``image_uri``."""

    item_id: Identifier
    image_b64: str | None = Field(default=None, description="Standard base64 of the image file.")
    image_uri: str | None = Field(
        default=None, max_length=4096, description="file://, http(s):// or s3:// location."
    )
    attributes: ProductAttributes = Field(default_factory=ProductAttributes)
    ts_ms: TimestampMs

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if (self.image_b64 is None) == (self.image_uri is None):
            raise ValueError("exactly one of image_b64 or image_uri is required")
        if self.image_uri is not None:
            scheme = self.image_uri.split("://", 1)[0].lower() if "://" in self.image_uri else ""
            if scheme not in ALLOWED_URI_SCHEMES:
                raise ValueError(f"image_uri scheme must be one of {ALLOWED_URI_SCHEMES}")
        return self
