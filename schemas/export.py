"""Write ``schemas/jsonschema/<Contract>.json`` for producers in other languages.

Run ``python -m schemas.export``; a unit test fails when the committed files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas import CONTRACTS

OUT = Path(__file__).with_name("jsonschema")


def render() -> dict[str, str]:
    """File name -> JSON Schema text for every contract."""
    files = {}
    for name, model in CONTRACTS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://visrec.dev/schemas/v1/{name}.json"
        files[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def main() -> int:
    """Write the files; print what changed."""
    OUT.mkdir(exist_ok=True)
    for filename, text in render().items():
        path = OUT / filename
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
