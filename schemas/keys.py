"""Redis key layout: the one place keys are formatted.

User keys share a hash tag ``{u:<user_id>}`` so one user's state lives in one Redis Cluster
slot and can be updated in one atomic script.
"""

from __future__ import annotations

from dataclasses import dataclass

KEY_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Builds every Redis key visrec reads or writes, under ``<namespace>:<version>``."""

    namespace: str = "visrec"

    @property
    def root(self) -> str:
        """Prefix of every key."""
        return f"{self.namespace}:{KEY_VERSION}"

    def _user(self, user_id: str, suffix: str) -> str:
        return f"{self.root}:{{u:{user_id}}}:{suffix}"

    def user_state(self, user_id: str) -> str:
        """Hash: per item ``i:<item_id>`` its long/short log weights; ``n``, ``last_ts``.

        Weights (17 bytes: a tag and two doubles), not vectors: the vectors come from the
        item index when a list is built.
        """
        return self._user(user_id, "vec")

    def user_seen(self, user_id: str) -> str:
        """Sorted set item_id -> last ts_ms, trimmed to the most recent N."""
        return self._user(user_id, "seen")

    def user_applied(self, user_id: str) -> str:
        """Sorted set event_id -> apply order ``n`` (the idempotency record, newest kept)."""
        return self._user(user_id, "applied")

    def user_outbox(self, user_id: str) -> str:
        """List: applied events' signal increments not yet added to popularity/co-occurrence.

        Entries ``n<TAB>increment<TAB>item_id<TAB>co-occurring items...`` are pushed by the
        apply script and drained by the signal write of the same batch: empty between batches.
        """
        return self._user(user_id, "outbox")

    def user_recs(self, user_id: str) -> str:
        """String: the latest Recommendations, zlib-compressed JSON (pull reads)."""
        return self._user(user_id, "recs")

    def cold_recs(self) -> str:
        """String: the list for users with none of their own, stored as ``user_recs``."""
        return f"{self.root}:recs:cold"

    def list_ages(self, partition: int) -> str:
        """Sorted set user_id -> event time (ms) their cached list was ranked at, per partition.

        Of the events topic: the idle users whose lists are ranked again (``stale_after_s``).
        """
        return f"{self.root}:recs:ages:{partition}"

    def item(self, item_id: str) -> str:
        """Hash: ``vec:<model_id>`` per model, dtype, dim, model_id, attributes, availability.

        Also ``category`` and ``ts_ms``; ``attributes`` is the ``ProductAttributes`` JSON.
        """
        return f"{self.root}:item:{item_id}"

    def item_pattern(self) -> str:
        """SCAN pattern over item hashes."""
        return f"{self.root}:item:*"

    def items_by_model(self, model_id: str) -> str:
        """Set of item ids embedded with ``model_id`` (index builds, space fits, re-embeds)."""
        return f"{self.root}:model:{model_id}:items"

    def space_version(self, model_id: str) -> str:
        """String: version of the retrieval space ``model_id`` is searched in now."""
        return f"{self.root}:model:{model_id}:space"

    def space(self, model_id: str, version: str) -> str:
        """String: one retrieval space of ``model_id`` (``models.index.Space.to_bytes``)."""
        return f"{self.root}:model:{model_id}:space:{version}"

    def space_refused(self, model_id: str) -> str:
        """String: catalogue size at which a space for ``model_id`` was last refused.

        Refused for too little recall; no fit is tried again until the catalogue has grown by
        the refit factor.
        """
        return f"{self.root}:model:{model_id}:space-refused"

    def space_lock(self, model_id: str) -> str:
        """String with a TTL: held by the one process fitting a space for ``model_id``."""
        return f"{self.root}:model:{model_id}:space-lock"

    def active_model(self) -> str:
        """String: the model_id serving now; switched atomically after a re-embed."""
        return f"{self.root}:model:active"

    def popularity(self) -> str:
        """Sorted set item_id -> decayed interaction score (popularity prior)."""
        return f"{self.root}:popular"

    def signal_half_lives(self) -> str:
        """Hash ``popularity`` / ``co`` -> the half-lives (s) the stored signals decay with.

        Written by the first interest worker, checked by every later one, changed only by
        ``visrec signals rescale`` (``streams.ops.rescale``).
        """
        return f"{self.root}:signals:half-lives"

    def cooccurrence_pattern(self) -> str:
        """SCAN pattern over the co-occurrence sets."""
        return f"{self.root}:co:*"

    def outbox_pattern(self) -> str:
        """SCAN pattern over the users' signal outboxes."""
        return f"{self.root}:{{u:*}}:outbox"

    def cooccurrence(self, item_id: str) -> str:
        """Sorted set of items co-clicked with ``item_id`` -> decayed count."""
        return f"{self.root}:co:{{i:{item_id}}}"

    def deadletter_counts(self) -> str:
        """Hash error_code -> count of dead letters emitted."""
        return f"{self.root}:dlq:counts"
