"""Every exception ``streams`` raises on purpose, in one place.

    StreamsError
     ├── UserStateError      some events of a batch failed in Redis (the others applied)
     ├── DrainConflict       signal outboxes kept changing under a drain (a rival worker)
     ├── FetchError          an image URI could not be fetched (carries a dead-letter code)
     ├── DlqError            the dead-letter topic or the replay position is unusable
     │    └── InvalidItems   replaying would dead-letter some items again (nothing sent)
     ├── ServiceError        a local Kafka/Redis could not be installed, started or stopped
     ├── DatasetError        an evaluation dataset is missing or malformed
     └── ReplayError         a replay could not run to the end

Each also derives from the builtin its callers have always caught (``RuntimeError``,
``ValueError``), so ``except`` clauses written against those keep working.
"""

from __future__ import annotations

from schemas import ErrorCode


class StreamsError(Exception):
    """Base of the exceptions above."""


class UserStateError(StreamsError, RuntimeError):
    """Some events of a batch failed in Redis; the others were applied (see ``applied``)."""

    def __init__(self, failures: list[tuple[int, int, str]], applied: list[bool]) -> None:
        """``failures`` are (partition, offset, error) of the events that failed."""
        first = failures[0]
        super().__init__(
            f"{len(failures)} event(s) failed, first at partition {first[0]} "
            f"offset {first[1]}: {first[2]}"
        )
        self.failures = failures
        self.applied = applied


class DrainConflict(StreamsError, RuntimeError):
    """Users' signal outboxes kept changing under the drain: retry later.

    Another worker drains them too (a rebalance in flight). The failed attempts wrote nothing.
    """


class FetchError(StreamsError):
    """An image URI that could not be fetched; ``code`` is its dead-letter ``ErrorCode``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        """``code`` goes on the dead letter, ``message`` into its text."""
        super().__init__(message)
        self.code: str = code
        self.message = message

    def __repr__(self) -> str:
        """Code and message, as a dead letter shows them."""
        return f"FetchError({self.code!s}, {self.message!r})"


class DlqError(StreamsError):
    """The dead-letter topic or the replay position cannot be read or written."""


class InvalidItems(DlqError, ValueError):
    """Some items would be dead-lettered again; nothing was sent."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        """Keep the (label, reason) of every invalid item."""
        super().__init__(f"{len(problems)} item(s) would be dead-lettered again")
        self.problems = problems


class ServiceError(StreamsError, RuntimeError):
    """A local service could not be installed, started or stopped."""


class DatasetError(StreamsError, RuntimeError):
    """The dataset files are missing or malformed."""


class ReplayError(StreamsError, RuntimeError):
    """The replay could not run to the end (worker died, lists stopped coming)."""


class HalfLifeMismatch(StreamsError, RuntimeError):
    """Redis holds signals written with other half-lives than this process is configured with.

    A score written under one half-life means nothing under another: stop every interest
    worker and run ``visrec signals rescale``, or configure the recorded half-lives again.
    """
