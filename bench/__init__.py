"""Benchmark harness for a0gw (run it as ``python -m bench``; see bench/README.md).

Nothing in this package imports ``a0gw``: the gateway under test runs in its own
process, AlephZero peers run in helper processes (``bench.peers``), and the
load generators here speak HTTP and WebSocket over raw sockets.
"""
