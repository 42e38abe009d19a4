from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from schemas import CONTRACTS
from schemas.export import OUT as SCHEMA_DIR
from schemas.keys import RedisKeys
from streams.settings import Settings
from streams.tools import docs_gen
from streams.tools.processes import settings_env

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_configuration_page_is_current() -> None:
    assert docs_gen.OUT == DOCS / "configuration.md"
    assert docs_gen.OUT.read_text(encoding="utf-8") == docs_gen.render(), (
        "docs/configuration.md is stale: run python -m streams.tools.docs_gen"
    )


def test_check_mode_fails_on_a_stale_page(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    assert docs_gen.main(["--check", "--out", str(page)]) == 1
    assert docs_gen.main(["--out", str(page)]) == 0
    assert docs_gen.main(["--check", "--out", str(page)]) == 0
    page.write_text(page.read_text() + "edited\n")
    assert docs_gen.main(["--check", "--out", str(page)]) == 1


def _documented() -> dict[str, docs_gen.EnvVar]:
    return {v.name: v for _, _, group in docs_gen.env_vars() for v in group}


def test_every_settings_field_is_documented_under_the_name_workers_are_given() -> None:
    documented = set(_documented())
    # settings_env is how tests hand settings to worker processes: a second derivation of
    # the names, so a renamed field or a changed delimiter shows up here.
    full = Settings(
        kafka={"sasl_username": "u", "sasl_password": "p", "sasl_mechanism": "PLAIN"},  # type: ignore[arg-type]
    )
    given = set(settings_env(full))
    assert given <= documented
    assert len(documented) == len(set(documented))
    leaf_fields = sum(
        len(f.annotation.model_fields)  # type: ignore[union-attr]
        if hasattr(f.annotation, "model_fields")
        else 1
        for f in Settings.model_fields.values()
    )
    assert len(documented) == leaf_fields
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for name in documented:
        assert f"`{name}`" in page


def test_documented_defaults_read_back_as_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    for var in _documented().values():
        if var.default != "unset":
            monkeypatch.setenv(var.name, var.default)
    assert Settings() == defaults


def test_documented_json_forms_are_what_the_settings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISREC_EMBED__FILE_ROOTS", '["/srv/images"]')
    monkeypatch.setenv("VISREC_INTEREST__EVENT_WEIGHTS", '{"view": 0.5, "purchase": 4}')
    monkeypatch.setenv("VISREC_INTEREST__TOP_K", "7")
    s = Settings()
    assert [str(p) for p in s.embed.file_roots] == ["/srv/images"]
    weights = {str(k): v for k, v in s.interest.event_weights.items()}
    assert weights == {"view": 0.5, "click": 1.0, "add_to_cart": 2.0, "purchase": 4}
    assert s.interest.top_k == 7


def test_secrets_are_marked() -> None:
    secret = {name for name, var in _documented().items() if var.secret}
    assert secret == {"VISREC_KAFKA__SASL_PASSWORD", "VISREC_REDIS__PASSWORD"}


def _event_examples() -> dict[str, list[str]]:
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    sections = re.split(r"^## `(\w+)`\s*$", text, flags=re.MULTILINE)
    found: dict[str, list[str]] = {}
    for name, body in zip(sections[1::2], sections[2::2], strict=True):
        found[name] = re.findall(r"```json\n(.*?)```", body, flags=re.DOTALL)
    return found


def test_events_page_has_one_example_per_contract() -> None:
    examples = _event_examples()
    assert sorted(examples) == sorted(CONTRACTS)
    assert all(len(blocks) == 1 for blocks in examples.values()), examples


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_event_example_validates_against_its_json_schema(name: str) -> None:
    (block,) = _event_examples()[name]
    document = json.loads(block)
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(document)
    record = CONTRACTS[name].from_json_bytes(block)
    dumped = record.model_dump(mode="json")
    assert {k: v for k, v in dumped.items() if v is not None or k in document} == document


def _defined_metrics() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("streams/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        names.update(re.findall(r"""["'](visrec_[a-z0-9_]+)["']""", path.read_text()))
    return names


def test_operations_page_names_only_metrics_the_code_defines() -> None:
    page = (DOCS / "operations.md").read_text(encoding="utf-8")
    # Histograms and counters expose suffixed series: strip the suffix to find the family.
    mentioned = {
        re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bvisrec_[a-z0-9_]+", page)
    }
    assert mentioned, "operations.md should list the metrics"
    assert mentioned <= _defined_metrics(), mentioned - _defined_metrics()


def test_pages_name_real_key_builders() -> None:
    keys = RedisKeys()
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    for key in (keys.user_state("<user_id>"), keys.item("<item_id>"), keys.popularity()):
        assert key in page
