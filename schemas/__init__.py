"""Wire contracts of visrec: every Kafka payload, its version, and the Redis key layout.

This package imports nothing else of ours. Each contract is a frozen pydantic model whose
JSON form is the wire format; ``schemas/jsonschema/*.json`` is generated from these models
(``python -m schemas.export``) for producers written in other languages.
"""

from __future__ import annotations

from schemas.base import SCHEMA_VERSION, Limits, Record
from schemas.deadletter import DeadLetter, ErrorCode
from schemas.events import EventType, UserEvent
from schemas.keys import RedisKeys
from schemas.products import ProductAttributes, ProductImage
from schemas.recommendations import Recommendations, RecommendedItem, encode_recommendations
from schemas.vectors import ItemVector, VectorDType

CONTRACTS: dict[str, type[Record]] = {
    "UserEvent": UserEvent,
    "ProductImage": ProductImage,
    "ItemVector": ItemVector,
    "Recommendations": Recommendations,
    "DeadLetter": DeadLetter,
}

__all__ = [
    "CONTRACTS",
    "SCHEMA_VERSION",
    "DeadLetter",
    "ErrorCode",
    "EventType",
    "ItemVector",
    "Limits",
    "ProductAttributes",
    "ProductImage",
    "Recommendations",
    "RecommendedItem",
    "Record",
    "RedisKeys",
    "UserEvent",
    "VectorDType",
    "encode_recommendations",
]
