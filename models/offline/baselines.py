"""Baseline recommenders the streaming system is measured against, on the same events.

Each is built from the training interactions and then, event by event, asked for a list
(``recommend``) before being told what the user did (``observe``): the prequential protocol.

- ``MostPopular``: weighted interaction counts, updated by every observed event (streaming),
  never forgotten.
- ``DecayedPopular``: the same counts with exponential decay by event time, the rule visrec's
  own popularity signal follows (``interest.half_life_popularity_s``): the fair
  most-popular, with the same information and the same decay as the system.
- ``RandomItems``: uniformly random unseen items (the floor any method must clear).
- ``ItemKNN``: cosine similarity between items' columns of the training matrix, fixed after
  training; a user's score for an item sums its similarity to the user's items. With
  ``live_profile`` the profile grows with observed events (similarities stay offline);
  without, it is the user's training history only, and users with none get the training
  popularity list.
- ``OfflineMF``: a ``CFModel``'s scores, frozen at training time; users the fit never saw get
  the training popularity list.
- ``RuleProfile``: visrec's own interest rule (``models.interest``: long- and short-term decayed
  sums of the user's item vectors, blended) over given item vectors, from the user's training
  history on, live. With the served CF vectors it is the system without co-occurrence,
  popularity or anything else: MF with a live fold-in profile.

``ItemKNN`` and ``RuleProfile`` take an ``InterestParams`` to weigh the user's items as visrec
does (the same decay), ``history`` to start from each user's training events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.interest import InterestParams
from models.offline.cf import CFModel, Interactions, top_k_ids

F64 = npt.NDArray[np.float64]


class BaselineRecommender(Protocol):
    """What the evaluation harness calls, in prequential order."""

    name: str

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Return the user's top ``k`` items, none of them in ``exclude``."""
        ...

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Learn from one event (a no-op for offline models)."""
        ...


class Catalogue:
    """Item ids, their rows, and training popularity: what every baseline shares."""

    def __init__(self, train: Interactions) -> None:
        self.item_ids = train.item_ids
        self.index = {item: n for n, item in enumerate(train.item_ids)}
        counts = np.zeros(len(train.item_ids))
        np.add.at(counts, train.items, train.weights)
        self.train_counts = counts

    def top(self, scores: F64, k: int, exclude: Collection[str]) -> list[str]:
        return top_k_ids(scores, self.item_ids, self.index, k, exclude)


class MostPopular:
    """Most interacted-with items so far, by summed event weight."""

    def __init__(self, train: Interactions, name: str = "most-popular (streaming)") -> None:
        """Start from the training counts."""
        self.name = name
        self._cat = Catalogue(train)
        self._counts = self._cat.train_counts.copy()

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Return the ``k`` most popular items the user has not touched."""
        return self._cat.top(self._counts, k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Count the event (items outside the training catalogue are ignored)."""
        row = self._cat.index.get(item_id)
        if row is not None:
            self._counts[row] += weight


class DecayedPopular:
    """Popularity as visrec keeps it: each event adds ``w * 2 ** ((t - t0) / h)``.

    Ranking by that sum at any time is ranking by the decayed count ``sum w * 2 ** ((t - now)
    / h)`` (a common factor), so no rescaling is needed as time passes, and the order of the
    events does not matter.
    """

    def __init__(
        self,
        train: Interactions,
        train_events: Collection[tuple[str, float, int]],
        half_life_s: float,
        name: str | None = None,
    ) -> None:
        """Start from ``train_events`` (item_id, weight, ts_ms), decayed with ``half_life_s``."""
        self.name = name or f"most-popular, decayed ({half_life_s / 86400:g}-day half-life)"
        self._cat = Catalogue(train)
        self._h_ms = half_life_s * 1000.0
        self._t0 = min((ts for _, _, ts in train_events), default=0)
        self._last_ts = self._t0
        self._scores = np.zeros(len(train.item_ids))
        # Every event's (row, increment, ts_ms), in arrays grown by doubling: asking as of a
        # time then costs one pass over them, not a conversion of the whole log.
        self._log = np.zeros((max(16, len(train_events)), 3))
        self._n = 0
        for item_id, weight, ts_ms in train_events:
            self.observe("", item_id, weight, ts_ms)

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Return the ``k`` items with the highest decayed count the user has not touched."""
        return self._cat.top(self._scores, k, exclude)

    def recommend_as_of(
        self, user_id: str, k: int, exclude: Collection[str], ts_ms: int
    ) -> list[str]:
        """``recommend`` from the events at or before ``ts_ms`` only."""
        log = self._log[: self._n]
        upto = log[:, 2] <= ts_ms
        rows = log[upto, 0].astype(np.int64)
        scores = np.bincount(rows, log[upto, 1], minlength=len(self._scores))
        return self._cat.top(scores.astype(np.float64), k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Count the event at its time (without one: the latest time seen)."""
        ts = self._last_ts if ts_ms is None else ts_ms
        self._last_ts = max(self._last_ts, ts)
        row = self._cat.index.get(item_id)
        if row is not None:
            increment = weight * 2.0 ** ((ts - self._t0) / self._h_ms)
            self._scores[row] += increment
            if self._n == len(self._log):
                self._log = np.concatenate([self._log, np.zeros_like(self._log)])
            self._log[self._n] = (row, increment, ts)
            self._n += 1


class RandomItems:
    """Uniformly random items the user has not touched."""

    def __init__(self, train: Interactions, seed: int = 0, name: str = "random") -> None:
        """Seeded for reproducible runs."""
        self.name = name
        self._cat = Catalogue(train)
        self._rng = np.random.default_rng(seed)

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """``k`` distinct random items not in ``exclude``."""
        return self._cat.top(self._rng.random(len(self._cat.item_ids)), k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Random has nothing to learn."""


def cosine_similarity(train: Interactions) -> F64:
    """Item x item cosine similarity of the training matrix's columns, zero diagonal."""
    n_users, n_items = train.shape
    matrix = np.zeros((n_users, n_items))
    np.add.at(matrix, (train.users, train.items), train.weights)
    norms = np.linalg.norm(matrix, axis=0)
    norms[norms == 0] = 1.0
    unit = matrix / norms
    sim: F64 = unit.T @ unit
    np.fill_diagonal(sim, 0.0)
    return sim


class UserHistories:
    """Each user's events (item row, weight, time), weighed by visrec's interest rule.

    ``weights(user)`` gives, per distinct item, the long- and short-term decayed sums
    ``sum w * 2 ** ((t - t_last) / h)`` at the user's latest event: the time a list answering
    that event is computed at, so the short-term blend is ``short_term_weight`` itself.
    """

    def __init__(self, params: InterestParams) -> None:
        self.params = params
        self._events: dict[str, list[tuple[int, float, int]]] = defaultdict(list)

    def add(self, user_id: str, row: int, weight: float, ts_ms: int) -> None:
        self._events[user_id].append((row, weight, ts_ms))

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._events

    def weights(self, user_id: str) -> tuple[npt.NDArray[np.int64], F64, F64]:
        """(rows, long sums, short sums) of the user's distinct items (empty if none)."""
        events = self._events.get(user_id, [])
        rows = np.array([r for r, _, _ in events], dtype=np.int64)
        w = np.array([x for _, x, _ in events], dtype=np.float64)
        age_ms = np.array([t for _, _, t in events], dtype=np.float64)
        age_ms = age_ms.max(initial=0.0) - age_ms
        distinct, at = np.unique(rows, return_inverse=True)
        sums = []
        for h_s in (self.params.half_life_long_s, self.params.half_life_short_s):
            decayed = w * np.exp2(-age_ms / (h_s * 1000.0))
            sums.append(np.bincount(at, decayed, len(distinct)).astype(np.float64))
        return distinct, sums[0], sums[1]

    def shares(self, user_id: str) -> tuple[npt.NDArray[np.int64], F64]:
        """Each distinct item's share of the blended interest (sums to 1; visrec's weighting)."""
        rows, long, short = self.weights(user_id)
        b = self.params.short_term_weight
        if not len(rows):
            return rows, long
        return rows, (1.0 - b) * long / long.sum() + b * short / short.sum()


class ItemKNN:
    """Item-based nearest neighbours on training similarities."""

    def __init__(
        self,
        train: Interactions,
        *,
        live_profile: bool,
        name: str | None = None,
        decay: InterestParams | None = None,
        history: Collection[tuple[str, str, float, int]] = (),
    ) -> None:
        """Similarities from ``train``; profiles from training rows (and events if live).

        With ``decay``, a profile weighs the user's items by their share of visrec's blended
        interest (``UserHistories.shares``) instead of summing raw weights; ``history``
        (user, item, weight, ts_ms) gives the training events' times.
        """
        self.name = name or ("item-kNN (live profile)" if live_profile else "item-kNN (offline)")
        self._cat = Catalogue(train)
        self._sim = cosine_similarity(train)
        self._live = live_profile
        self._profiles: dict[str, F64] = {}
        self._history = UserHistories(decay) if decay is not None else None
        if self._history is not None:
            for user_id, item_id, weight, ts_ms in history:
                row = self._cat.index.get(item_id)
                if row is not None:
                    self._history.add(user_id, row, weight, ts_ms)
            return
        rows: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for u, i, w in zip(train.users, train.items, train.weights, strict=True):
            rows[int(u)].append((int(i), float(w)))
        for u, cells in rows.items():
            items = np.array([i for i, _ in cells])
            weights = np.array([w for _, w in cells])
            self._profiles[train.user_ids[u]] = weights @ self._sim[items]

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Items most similar to the user's, else (no profile) the training popularity list."""
        if self._history is not None:
            if user_id not in self._history:
                return self._cat.top(self._cat.train_counts, k, exclude)
            rows, shares = self._history.shares(user_id)
            return self._cat.top(shares @ self._sim[rows], k, exclude)
        scores = self._profiles.get(user_id)
        if scores is None:
            return self._cat.top(self._cat.train_counts, k, exclude)
        return self._cat.top(scores, k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Add the item to a live profile; offline profiles never change."""
        row = self._cat.index.get(item_id)
        if not self._live or row is None:
            return
        if self._history is not None:
            self._history.add(user_id, row, weight, ts_ms or 0)
            return
        profile = self._profiles.get(user_id)
        if profile is None:
            profile = self._profiles[user_id] = np.zeros(len(self._cat.item_ids))
        profile += weight * self._sim[row]


class OfflineMF:
    """A matrix factorisation frozen at training time."""

    def __init__(self, train: Interactions, model: CFModel, name: str | None = None) -> None:
        """Serve ``model`` (fitted on ``train``); unknown users get training popularity."""
        self.name = name or f"MF {model.params.algorithm.upper()} (offline)"
        self._cat = Catalogue(train)
        self._model = model
        # The model may order items differently from ``train``; score in the catalogue's order.
        self._rows = np.array(
            [model.item_index.get(item, -1) for item in self._cat.item_ids], dtype=np.int64
        )

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Top items by the user's factor scores, else the training popularity list."""
        scores = self._model.scores(user_id)
        if scores is None:
            return self._cat.top(self._cat.train_counts, k, exclude)
        aligned = np.where(self._rows >= 0, scores[self._rows], -np.inf)
        return self._cat.top(aligned, k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Offline: the factors never change after training."""


class VectorProfile:
    """Cosine between each item vector and the weighted sum of the user's unit item vectors.

    The streaming system's core without decay, co-occurrence or popularity: an offline mirror
    for comparing item vectors (CF factors, content, hybrids) cheaply. The profile is live;
    a user with no profile yet gets the training popularity list.
    """

    def __init__(
        self, train: Interactions, vectors: Mapping[str, npt.ArrayLike], name: str
    ) -> None:
        """Serve the catalogue of ``train``; items without a vector never rank above others."""
        self.name = name
        self._cat = Catalogue(train)
        dim = len(np.asarray(next(iter(vectors.values()))).reshape(-1)) if vectors else 1
        unit = np.zeros((len(self._cat.item_ids), dim))
        self._has = np.zeros(len(self._cat.item_ids), dtype=bool)
        for item, vec in vectors.items():
            row = self._cat.index.get(item)
            arr = np.asarray(vec, dtype=np.float64).reshape(-1)
            norm = float(np.linalg.norm(arr))
            if row is not None and norm > 0:
                unit[row] = arr / norm
                self._has[row] = True
        self._unit = unit
        self._profiles: dict[str, F64] = {}

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Items closest to the user's profile, else the training popularity list."""
        profile = self._profiles.get(user_id)
        if profile is None or not profile.any():
            return self._cat.top(self._cat.train_counts, k, exclude)
        scores = np.where(self._has, self._unit @ profile, -np.inf)
        return self._cat.top(scores, k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Add the item's unit vector, weighted, to the user's profile."""
        row = self._cat.index.get(item_id)
        if row is None:
            return
        profile = self._profiles.setdefault(user_id, np.zeros(self._unit.shape[1]))
        profile += weight * self._unit[row]


class RuleProfile(VectorProfile):
    """visrec's interest rule over ``vectors``: cosine to the blended, decayed user vector.

    ``normalize((1 - b) u_long + b u_short)`` with ``u_x`` the normalised decayed sums of the
    user's unit item vectors (``models.interest``), at the user's latest event. Starts from
    ``history`` (user, item, weight, ts_ms: the training events) and learns live; a user with
    no item vector yet gets the training popularity list.
    """

    def __init__(
        self,
        train: Interactions,
        vectors: Mapping[str, npt.ArrayLike],
        params: InterestParams,
        name: str,
        history: Collection[tuple[str, str, float, int]] = (),
    ) -> None:
        super().__init__(train, vectors, name)
        self._history = UserHistories(params)
        for user_id, item_id, weight, ts_ms in history:
            self.observe(user_id, item_id, weight, ts_ms)

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Items closest to the user's vector, else the training popularity list."""
        rows, long, short = self._history.weights(user_id)
        if not len(rows):
            return self._cat.top(self._cat.train_counts, k, exclude)
        vecs = self._unit[rows]
        b = self._history.params.short_term_weight
        user = _unit((1.0 - b) * _unit(long @ vecs) + b * _unit(short @ vecs))
        return self._cat.top(np.where(self._has, self._unit @ user, -np.inf), k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Add the event to the user's history (items without a vector count for nothing)."""
        row = self._cat.index.get(item_id)
        if row is not None and self._has[row]:
            self._history.add(user_id, row, weight, ts_ms or 0)


def _unit(v: F64) -> F64:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v
