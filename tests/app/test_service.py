"""The service's rules: which models a public page offers, the memory bound on loaded models, and model
runs that cross to a ZeroGPU worker as small pickles."""

import builtins
import io
import os
import pickle
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio.media import get_image

from app import service
from app.models import ModelStore
from app.tabs import faithfulness, overview
from tests.app.helpers import STYLE, analyzed
from vit_core.errors import VitCoreError
from vit_core.zoo import BUNDLED_PATH, CATALOG, load_model

MiB = 2**20


@pytest.fixture
def local(monkeypatch):
    for name in ("SPACE_ID", "VIT_PUBLIC", "VIT_MODELS", "VIT_MODEL", "VIT_MAX_PARAMS", "SPACES_ZERO_GPU"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def public(local, timm_tiny_file):
    """Public mode with the operator's one extra model: the random ViT-Ti file."""
    local.setenv("VIT_PUBLIC", "1")
    local.setenv("VIT_MODELS", timm_tiny_file)
    return local


def refusal(name: str) -> tuple:
    with pytest.raises(VitCoreError) as error:
        service.shared_model(name)
    return error.value.key, repr(error.value.params), str(error.value)


def unlisted_names(tmp_path) -> list[str]:
    existing = tmp_path / "other.safetensors"
    existing.write_bytes(BUNDLED_PATH.read_bytes())  # a real model file, just not one the operator listed
    return [
        str(existing),
        str(tmp_path / "missing.safetensors"),
        str(BUNDLED_PATH),  # the bundled model is offered as "bundled", not by its path
        "../assets/bundled/model.safetensors",
        "hf:/etc",
        "hf:/nonexistent",
        "hf:google/vit-huge-patch14-224-in21k",
        "timm:vit_huge_patch14_224",
        "timm:vit_small_patch16_224",  # the catalog's, without its tag
        "torchvision:vit_h_14",
        "nonsense",
    ]


def test_local_use_is_as_free_as_before(local, timm_tiny_file, tmp_path):
    for name in unlisted_names(tmp_path):
        assert service.check_model(name) is None  # no rule: load_model decides, as before
    assert service.check_model("bundled") == 1_554_778
    assert service.shared_model(timm_tiny_file).cfg.embed_dim == 192
    with pytest.raises(VitCoreError, match="does not exist"):
        service.shared_model(str(tmp_path / "missing.safetensors"))


def test_public_mode_refuses_every_other_name_with_one_sentence_before_touching_disk(public, tmp_path):
    names = unlisted_names(tmp_path)

    def touched(*args, **kwargs):
        raise RuntimeError(f"touched the disk or a loader: {args[:1]}")

    with public.context() as inside:  # nothing on disk, in a loader or on the network may be looked at
        for module, attribute in [(os, "stat"), (os, "lstat"), (os, "listdir"), (os, "scandir")]:
            inside.setattr(module, attribute, touched)
        inside.setattr(builtins, "open", touched)
        inside.setattr(io, "open", touched)
        inside.setattr(service, "count_parameters", touched)
        inside.setattr(service.MODELS, "_load", touched)
        refusals = {name: refusal(name) for name in names}
    assert len(set(refusals.values())) == 1, refusals  # the same key, parameters and sentence for every name
    key, params, message = refusals[names[0]]
    assert key == "model_not_offered" and params == "{}"
    assert message == "this page runs only the models in its model menu; choose one of those."
    # through the page's handler: the same sentence, capitalised
    image = get_image("lion.jpg")
    shown = set()
    for name in names:
        _, outputs = analyzed(image, name)
        shown.add(outputs[3].split("\n\n")[0])
    assert shown == {"⚠️ This page runs only the models in its model menu; choose one of those."}


def test_public_mode_offers_the_catalog_and_the_operators_models(public, timm_tiny_file):
    choices = {value: label for label, value in service.model_choices()}
    within = [entry.name for entry in CATALOG if entry.params <= service.DEFAULT_MAX_PARAMS]
    assert within == list(choices)[: len(within)]
    assert "openclip:ViT-L-14/openai" not in choices  # 428 M parameters with its text tower: over the budget
    assert choices[timm_tiny_file] == "vit_tiny_random.safetensors"
    assert choices["timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"] == (
        "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k — "
        "ViT-B/16 AugReg, ImageNet-1k · 86.6 M params · needs a download of 346 MB, and the hub cannot be reached here"
    )  # offline here (HF_HUB_OFFLINE=1); on a Space, "346 MB download"
    assert service.shared_model(timm_tiny_file).cfg.embed_dim == 192
    assert service.shared_model(" bundled ").cfg.depth == 6
    public.setenv("VIT_MODEL", "timm:vit_tiny_patch16_224")  # the operator's default is offered too
    assert service.check_model("timm:vit_tiny_patch16_224") == 5_717_416
    assert ("timm:vit_tiny_patch16_224", "timm:vit_tiny_patch16_224") in service.model_choices()


def test_the_parameter_budget_bounds_every_model_before_any_download(public, timm_tiny_file):
    public.setenv("VIT_MODELS", f"{timm_tiny_file},timm:vit_large_patch16_224,timm:vit_huge_patch14_224")

    def no_load(name):
        raise AssertionError(f"{name} was loaded")

    public.setattr(service.MODELS, "_load", no_load)
    # the operator's models are counted from their architecture on the meta device (no weights, offline)
    assert 303e6 < service.check_model("timm:vit_large_patch16_224") < 305e6  # ViT-L fits 350 M
    with pytest.raises(VitCoreError) as error:
        service.shared_model("timm:vit_huge_patch14_224")
    assert error.value.key == "model_too_large"
    assert error.value.params == {"name": "timm:vit_huge_patch14_224", "millions": 630.8, "limit": 350.0}
    assert str(error.value).startswith("timm:vit_huge_patch14_224 has 630.8 M parameters, more than this page's")

    public.setenv("VIT_MAX_PARAMS", "50e6")  # catalog entries too: the ViT-Bs go, the ViT-Ss stay
    offered = [value for _, value in service.model_choices()]
    assert "timm:vit_small_patch16_224.augreg_in21k_ft_in1k" in offered
    assert not any(e.params > 50e6 and e.name in offered for e in CATALOG)
    with pytest.raises(VitCoreError) as error:
        service.shared_model("hf:google/vit-base-patch16-224")  # uncached: a download would fail differently
    assert error.value.key == "model_too_large" and error.value.params["millions"] == 86.6

    public.delenv("VIT_PUBLIC")  # locally there is no budget
    assert service.check_model("timm:vit_huge_patch14_224") is None


# ---- loaded models: bounded by memory ----------------------------------------------------------------


class Loader:
    """A fake load: `name` weighs int(name) bytes; counts loads and can be slow."""

    def __init__(self, delay: float = 0.0):
        self.loads = []
        self.delay = delay

    def __call__(self, name):
        self.loads.append(name)
        time.sleep(self.delay)
        if name == "broken":
            raise VitCoreError("unknown_model", name="broken", sources="bundled")
        return types.SimpleNamespace(name=name)


def store(max_bytes: int, loader: Loader) -> ModelStore:
    return ModelStore(max_bytes, loader, size=lambda loaded: int(loaded.name))


def test_models_are_evicted_least_recently_used_by_bytes():
    loader = Loader()
    models = store(100, loader)
    for name in ["40", "30", "20"]:
        models.get(name)
    models.get("40")  # used again: now the most recent
    models.get("25")  # 115 bytes: the least recently used (30) goes
    assert models.names() == ["20", "40", "25"] and models.nbytes == 85
    models.get("500")  # alone over budget: it stays, everything else goes
    assert models.names() == ["500"]
    models.get("60", expected_bytes=60)  # room is made before loading: 500 goes first
    assert models.names() == ["60"] and loader.loads == ["40", "30", "20", "25", "500", "60"]
    assert models.peek("60").name == "60" and models.peek("40") is None


def test_a_model_asked_for_at_once_loads_once_and_others_do_not_wait():
    loader = Loader(delay=0.3)
    models = store(1000, loader)
    models.get("1")
    results = []
    threads = [threading.Thread(target=lambda: results.append(models.get("10"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    start = time.monotonic()
    assert models.get("1").name == "1" and time.monotonic() - start < 0.1  # not behind the slow load
    for thread in threads:
        thread.join()
    assert loader.loads == ["1", "10"] and len({id(r) for r in results}) == 1
    with pytest.raises(VitCoreError):
        models.get("broken")
    with pytest.raises(VitCoreError):
        models.get("broken")  # a failed load is tried again, and never stored
    assert loader.loads.count("broken") == 2 and "broken" not in models.names()


def test_a_forked_worker_gets_fresh_locks():
    models = store(1000, Loader())
    models.get("1")
    models._lock.acquire()  # another thread of the parent held it at the fork
    models.after_fork()
    assert models.get("1").name == "1" and models.get("2").name == "2"


def test_the_service_store_is_bounded_by_vit_models_mb(local):
    loaded = service.shared_model("bundled")
    assert service.MODELS.peek("bundled") is loaded
    assert service.MODELS.max_bytes == int(float(os.environ.get("VIT_MODELS_MB", "4096")) * MiB)
    assert 4 * 1_554_778 <= service.MODELS.nbytes <= service.MODELS.max_bytes  # 1.55 M float32 parameters, and others


# ---- model runs: what crosses to a ZeroGPU worker ----------------------------------------------------


def test_model_runs_cross_to_the_gpu_worker_as_small_pickles(local, pickled_model_runs):
    with pytest.raises(Exception, match="Can't pickle local object"):
        pickle.dumps(load_model("bundled"))  # why runs take a model name, not the model
    session, _ = analyzed(get_image("tower.jpg"), "bundled")
    overview.draw(session, None, STYLE)  # a gradient capture
    faithfulness.run(session, None, 16, progress=lambda *a, **k: None)
    faithfulness.ablate(session, 2, ["0", "3"], None)
    faithfulness.importance(session, 5, None)
    sizes = dict(pickled_model_runs)
    assert set(sizes) == {
        f"{fn} {what}"
        for fn in ("run_capture", "faithfulness_curves", "ablate", "importance", "model_map")
        for what in ("arguments", "result")
    }  # model_map: the LRP family and LeGrad, run for the faithfulness curves
    assert max(sizes.values()) < 8 * MiB, sizes
    assert sizes["run_capture arguments"] < 0.2 * MiB  # a name and a [3, 96, 96] input
    assert sizes["model_map arguments"] < 0.2 * MiB and sizes["model_map result"] < 0.01 * MiB  # a 12x12 map
    print({what: f"{size / MiB:.2f} MiB" for what, size in pickled_model_runs})


def test_the_pickle_check_refuses_models_and_large_payloads(local):
    model = service.shared_model("bundled").model
    with pytest.raises(service.PickleCheckFailed, match="a ViT would be pickled"):
        service.pickled(lambda m: m)(model)
    with pytest.raises(service.PickleCheckFailed, match="over 8 MiB"):
        service.pickled(lambda name, array: array)("bundled", np.zeros(3 * MiB, np.float32))


def test_errors_from_the_gpu_worker_keep_their_key_and_parameters(local, pickled_model_runs):
    error = VitCoreError("model_too_large", name="x", millions=632.0, limit=350.0)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.key, again.params, str(again)) == (VitCoreError, error.key, error.params, str(error))
    pixels = torch.zeros(3, 96, 96)
    with pytest.raises(VitCoreError, match="out of range"):
        service.importance("bundled", pixels, 99, 0)
    assert pickled_model_runs[-1][0] == "importance error"


def test_gpu_functions_are_wrapped_at_import_and_the_hook_is_read_at_each_call(local, monkeypatch):
    calls = []

    def spy(fn):
        def run(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)

        return run

    monkeypatch.setattr(service, "GPU_WRAPPER", spy)
    service.ablate("bundled", torch.zeros(3, 96, 96), [(0, 0)], 1)
    assert calls == ["ablate"]


def test_on_zero_gpu_the_default_model_loads_at_start_up_and_stays_on_the_cpu(local, monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", types.ModuleType("spaces"))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("VIT_MODEL", "bundled")
    monkeypatch.setattr(service, "MODELS", ModelStore(2**30, service._load))
    service.start_up()
    assert service.MODELS.names() == ["bundled"] and service.MODELS.peek("bundled").device.type == "cpu"
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert not service.zero_gpu()
    service.MODELS.clear()
    service.start_up()  # elsewhere, models load on first use
    assert service.MODELS.names() == []


def test_a_forked_process_finds_the_model_loaded_before_the_fork(local):
    """What a ZeroGPU worker does, without a GPU: the child runs a model it inherited, by name."""
    service.shared_model("bundled")
    pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 96, 96)).astype(np.float32))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no load (the loader is gone), one run, the result back as a pickle
        try:
            service.MODELS._load = None
            torch.set_num_threads(1)
            payload = pickle.dumps(service.run_capture("bundled", pixels).logits)
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            payload = pickle.dumps(repr(error))
        with os.fdopen(write, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as source:
        received = pickle.loads(source.read())
    os.waitpid(pid, 0)
    expected = service.run_capture("bundled", pixels).logits
    assert isinstance(received, np.ndarray), received
    assert np.allclose(received, expected, atol=1e-5)


def test_catalog_labels_give_sizes_and_downloads(local):
    by_name = {entry.name: entry for entry in CATALOG}
    label = service.catalog_label(by_name["torchvision:vit_b_16"], check_cache=False)
    assert label == "torchvision:vit_b_16 — ViT-B/16, ImageNet-1k · 86.6 M params · 346 MB download"
    assert "参数" in service.catalog_label(by_name["bundled"], language="zh-CN")
    assert service.catalog_label(by_name["bundled"]).endswith("· 1.6 M params")
    assert Path(service.display_name("/srv/models/mine.safetensors")).name == "mine.safetensors"
    # tests run offline (HF_HUB_OFFLINE=1): a model not in the cache cannot be downloaded, and says so
    assert service.offline() and not service.hub_reachable()
    offline = service.catalog_label(by_name["torchvision:vit_b_16"])
    if not service.available_offline("torchvision:vit_b_16"):
        assert offline.endswith("· needs a download of 346 MB, and the hub cannot be reached here")
        chinese = service.catalog_label(by_name["torchvision:vit_b_16"], language="zh-CN")
        assert chinese.endswith("· 需下载 346 MB，但此处无法连接模型仓库")
        assert "offline" not in offline and "离线" not in chinese  # "download, offline" read as a contradiction


def test_vit_pickle_check_installs_the_check_in_a_server(local):
    code = "from app import service; print(service.GPU_WRAPPER is service.pickled)"
    env = {**os.environ, "VIT_PICKLE_CHECK": "1"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
