"""Products to stored items: image bytes (inline or fetched), embedded in one batch.

One procedure for the embed worker and for a re-embed of the catalogue: each product ends as
a ``StoredItem`` (its vector under the embedder's model) or as ``Rejected`` with the
dead-letter code of why (bad base64, a fetch refused or failed, an image that cannot be
decoded or breaks a guard rail). What happens next differs: the worker stores the items and
announces them, the re-embed stores them beside the old model's vectors.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from concurrent.futures import Executor

from models.exceptions import ImageError
from models.vision.embedder import Embedder
from models.vision.images import ImageLimits
from schemas import ErrorCode, ProductImage
from streams.edge.codec import Rejected
from streams.edge.image_fetch import ImageFetcher
from streams.exceptions import FetchError
from streams.settings import EmbedSettings
from streams.state.item_store import StoredItem


def image_limits(settings: EmbedSettings) -> ImageLimits:
    """The guard rails every image passes before it is decoded (worker and re-embed alike)."""
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_pixels,
        min_side=settings.min_side,
    )


def image_bytes(product: ProductImage, fetcher: ImageFetcher) -> bytes | Rejected:
    """The product's encoded image: inline base64, or fetched from its URI."""
    if product.image_b64 is not None:
        try:
            return base64.b64decode(product.image_b64, validate=True)
        except (binascii.Error, ValueError):
            return Rejected(ErrorCode.IMAGE_UNDECODABLE, "image_b64 is not valid base64")
    assert product.image_uri is not None
    try:
        return fetcher.fetch(product.image_uri)
    except FetchError as exc:
        return Rejected(ErrorCode(exc.code), str(exc))


def embed_batch(
    products: Sequence[ProductImage],
    embedder: Embedder,
    fetcher: ImageFetcher,
    fetch_pool: Executor,
) -> list[StoredItem | Rejected]:
    """Embed ``products`` in one batch (images fetched concurrently on ``fetch_pool``)."""
    images = list(fetch_pool.map(lambda p: image_bytes(p, fetcher), products))
    todo = [k for k, data in enumerate(images) if not isinstance(data, Rejected)]
    vectors = embedder.embed_images([images[k] for k in todo])  # type: ignore[misc]  # bytes here
    out: list[StoredItem | Rejected] = [
        data if isinstance(data, Rejected) else Rejected(ErrorCode.IMAGE_UNDECODABLE, "")
        for data in images
    ]
    model_id = embedder.encoder.model_id
    for k, vec in zip(todo, vectors, strict=True):
        product = products[k]
        if isinstance(vec, ImageError):
            out[k] = Rejected(ErrorCode(vec.code), str(vec))
        else:
            out[k] = StoredItem(product.item_id, model_id, vec, product.attributes, product.ts_ms)
    return out
