"""Without a hub, loading fails within 5 seconds with one sentence: refused, silent or offline."""

import socket
import time

import pytest
from huggingface_hub import constants

from vit_core import VitCoreError, hub
from vit_core.zoo import load_model


@pytest.fixture
def online(monkeypatch):
    """Pretend to be online (no HF_HUB_OFFLINE) with the hub endpoint pointing at loopback only."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probes", {})

    def point_at(port: int) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache-for-tests")

    return point_at


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_fails_fast(name: str) -> str:
    start = time.monotonic()
    with pytest.raises(VitCoreError) as error:
        load_model(name)
    assert time.monotonic() - start < 5.0
    assert "\n" not in str(error.value)
    return str(error.value)


def test_refused_connection(online):
    online(free_port())  # nothing listens there
    assert "cannot be reached" in assert_fails_fast("hf:google/vit-base-patch16-224")


def test_host_that_accepts_but_never_answers(online):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever reads or writes
        online(silent.getsockname()[1])
        message = assert_fails_fast("timm:vit_tiny_patch16_224")
    assert "could not be downloaded" in message or "cannot be reached" in message


def test_offline_flag_is_honoured_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_probes", {})
    assert "HF_HUB_OFFLINE=1" in assert_fails_fast("hf:google/vit-base-patch16-224")
    assert "HF_HUB_OFFLINE=1" in assert_fails_fast("timm:vit_tiny_patch16_224")
    assert hub._probes == {}  # no probe was even started
