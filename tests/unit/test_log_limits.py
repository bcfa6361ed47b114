"""Rate-limited log lines: one per kind per interval, with the count of the ones held back."""

from __future__ import annotations

import logging

import pytest

from mesaya_realtime.application.usecases.log_limits import RateLimitedLog
from mesaya_realtime.infrastructure.kafka_logs import OnceAPeriod


def test_one_line_per_kind_per_interval_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t.limits"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t.limits"):
        assert limited.info("handshake refused", kind="401", status=401)
        for _ in range(5):
            assert not limited.info("handshake refused", kind="401", status=401)
        assert limited.info("handshake refused", kind="403", status=403)  # another kind
        now[0] = 11.0
        assert limited.info("handshake refused", kind="401", status=401)
    records = [r for r in caplog.records if r.name == "t.limits"]
    assert [getattr(r, "status", None) for r in records] == [401, 403, 401]
    assert getattr(records[2], "suppressed", None) == 5
    assert not hasattr(records[0], "suppressed")


def test_librdkafka_lines_of_one_kind_pass_once_a_period() -> None:
    keep = OnceAPeriod(period=60.0)

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("rd", logging.ERROR, "", 0, text, None, None)

    assert keep.filter(record("FAIL Connect to 127.0.0.1:9 failed (after 0ms in state CONNECT)"))
    assert not keep.filter(record("FAIL Connect to 127.0.0.1:9 failed (after 12ms in state CONNECT)"))
    assert keep.filter(record("BROKERFAIL another kind"))
