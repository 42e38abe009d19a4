"""Retrieval spaces in Redis: fitted once, published to every worker, refitted as items grow.

A space (``models.index.Space``) is fitted on a random sample of a model's item vectors read
from Redis, by one process at a time (a lock with a TTL): the first interest worker that
finds the catalogue large enough, ``visrec model fit-space``, or ``visrec model reembed``
before it switches models. It is stored under ``space(model, version)`` and then announced
by setting ``space_version(model)``; workers poll that key with the active model and, when it
changes, build a new index from Redis in the background and swap it in at once. Full vectors
stay in Redis and on the item-vectors topic; only the compact form lives in workers.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import redis

from models.exceptions import SpaceError, SpaceRefused
from models.index import FitParams, ItemIndex, Space, fit_space, raw_space
from schemas import RedisKeys
from streams.settings import InterestSettings
from streams.state.item_store import ItemStore

log = logging.getLogger(__name__)

LOCK_TTL_S = 600
OLD_SPACE_TTL_S = 600  # a replaced space stays readable this long for workers still building

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SpaceStore:
    """Reads and writes the spaces of every model in Redis."""

    def __init__(self, client: redis.Redis[Any], keys: RedisKeys) -> None:
        """Spaces under ``keys``."""
        self._r = client
        self._keys = keys
        self._unlock = client.register_script(_UNLOCK)

    def version(self, model_id: str) -> str | None:
        """The version ``model_id`` is searched in now (None: no space fitted yet)."""
        value = self._r.get(self._keys.space_version(model_id))
        return value.decode("utf-8") if isinstance(value, bytes) else None

    def load(self, model_id: str, version: str) -> Space:
        """One stored space; SpaceError if it is missing or unreadable."""
        blob = self._r.get(self._keys.space(model_id, version))
        if not isinstance(blob, bytes):
            raise SpaceError(f"space {model_id}@{version} is not in Redis")
        space = Space.from_bytes(blob)
        if space.model_id != model_id or space.version != version:
            raise SpaceError(f"space stored as {model_id}@{version} is {space.id}")
        return space

    def refused_at(self, model_id: str) -> int | None:
        """Catalogue size at which a space for ``model_id`` was last refused (None: never)."""
        value = self._r.get(self._keys.space_refused(model_id))
        return int(value) if value is not None else None

    def refuse(self, model_id: str, catalogue: int) -> None:
        """Note that a space fitted on a catalogue of ``catalogue`` items was refused."""
        self._r.set(self._keys.space_refused(model_id), str(catalogue))

    def publish(self, space: Space) -> None:
        """Store ``space`` and make it the one ``space.model_id`` is searched in."""
        if space.is_raw:
            raise SpaceError("the raw space is never published")
        previous = self.version(space.model_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._keys.space(space.model_id, space.version), space.to_bytes())
        pipe.set(self._keys.space_version(space.model_id), space.version)
        pipe.delete(self._keys.space_refused(space.model_id))
        if previous is not None and previous != space.version:
            pipe.expire(self._keys.space(space.model_id, previous), OLD_SPACE_TTL_S)
        pipe.execute()

    def lock(self, model_id: str, owner: str, ttl_s: int = LOCK_TTL_S) -> bool:
        """Take the fitting lock of ``model_id`` (False if another process holds it)."""
        return bool(self._r.set(self._keys.space_lock(model_id), owner, nx=True, ex=ttl_s))

    def unlock(self, model_id: str, owner: str) -> None:
        """Release the lock if ``owner`` still holds it."""
        self._unlock(keys=[self._keys.space_lock(model_id)], args=[owner])


def fit_params(settings: InterestSettings) -> FitParams:
    """How spaces are fitted, from the interest settings."""
    return FitParams(
        dims=settings.space_dims,
        ivf_min_items=settings.ann_threshold,
        target_recall=settings.ann_target_recall,
        min_recall=settings.space_min_recall,
        k=max(settings.candidates, settings.top_k),
    )


def lock_owner() -> str:
    """The name this process holds locks under."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class FitReport:
    """What a fit did."""

    space: Space | None
    catalogue: int
    seconds: float
    refused: SpaceRefused | None = None
    """Set when a space was fitted but would lose too much recall (``space_min_recall``)."""


def fit_and_publish(
    items: ItemStore,
    spaces: SpaceStore,
    model_id: str,
    settings: InterestSettings,
    *,
    owner: str | None = None,
) -> FitReport:
    """Fit a space for ``model_id`` on a sample of its vectors in Redis and publish it.

    Returns a report with ``space=None`` if another process holds the lock, the model has
    too few items to fit on, or the fitted space was refused (``refused`` says why; the
    refusal is noted in Redis so that no process fits again before the catalogue grows).
    Workers that serve the model rebuild their index in a published space.
    """
    start = time.monotonic()
    who = owner or lock_owner()
    catalogue = items.count(model_id)
    if catalogue < 2 or not spaces.lock(model_id, who):
        return FitReport(None, catalogue, time.monotonic() - start)
    try:
        _, sample = items.sample(model_id, settings.space_fit_sample)
        if len(sample) < 2:
            return FitReport(None, catalogue, time.monotonic() - start)
        try:
            space = fit_space(model_id, sample, catalogue, fit_params(settings))
        except SpaceRefused as refused:
            spaces.refuse(model_id, catalogue)
            log.warning("%s", refused)
            return FitReport(None, catalogue, time.monotonic() - start, refused)
        spaces.publish(space)
        log.warning(
            "fitted space %s on %d of %d items in %.1fs (%s)",
            space.id,
            len(sample),
            catalogue,
            time.monotonic() - start,
            space.meta,
        )
        return FitReport(space, catalogue, time.monotonic() - start)
    finally:
        spaces.unlock(model_id, who)


def prepare_space(
    client: redis.Redis[Any], keys: RedisKeys, model_id: str, settings: InterestSettings
) -> FitReport | None:
    """Fit ``model_id``'s space before it becomes the active model, if its catalogue calls for one.

    Every worker then builds the compact index at once instead of a full-dimension one.
    """
    items, spaces = ItemStore(client, keys), SpaceStore(client, keys)
    if spaces.version(model_id) is not None:
        return None
    if not refit_due(None, items.count(model_id), settings, spaces.refused_at(model_id)):
        return None
    return fit_and_publish(items, spaces, model_id, settings)


def refit_due(
    space: Space | None,
    catalogue: int,
    settings: InterestSettings,
    refused_at: int | None = None,
) -> bool:
    """Whether a catalogue of ``catalogue`` items calls for a (new) space.

    It does when it is large enough and has none yet, or has grown by ``space_refit_growth``
    since the last fit, or since a fit was refused at ``refused_at`` items.
    """
    if settings.space_min_items is None or catalogue < settings.space_min_items:
        return False
    growth = settings.space_refit_growth
    if space is None or space.is_raw:
        return refused_at is None or catalogue >= growth * max(refused_at, 1)
    return catalogue >= growth * max(space.fitted_on, 1)


def build_index(items: ItemStore, space: Space) -> ItemIndex:
    """An index of every item of ``space.model_id`` in Redis, in ``space``."""
    index = ItemIndex(space)
    index.reserve(items.count(space.model_id))
    for ids, vectors, available, arrived in items.scan_vectors(space.model_id):
        index.upsert_many(ids, vectors, available, arrived)
    return index


def current_space(
    items: ItemStore, spaces: SpaceStore, model_id: str, version: str | None
) -> Space | None:
    """The space ``model_id`` is searched in: the published one, else raw.

    None if the model has no vector yet to take the dimension from.
    """
    if version is not None:
        return spaces.load(model_id, version)
    ids, sample = items.sample(model_id, 1)
    return raw_space(model_id, sample.shape[1]) if ids else None
