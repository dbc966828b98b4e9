"""Speed of our model against the source library's own plain inference, measured in the same run.

Five timings per round, interleaved so that drift on a shared machine hits all of them alike:
`reference` (timm with fused attention / transformers with SDPA / torchvision), `fast` (ours, nothing
captured), `capture` (ours, every attention map, every token and the logit lens), `explain_all`
(capture + one backward pass + every map and analysis the explorer shows) and `analyses` (the
class-agnostic maps and analyses of one image from an existing capture, no model run). On a GPU,
`capture_device` keeps the capture on the device; with `stats=True`, `stats` times the streaming
statistics path (`capture_stats`). GPU work is asynchronous, so every timing on CUDA waits for the
device with CUDA events (`timed`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from vit_core.analysis import (
    attention_entropy,
    layer_predictions,
    mean_attention_distance,
    patch_similarity,
    token_norms,
    token_pca_rgb,
)
from vit_core.capture import Capture, capture_batch, predict
from vit_core.explain import CLASS_SPECIFIC, METHODS, MODEL_RUN, NOT_IMPLEMENTED, OPT_IN, explain
from vit_core.maps import mass_threshold
from vit_core.stats import capture_stats
from vit_core.zoo import LoadedModel


def class_agnostic(result: Capture) -> None:
    """Every map and analysis that needs no gradient, from one capture (no model run)."""
    for method in METHODS:
        if method not in NOT_IMPLEMENTED and method not in CLASS_SPECIFIC and method not in OPT_IN:
            explain(result, method)
    mass_threshold(explain(result, "attention"))
    if result.layer_logits is not None:
        layer_predictions(result)
    mean_attention_distance(result)
    attention_entropy(result)
    token_pca_rgb(result, result.num_layers)
    token_norms(result, result.num_layers)
    patch_similarity(result, result.num_layers, (0, 0))


def explain_all(model, pixels: torch.Tensor, autocast: torch.dtype | None = None) -> None:
    """Everything the explorer shows for one image: capture + one backward + every map and analysis."""
    for result in capture_batch(model, pixels, target="top", autocast=autocast):
        class_agnostic(result)
        for method in CLASS_SPECIFIC - set(NOT_IMPLEMENTED) - MODEL_RUN:  # those: vit_core.lrp_bench
            explain(result, method)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds `fn()` takes on `device`, the work it queued on a GPU included.

    CUDA kernels run asynchronously: a host clock stopped when `fn` returns measures the launches, not
    the work. On CUDA the device is synchronised first (earlier work is not counted), events are
    recorded on the stream around `fn`, and the end event is waited for. On the CPU, a host clock.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.device(device):  # the events go on that device's current stream
            start.record()
            fn()
            end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1000.0


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated on a CUDA `device` while `fn()` runs (the memory held before counts too)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _reference_forward(reference: torch.nn.Module) -> Callable[[torch.Tensor], object]:
    if type(reference).__module__.startswith("transformers"):
        return lambda pixels: reference(pixel_values=pixels)
    return reference


def benchmark(
    loaded: LoadedModel,
    batch: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    autocast: torch.dtype | None = None,
    stats: bool = False,
) -> dict:
    """Median milliseconds for reference / fast / capture and their ratios, as a JSON-ready dict."""
    channels, height, width = loaded.data_config.input_size
    pixels = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(0))
    device = loaded.device
    reference = loaded.make_reference().to(device)
    run_reference = _reference_forward(reference)
    model = loaded.model

    precision = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()

    def ref() -> None:
        with torch.inference_mode(), precision:
            run_reference(pixels.to(device))

    captured = capture_batch(model, pixels[:1], autocast=autocast)[0]
    runs = {
        "reference": ref,
        "fast": lambda: predict(model, pixels, autocast=autocast),
        "capture": lambda: capture_batch(model, pixels, autocast=autocast),
        "explain_all": lambda: explain_all(model, pixels, autocast),
        "analyses": lambda: class_agnostic(captured),  # one image's class-agnostic maps and analyses
    }
    if device.type != "cpu":  # on the CPU it is the same as `capture`
        runs["capture_device"] = lambda: capture_batch(model, pixels, autocast=autocast, keep_on_device=True)
    if stats:
        runs["stats"] = lambda: capture_stats(model, pixels, autocast=autocast)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(warmup + repeats):
        for name, fn in runs.items():
            elapsed = timed(fn, device)
            if round_index >= warmup:
                times[name].append(elapsed)
    median = {name: round(statistics.median(values), 2) for name, values in times.items()}
    ratio = {
        "fast/reference": round(median["fast"] / median["reference"], 3),
        "capture/reference": round(median["capture"] / median["reference"], 3),
        "explain_all/reference": round(median["explain_all"] / median["reference"], 3),
        "analyses/fast": round(median["analyses"] * batch / median["fast"], 3),
    }
    for name in ("capture_device", "stats"):
        if name in median:
            ratio[f"{name}/reference"] = round(median[name] / median["reference"], 3)
    peaks = {}
    if device.type == "cuda":  # peak GPU memory of each run, weights and input included
        peaks = {name: round(peak_memory(fn, device) / 2**20, 1) for name, fn in runs.items() if name != "analyses"}
        for name in ("capture_device", "stats"):
            if name in peaks:
                ratio[f"{name}/reference peak memory"] = round(peaks[name] / peaks["reference"], 3)
    return {
        "model": loaded.name,
        "weights": loaded.weights,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "input_size": [channels, height, width],
        "repeats": repeats,
        "autocast": str(autocast).replace("torch.", "") if autocast else "float32",
        "median_ms": median,
        "ratio": ratio,
        **({"peak_mib": peaks} if peaks else {}),
        "torch": torch.__version__,
    }
