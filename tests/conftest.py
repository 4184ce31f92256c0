"""Shared fixtures. Tests never reach the network: a guard fails any connection
to a non-loopback address, so a test cannot go online by accident."""

from __future__ import annotations

import ipaddress
import socket

import pytest

import toy  # noqa: F401  registers the toy models used by core tests

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # unix sockets
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise RuntimeError(f"tests may not open network connections (tried {address!r})")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _guarded(_real_connect)
    socket.socket.connect_ex = _guarded(_real_connect_ex)
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture
def store(tmp_path):
    from rsembed_store import Store

    return Store.open(tmp_path / "db")


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A 256 px, 3-date synthetic Sentinel-2-like source (generated once per session)."""
    from rsembed_store.testing.scenes import SceneSpec, ensure_scene

    out = tmp_path_factory.mktemp("scene")
    manifest = ensure_scene(out, SceneSpec(size_px=256, n_dates=3, n_patches=12, seed=3))
    return out, manifest


@pytest.fixture(scope="session")
def scene_config(small_scene):
    return {"sources": {"s2-l2a": str(small_scene[0] / "scenes")}}
