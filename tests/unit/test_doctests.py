"""The usage examples in docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import mesaya_realtime

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(mesaya_realtime.__path__, "mesaya_realtime.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
