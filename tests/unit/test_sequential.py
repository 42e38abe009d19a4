"""The GRU4Rec baseline learns an item order and follows a user's sequence live."""

from __future__ import annotations

from models.offline.cf import Interactions
from models.offline.sequential import GRU4Rec, SeqParams

T_MS = 1_764_000_000_000
CYCLE = ["a", "b", "c", "d", "e", "f"]


def _history(users: int) -> list[tuple[str, str, float, int]]:
    """Every user walks the cycle a -> b -> ... -> f -> a from their own starting point."""
    out = []
    for u in range(users):
        for step in range(12):
            item = CYCLE[(u + step) % len(CYCLE)]
            out.append((f"u{u}", item, 1.0, T_MS + step * 60_000))
    return out


def test_gru_learns_the_next_item_and_follows_live_events() -> None:
    history = _history(12)
    train = Interactions.from_triples([(u, i, w) for u, i, w, _ in history] + [("p", "z", 100.0)])
    # Shuffled in time within the log: the model orders each user's events by time.
    model = GRU4Rec(train, history[::-1], SeqParams(dim=16, epochs=40, batch=4, lr=1e-2))
    # u0's last training item is f (step 11: (0 + 11) % 6 = 5), so a comes next.
    assert model.recommend("u0", 1, exclude=()) == ["a"]
    model.observe("u0", "a", 1.0, T_MS + 3_600_000)
    assert model.recommend("u0", 1, exclude=()) == ["b"]
    assert model.recommend("u0", 2, exclude={"b"})[0] != "b"
    # A user with no events: the training popularity list.
    assert model.recommend("nobody", 1, exclude=()) == ["z"]
    model.observe("nobody", "c", 1.0, T_MS)
    assert model.recommend("nobody", 1, exclude=()) == ["d"]
    model.observe("nobody", "not-in-catalogue", 1.0, T_MS)  # skipped
    assert model.recommend("nobody", 1, exclude=()) == ["d"]
