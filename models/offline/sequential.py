"""A sequential baseline: GRU4Rec-style next-item prediction, trained with torch on train.

Each user's training events, in time order, are a sequence of items; a GRU reads it and a
softmax over the whole catalogue (item embeddings tied to the input ones) predicts the next
item, trained with cross-entropy on windows of ``max_len`` steps. Evaluated prequentially like
every baseline: ``observe`` advances the user's hidden state by one item (the model's weights
stay as trained), ``recommend`` ranks the catalogue by the logits of that state. A user with no
state yet (no event so far) gets the training popularity list. Event weights are not used:
the order of items is the model's input.

torch is imported on first use (the ``export`` extra), so the other baselines need none of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.offline.baselines import Catalogue
from models.offline.cf import Interactions


@dataclass(frozen=True)
class SeqParams:
    """Model size and training schedule (defaults: what validation chose, ``tune_replay``)."""

    dim: int = 64
    epochs: int = 20
    max_len: int = 50
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0


class GRU4Rec:
    """Next-item GRU over each user's item sequence (see the module docstring)."""

    def __init__(
        self,
        train: Interactions,
        history: Sequence[tuple[str, str, float, int]],
        params: SeqParams | None = None,
        name: str | None = None,
    ) -> None:
        """Train on ``history`` (user, item, weight, ts_ms: the training events)."""
        import torch

        self.params = params or SeqParams()
        self.name = name or "GRU4Rec (sequential, trained on train)"
        self._cat = Catalogue(train)
        self._torch = torch
        torch.manual_seed(self.params.seed)
        sequences = self._sequences(history)
        self._model = _net(len(self._cat.item_ids), self.params.dim)
        self._train(sequences)
        self._model.eval()
        self._state: dict[str, Any] = {}
        with torch.no_grad():
            for user_id, rows in sequences.items():
                self._advance(user_id, rows)

    def _sequences(self, history: Sequence[tuple[str, str, float, int]]) -> dict[str, list[int]]:
        """Each user's catalogue rows + 1 (0 pads), in time order (ties keep log order)."""
        by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for user_id, item_id, _, ts_ms in history:
            row = self._cat.index.get(item_id)
            if row is not None:
                by_user[user_id].append((ts_ms, row + 1))
        return {u: [r for _, r in sorted(ev, key=lambda e: e[0])] for u, ev in by_user.items()}

    def _windows(self, sequences: dict[str, list[int]]) -> np.ndarray:
        """(n, max_len + 1) training windows, left-aligned, zero padded."""
        width = self.params.max_len + 1
        out = []
        for rows in sequences.values():
            for lo in range(0, max(len(rows) - 1, 0), self.params.max_len):
                chunk = rows[lo : lo + width]
                if len(chunk) >= 2:
                    out.append(chunk + [0] * (width - len(chunk)))
        return np.array(out, dtype=np.int64).reshape(-1, width)

    def _train(self, sequences: dict[str, list[int]]) -> None:
        torch = self._torch
        windows = torch.from_numpy(self._windows(sequences))
        if not len(windows):
            return
        opt = torch.optim.Adam(self._model.parameters(), lr=self.params.lr)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)
        gen = torch.Generator().manual_seed(self.params.seed)
        self._model.train()
        for _ in range(self.params.epochs):
            for idx in torch.randperm(len(windows), generator=gen).split(self.params.batch):
                batch = windows[idx]
                logits, _ = self._model(batch[:, :-1])
                target = batch[:, 1:] - 1  # rows; padding (0) becomes -1, ignored
                loss = loss_fn(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()

    def _advance(self, user_id: str, rows: list[int]) -> None:
        if not rows:
            return
        x = self._torch.tensor([rows], dtype=self._torch.int64)
        _, h = self._model(x, self._state.get(user_id))
        self._state[user_id] = h

    def recommend(self, user_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """The catalogue by the logits of the user's state, else the training popularity."""
        h = self._state.get(user_id)
        if h is None:
            return self._cat.top(self._cat.train_counts, k, exclude)
        with self._torch.no_grad():
            scores = self._model.logits(h[-1, 0]).numpy().astype(np.float64)
        return self._cat.top(scores, k, exclude)

    def observe(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        """Advance the user's state by the item (items outside the catalogue are skipped)."""
        row = self._cat.index.get(item_id)
        if row is not None:
            with self._torch.no_grad():
                self._advance(user_id, [row + 1])


def _net(n_items: int, dim: int) -> Any:
    """The GRU with tied input/output item embeddings (row 0 pads)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(n_items + 1, dim, padding_idx=0)
            self.gru = torch.nn.GRU(dim, dim, batch_first=True)
            self.bias = torch.nn.Parameter(torch.zeros(n_items))

        def logits(self, h: Any) -> Any:
            return h @ self.emb.weight[1:].T + self.bias

        def forward(self, x: Any, h: Any = None) -> tuple[Any, Any]:
            out, h = self.gru(self.emb(x), h)
            return self.logits(out), h

    return Net()
