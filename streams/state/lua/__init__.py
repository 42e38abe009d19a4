"""The Lua scripts of the state stores, and running one in a pipeline (plain or cluster)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import Script


@cache
def lua(name: str) -> str:
    """The text of ``<name>.lua`` in this folder."""
    return (resources.files(__package__) / f"{name}.lua").read_text(encoding="utf-8")


def run_script(pipe: Any, script: Script, keys: list[str], args: list[Any], cluster: bool) -> None:
    """Queue ``script`` on ``pipe`` (EVALSHA, with a reload if Redis forgot it)."""
    if cluster:
        # redis-py's ClusterPipeline refuses EVALSHA and has no eval(); a raw EVAL is routed
        # by its keys' slot, and Redis caches the compiled script, so only its text travels.
        pipe.execute_command(
            "EVAL",
            script.script,  # type: ignore[attr-defined]  # set by redis-py, not in stubs
            len(keys),
            *keys,
            *args,
        )
    else:
        script(keys=keys, args=args, client=pipe)
