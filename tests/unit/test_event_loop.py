"""EVENT_LOOP: which loop `serve` runs on (infrastructure/event_loop.py)."""

from __future__ import annotations

import pytest

from mesaya_realtime.config import load_settings
from mesaya_realtime.infrastructure.event_loop import loop_name, run
from tests.support import SECRET


async def _which() -> str:
    return loop_name()


@pytest.mark.parametrize(
    ("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_the_choice_picks_the_loop(choice: str, expected: str) -> None:
    assert run(_which(), choice) == expected  # type: ignore[arg-type]


def test_the_setting_is_read_case_insensitively_and_checked() -> None:
    assert load_settings({"jwt_secret": SECRET, "event_loop": " UVLoop "}).event_loop == "uvloop"
    with pytest.raises(Exception, match=r"(?i)event_loop"):
        load_settings({"jwt_secret": SECRET, "event_loop": "trio"})
