"""Fixtures: a fresh AlephZero root, gateway subprocesses and HTTP clients."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
from helpers import Gateway


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        module = item.getparent(pytest.Module)
        gateways = getattr(item, "a0gw_gateways", []) + getattr(
            module, "a0gw_gateways", []
        )
        for gateway in gateways:
            report.sections.append(
                (f"a0gw stderr (port {gateway.port})", gateway.stderr_text())
            )
    return report


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh AlephZero root under /dev/shm, also set as A0_ROOT for a0 peers."""
    path = f"/dev/shm/a0gw-test-{uuid.uuid4().hex}"
    os.makedirs(path)
    monkeypatch.setenv("A0_ROOT", path)
    monkeypatch.delenv("PORT_STR", raising=False)
    monkeypatch.delenv("A0_TOPIC", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _gateway_factory(
    root: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways on `root`; each must exit 0 on SIGTERM at teardown.

    A gateway the test already signalled is only waited for.  Pass
    ready=False to skip waiting for the deadman.
    """
    gateways: list[Gateway] = []
    request.node.a0gw_gateways = gateways

    def start(*, ready: bool = True, **kwargs: Any) -> Gateway:
        gateway = Gateway(root, **kwargs)
        gateways.append(gateway)
        if ready:
            gateway.wait_ready()
        return gateway

    yield start

    try:
        for gateway in gateways:
            if gateway.proc.poll() is None or gateway.signalled:
                status = gateway.stop(signal.SIGTERM)
                assert status == 0, (
                    f"gateway exited with {status} on signal:\n{gateway.stderr_text()}"
                )
    finally:
        for gateway in gateways:
            gateway.cleanup()


@pytest.fixture
def start_gateway(
    root: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways on the test's root (see _gateway_factory)."""
    yield from _gateway_factory(root, request)


@pytest.fixture(scope="module")
def module_root() -> Iterator[str]:
    """Like `root`, shared by every test of a module (A0_ROOT set meanwhile)."""
    path = f"/dev/shm/a0gw-test-{uuid.uuid4().hex}"
    os.makedirs(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("A0_ROOT", path)
        patch.delenv("PORT_STR", raising=False)
        patch.delenv("A0_TOPIC", raising=False)
        yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def start_module_gateway(
    module_root: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Gateway]]:
    """Like `start_gateway`, for gateways that serve every test of a module."""
    yield from _gateway_factory(module_root, request)


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """A running gateway with default options, serving `root`."""
    return start_gateway()


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    """An HTTP client for `gateway`."""
    with httpx.Client(base_url=gateway.url, timeout=30.0, trust_env=False) as client:
        yield client
