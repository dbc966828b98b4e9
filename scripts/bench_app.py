"""App speed, printed as JSON: upload -> first complete view in a real browser, and server-side redraws.

    python scripts/bench_app.py [--browser-models bundled vit_s] [--redraw-model vit_b] [--repeats 30]

- `first_view`: headless Chromium uploads a photo it has not seen and waits for the top-5 and the four
  overview overlays (raw attention, rollout, Chefer, Grad-CAM: one forward and one backward pass).
  Goal <= 1.5 s with the bundled model and a ViT-S/16-shaped model (random timm weights: speed does
  not depend on their values).
- `redraw`: the handlers behind every slider and selector, timed in-process on a cached ViT-B/16
  analysis (no model run), p50 / p95 over `--repeats` varied calls, half of them with the per-analysis
  memo of maps emptied first (`cold_p95_ms`: every map recomputed from the capture). Goal <= 50 ms. The same run times
  timm's own ViT-B/16 forward pass (`reference_forward_ms`): what a redraw would cost if it re-ran the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gradio.media import get_image  # noqa: E402

from vit_core.weights import save_vit  # noqa: E402
from vit_core.zoo import load_model  # noqa: E402

TIMM_NAMES = {"vit_s": "timm:vit_small_patch16_224", "vit_b": "timm:vit_base_patch16_224"}
PHOTOS = ["cheetah1.jpg", "lion.jpg", "bus.png", "tower.jpg"]


def model_file(key: str, folder: Path) -> str:
    """'bundled', or a random-weight timm model saved in our format (the app loads it offline)."""
    if key == "bundled":
        return "bundled"
    loaded = load_model(TIMM_NAMES[key], random_weights=True)
    path = folder / f"{key}.safetensors"
    save_vit(path, loaded.model, loaded.data_config, loaded.labels)
    return str(path)


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def first_view(model: str, folder: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import ARGS, CHROMIUM
    from tests.live import start, stop

    server = start(folder / f"server-{Path(model).stem}.log", VIT_MODEL=model)
    times = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url + "/")
            page.locator("#analyze").wait_for()
            # warm-up: the first request loads the model (once per process, shared by every session)
            page.locator("#input-image input[type=file]").set_input_files(get_image(PHOTOS[0]))
            page.locator("#overview-gradcam img").wait_for(timeout=120_000)
            for name in PHOTOS[1:] + [
                str(p) for p in sorted((ROOT / "assets" / "scenes").glob("0[0-2]_*[a-z].png")) if "mask" not in p.name
            ]:
                methods = ("attention", "rollout", "chefer", "gradcam")
                before = {m: page.locator(f"#overview-{m} img").get_attribute("src") for m in methods}
                page.locator("#input-image button[aria-label='Remove Image']").first.click()
                start_time = time.perf_counter()
                page.locator("#input-image input[type=file]").set_input_files(
                    get_image(name) if "/" not in name else name
                )
                page.wait_for_function(
                    """(before) => Object.entries(before).every(([m, src]) => {
                        const img = document.querySelector(`#overview-${m} img`);
                        return img && img.complete && img.src !== src; })""",
                    arg=before,
                    timeout=60_000,
                    polling=10,
                )
                times.append((time.perf_counter() - start_time) * 1000)
            browser.close()
    finally:
        stop(server)
    return {"runs": len(times), "median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def redraw(model: str, repeats: int) -> dict:
    from app import handlers, service

    style = (0.55, "Viridis", "bilinear", False, True)
    outputs = handlers.on_analyze(get_image("cheetah1.jpg"), model, progress=lambda *a, **k: None)
    session = outputs[0]
    analysis = service.CACHE.get(session["key"])
    layers, heads = analysis.capture.num_layers, analysis.capture.num_heads
    rows, cols = analysis.capture.grid
    handlers.draw_overview(session, None, *style)  # the top class's backward pass, once
    rng = np.random.default_rng(0)
    calls = {
        "heads (block, head, query patch)": lambda: handlers.draw_heads(
            session,
            int(rng.integers(layers)),
            str(rng.integers(heads)),
            (int(rng.integers(rows)), int(rng.integers(cols))),
            1.0,
            *style,
        ),
        "heads (mass threshold)": lambda: handlers.draw_heads(
            session, int(rng.integers(layers)), "mean", None, 0.6, *style
        ),
        "rollout (fusion, discard, start)": lambda: handlers.draw_method(
            session,
            "rollout",
            str(rng.choice(["mean", "max", "min"])),
            float(rng.choice([0, 0.5, 0.9])),
            int(rng.integers(layers)),
            None,
            *style,
        ),
        "chefer (start block)": lambda: handlers.draw_method(
            session, "chefer", "mean", 0.0, int(rng.integers(layers)), None, *style
        ),
        "overview (opacity, colormap)": lambda: handlers.draw_overview(
            session, None, float(rng.random()), str(rng.choice(["Viridis", "Inferno", "Jet"])), "bilinear", False, True
        ),
        "tokens (block, patch)": lambda: handlers.draw_tokens(
            session, int(rng.integers(layers + 1)), (int(rng.integers(rows)), int(rng.integers(cols))), *style
        ),
        "layers (plots)": lambda: handlers.draw_layers(session, None),
        "anatomy: patch (steps 1, 2)": lambda: handlers.draw_anatomy_patch(
            session, (int(rng.integers(rows)), int(rng.integers(cols)))
        ),
        "anatomy: block, head, query, scaling (steps 3, 4)": lambda: handlers.draw_anatomy_attention(
            session,
            (int(rng.integers(rows)), int(rng.integers(cols))),
            int(rng.integers(layers)),
            str(rng.integers(heads)),
            str(rng.choice(["class", "patch"])),
            bool(rng.integers(2)),
        ),
        "anatomy: block (step 5, MLP)": lambda: handlers.draw_anatomy_mlp(session, int(rng.integers(layers))),
    }
    result = {}
    everything = []
    for name, call in calls.items():
        call()  # the first call fills per-analysis memos (e.g. the layers x heads thumbnails)
        warm, cold = [], []
        for _ in range(repeats):
            start_time = time.perf_counter()
            call()
            warm.append((time.perf_counter() - start_time) * 1000)
            for key in [k for k in analysis.memo if isinstance(k, tuple)]:  # maps and thumbnails, not the views
                del analysis.memo[key]
            start_time = time.perf_counter()
            call()
            cold.append((time.perf_counter() - start_time) * 1000)
        everything += warm + cold
        result[name] = {
            "p50_ms": percentile(warm + cold, 50),
            "p95_ms": percentile(warm + cold, 95),
            "cold_p95_ms": percentile(cold, 95),  # nothing memoised: every map recomputed
        }
    loaded = service.shared_model(model)
    reference = loaded.make_reference().eval()
    pixels = torch.from_numpy(analysis.capture.input.copy())[None]
    with torch.inference_mode():
        reference(pixels)
        forward = []
        for _ in range(5):
            start_time = time.perf_counter()
            reference(pixels)
            forward.append((time.perf_counter() - start_time) * 1000)
    return {
        "handlers": result,
        "all": {"p50_ms": percentile(everything, 50), "p95_ms": percentile(everything, 95)},
        "reference_forward_ms": round(statistics.median(forward), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--browser-models", nargs="*", default=["bundled", "vit_s"], choices=["bundled", "vit_s", "vit_b"]
    )
    parser.add_argument("--redraw-model", default="vit_b", choices=["bundled", "vit_s", "vit_b"])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}
        report["first_view"] = {key: first_view(model_file(key, folder), folder) for key in args.browser_models}
        report["redraw"] = {args.redraw_model: redraw(model_file(args.redraw_model, folder), args.repeats)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
