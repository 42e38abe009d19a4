"""Every exception ``models`` raises on purpose, in one place.

    ModelError
     ├── ImageError          an image cannot be used (carries its dead-letter code)
     ├── EncoderError        the encoder cannot be loaded or run
     ├── ExportError         an encoder cannot be exported
     ├── ModelCardError      a model card is missing, unreadable or inconsistent
     ├── SpaceError          a retrieval space blob is unreadable, or cannot be fitted
     │    └── SpaceRefused   a fitted space would lose too much recall to be served
     └── IndexInputError     vectors or queries the item index cannot take

Each also derives from the builtin its callers have always caught (``RuntimeError``,
``ValueError``), so ``except`` clauses written against those keep working.
"""

from __future__ import annotations

from schemas import ErrorCode


class ModelError(Exception):
    """Base of the exceptions above."""


class ImageError(ModelError):
    """An image that cannot be used; ``code`` is its dead-letter ``ErrorCode`` value."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        """``code`` goes on the dead letter, ``message`` into its text."""
        super().__init__(message)
        self.code: str = code
        self.message = message

    def __repr__(self) -> str:
        """Code and message, as a dead letter shows them."""
        return f"ImageError({self.code!s}, {self.message!r})"


class EncoderError(ModelError, RuntimeError):
    """The encoder cannot be loaded or run (no model, no CUDA when asked for, ...)."""


class ExportError(ModelError, RuntimeError):
    """An encoder could not be exported (unknown name, weights package missing, ...)."""


class ModelCardError(ModelError, ValueError):
    """A model card is missing, unreadable or inconsistent."""


class SpaceError(ModelError, ValueError):
    """A space blob that cannot be read, or parameters that cannot make a space."""


class SpaceRefused(SpaceError):
    """A fitted space whose search misses too many of the exact full-dimension neighbours."""

    def __init__(self, model_id: str, recall: float, floor: float) -> None:
        """``recall``: the space's measured recall@k; ``floor``: what was asked for."""
        super().__init__(
            f"a space for {model_id} keeps recall {recall:.3f} of exact full-dimension search, "
            f"below {floor:.3f}: too little structure to compress, it stays at full dimension"
        )
        self.recall = recall
        self.floor = floor


class IndexInputError(ModelError, ValueError):
    """Vectors or queries the index cannot take (wrong shape, not finite, zero norm)."""
