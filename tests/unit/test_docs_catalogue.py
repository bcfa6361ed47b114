"""The entity tables in docs/WEBSOCKET_ENDPOINTS.md are generated from the catalogue.

If this fails, run ``scripts/gen-entity-table --write`` and commit the result.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GENERATOR: dict[str, Any] = runpy.run_path(str(ROOT / "scripts" / "gen-entity-table"))


def test_committed_entity_tables_match_the_catalogue() -> None:
    document = (ROOT / "docs" / "WEBSOCKET_ENDPOINTS.md").read_text(encoding="utf-8")
    committed = GENERATOR["committed_block"](document)
    assert committed, "the generated block's markers are missing from docs/WEBSOCKET_ENDPOINTS.md"
    assert committed == GENERATOR["render"](), "run scripts/gen-entity-table --write"


def test_every_catalogue_entity_and_action_is_in_the_tables() -> None:
    from mesaya_realtime.domain.catalogue import CATALOGUE

    block = GENERATOR["render"]()
    for spec in CATALOGUE.entities:
        assert f"| `{spec.name}` |" in block
        for action in (*spec.list_actions, *spec.detail_actions):
            assert f"`{action}`" in block
        for topic in spec.kafka_topics:
            assert f"`{topic}`" in block


def test_every_setting_is_documented_in_the_readme_and_env_example() -> None:
    from mesaya_realtime.config import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for field in Settings.model_fields:
        name = field.upper()
        assert f"| `{name}` |" in readme, f"{name} is missing from the README's configuration table"
        assert f"# {name}=" in example, f"{name} is missing from .env.example"
