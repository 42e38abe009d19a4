"""Which exported encoder a worker loads: an explicit folder, or the cached built-in model."""

from __future__ import annotations

from pathlib import Path

from streams.settings import Settings


def resolve_model_dir(settings: Settings) -> Path:
    """``embed.model_dir`` if set, else the built-in encoder exported into the model cache."""
    if settings.embed.model_dir is not None:
        return settings.embed.model_dir
    from models.vision.export import ensure_encoder

    return ensure_encoder(settings.embed.model, settings.model_cache_dir)
