"""The generated description of the protocol: docs/asyncapi.yaml and the TypeScript client's
generated.ts are what ``mesaya-realtime asyncapi`` writes from the catalogue now (a stale one
fails here; regenerate with that command), and every error code the gateway can send is in them.
The AsyncAPI parser validates the document in clients/typescript/test/asyncapi.test.ts."""

from __future__ import annotations

import inspect
import re

import yaml

from mesaya_realtime import __main__ as cli
from mesaya_realtime.application.usecases import selection
from mesaya_realtime.domain import errors
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.interface.asyncapi import ERROR_CODES, document, typescript
from tests.support import ROOT


def test_docs_asyncapi_yaml_is_up_to_date() -> None:
    text = (ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")
    assert text.startswith(cli.ASYNCAPI_HEADER)
    assert yaml.safe_load(text) == document(cli.default_actions()), "stale: run `mesaya-realtime asyncapi`"


def test_the_clients_generated_types_are_up_to_date() -> None:
    text = (ROOT / "clients" / "typescript" / "src" / "generated.ts").read_text(encoding="utf-8")
    assert text == typescript(cli.default_actions()), "stale: run `mesaya-realtime asyncapi`"


def test_every_route_and_entity_is_described() -> None:
    doc = document(cli.default_actions())
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {"/ws/{entity}/{section}", "/ws/notifications", "/ws/analytics/{scope}/{entity}"}
    entities = doc["channels"]["entitySocket"]["parameters"]["entity"]["enum"]
    assert sorted(entities) == sorted(CATALOGUE.by_name)
    tables = doc["components"]["messages"]["tables"]["payload"]["allOf"][1]["properties"]["topic"]["enum"]
    assert {"tables.updated", "tables.selecting", "tables.released", "tables.list"} <= set(tables)


def test_every_error_code_the_gateway_sends_is_listed() -> None:
    sent = {
        value.code
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, errors.GatewayError)
    }
    for module in (errors, selection, cli):
        source = inspect.getsource(module)
        sent |= set(re.findall(r'code="([a-z_]+)"', source))
    for path in (ROOT / "src" / "mesaya_realtime").rglob("*.py"):
        sent |= set(re.findall(r'code="([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert sent <= set(ERROR_CODES), sent - set(ERROR_CODES)
