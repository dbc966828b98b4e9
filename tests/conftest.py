"""Test-wide setup: offline, deterministic, two threads (the CI machine has two cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import importlib  # noqa: E402
import types  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """`python app.py` on a free port (shared by the API and browser tests)."""
    from tests.live import start, stop

    server = start(tmp_path_factory.mktemp("server") / "server.log")
    yield server
    stop(server)


@pytest.fixture(scope="session")
def timm_tiny_file(tmp_path_factory) -> str:
    """timm's ViT-Ti/16 built without weights (random), converted and saved as a vit_core .safetensors."""
    from vit_core.weights import save_vit
    from vit_core.zoo import load_model

    loaded = load_model("timm:vit_tiny_patch16_224", random_weights=True)
    path = tmp_path_factory.mktemp("models") / "vit_tiny_random.safetensors"
    save_vit(path, loaded.model, loaded.data_config, loaded.labels)
    return str(path)


def pytest_terminal_summary(terminalreporter):
    """Say it in the summary when the browser tests were skipped for want of Chromium."""
    from tests.browser.conftest import SKIPPED

    skipped = [r for r in terminalreporter.stats.get("skipped", []) if SKIPPED in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} browser tests skipped: Chromium is missing; `make browser-deps` installs it.", yellow=True
        )


def need(module: str) -> types.ModuleType:
    """Import an optional extra (requirements-scale.txt): skip without it locally, fail under CI=true."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (~20 s to start): 2 CPUs and a small object store, because
    /dev/shm is small in containers. Tests that use it are marked `ray`."""
    ray = need("ray")
    need("ray.data")
    ray.init(num_cpus=2, object_store_memory=128 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
