"""a0gw: a REST and WebSocket gateway to AlephZero shared-memory topics."""

__version__ = "0.1.0"
