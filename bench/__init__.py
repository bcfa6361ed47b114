"""Benchmark harness of mesaya-realtime (issue 5): ``python -m bench [--quick]``.

The real gateway runs as a separate process pinned to one core; load generators (raw-socket
WebSocket clients, thousands per process) and the Kafka producer run on the other core. The
same scenarios drive two baselines: the floor (a bare aiohttp broadcast of one pre-encoded
frame) and a minimal FastAPI-on-uvicorn gateway. See docs/BENCHMARKS.md.
"""
