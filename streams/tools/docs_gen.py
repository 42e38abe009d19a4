"""Generate ``docs/configuration.md`` from the settings class: every ``VISREC_*`` variable.

Run ``python -m streams.tools.docs_gen`` to rewrite the page, ``--check`` to fail when it is stale
(a unit test does the same), so the page cannot drift from ``streams/settings.py``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streams.settings import Settings

OUT = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
PREFIX = "VISREC_"
DELIMITER = "__"


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable the settings class reads."""

    name: str
    type: str
    default: str
    description: str
    secret: bool


def type_text(annotation: Any) -> str:
    """Describe a field's type the way an operator writes the variable."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in inner)
        return f"{text} (optional)" if len(inner) < len(args) else text
    if origin is dict:
        key, value = args
        return f"JSON object {type_text(key)} → {type_text(value)}"
    if origin is list:
        return f"JSON list of {type_text(args[0])}"
    if inspect.isclass(annotation) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if annotation is SecretStr:
        return "secret string"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """Write the default as it would be set in the environment (JSON for lists and maps)."""
    # Our default factories take no arguments (pydantic also allows one taking the data).
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dict | list):
        return json.dumps(
            {str(k.value if isinstance(k, Enum) else k): v for k, v in value.items()}
            if isinstance(value, dict)
            else [str(v) for v in value]
        )
    return str(value)


def constraint_text(field: FieldInfo) -> str:
    """Bounds declared on the field (``>= 1``, ``<= 1000``), comma-separated."""
    parts = []
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            parts.append(f"≥ {meta.ge}")
        elif isinstance(meta, annotated_types.Gt):
            parts.append(f"> {meta.gt}")
        elif isinstance(meta, annotated_types.Le):
            parts.append(f"≤ {meta.le}")
        elif isinstance(meta, annotated_types.Lt):
            parts.append(f"< {meta.lt}")
    return ", ".join(parts)


def _is_group(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def _var(name: str, field: FieldInfo) -> EnvVar:
    kind = type_text(field.annotation)
    bounds = constraint_text(field)
    secret = "SecretStr" in str(field.annotation)
    return EnvVar(
        name=name,
        type=f"{kind}, {bounds}" if bounds else kind,
        default=default_text(field),
        description=(field.description or "").strip(),
        secret=secret,
    )


def env_vars(
    model: type[BaseModel] = Settings, prefix: str = PREFIX
) -> Iterator[tuple[str, type[BaseModel], list[EnvVar]]]:
    """(group name, group class, its variables); top-level scalars first, as group ``""``."""
    top = [
        _var(f"{prefix}{name.upper()}", field)
        for name, field in model.model_fields.items()
        if not _is_group(field.annotation)
    ]
    yield "", model, top
    for name, field in model.model_fields.items():
        group = field.annotation
        if inspect.isclass(group) and issubclass(group, BaseModel):
            head = f"{prefix}{name.upper()}{DELIMITER}"
            yield (
                name,
                group,
                [_var(f"{head}{sub.upper()}", f) for sub, f in group.model_fields.items()],
            )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """Render the whole ``docs/configuration.md`` text."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from streams/settings.py by `python -m streams.tools.docs_gen`; "
        "do not edit. -->",
        "",
        "Every visrec process reads one settings class, `streams.settings.Settings`, once at",
        f"start-up from environment variables prefixed `{PREFIX}`. Nested groups join their",
        f"names with `{DELIMITER}`: `VISREC_KAFKA__BOOTSTRAP_SERVERS`, `VISREC_INTEREST__TOP_K`.",
        "Lists and maps are JSON (`VISREC_EMBED__FILE_ROOTS='[\"/srv/images\"]'`). Unknown",
        "`VISREC_*` variables are ignored, and the settings are frozen once read. Secret values",
        "(marked 🔒) are never printed or logged; put them in a Kubernetes Secret or a",
        "compose `env_file`, not in images.",
        "",
    ]
    for group, model, variables in env_vars():
        title = "General" if not group else f"`{group}`"
        doc = inspect.getdoc(model) if group else "Process-wide settings."
        lines += [f"## {title}", "", (doc or "").splitlines()[0], ""]
        lines += ["| variable | type | default | meaning |", "|---|---|---|---|"]
        for var in variables:
            name = f"`{var.name}`" + (" 🔒" if var.secret else "")
            lines.append(
                f"| {name} | {_cell(var.type)} | `{_cell(var.default)}` | "
                f"{_cell(var.description) or '—'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with ``--check`` exit 1 if the committed page differs."""
    parser = argparse.ArgumentParser(prog="python -m streams.tools.docs_gen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render()
    current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
    if args.check:
        if current != text:
            print(f"{args.out} is stale: run python -m streams.tools.docs_gen", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
