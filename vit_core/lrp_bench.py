"""Speed of the methods that run the model themselves, against plain inference, and the cost of attention flow.

    python -m vit_core.lrp_bench --model timm:vit_base_patch16_224 [--repeats 7] [--threads 2] [--flow]

CPU fp32, batch 1, interleaved rounds; medians and, less disturbed by other processes on a shared machine,
the best round of each. `forward` is our model on the fast path (fused attention,
nothing captured); every other entry is one whole map: AttnLRP and CP-LRP one forward + one backward with
their rules, LeGrad one forward + one backward, Transformer Attribution a relevance pass and a gradient
pass. `--flow` also times exact attention flow on random attention at a few token counts and depths.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from vit_core.capture import Capture, predict
from vit_core.errors import WeightsUnavailable
from vit_core.flow import attention_flow
from vit_core.legrad import legrad_batch
from vit_core.lrp import lrp_batch
from vit_core.relevance import transformer_attribution_batch
from vit_core.zoo import LoadedModel, load_model


def _median_ms(timings: list[float]) -> float:
    return round(1000 * statistics.median(timings), 1)


def benchmark_methods(loaded: LoadedModel, repeats: int = 7) -> dict:
    """Median ms per image of plain inference and of each map, and each map's ratio to plain inference."""
    size = loaded.data_config.input_size
    pixels = torch.randn(1, *size)
    runs: dict[str, Callable[[], object]] = {
        "forward": lambda: predict(loaded.model, pixels),
        "attnlrp": lambda: lrp_batch(loaded.model, pixels, "top", "attnlrp"),
        "cp_lrp": lambda: lrp_batch(loaded.model, pixels, "top", "cp_lrp"),
        "legrad": lambda: legrad_batch(loaded.model, pixels, "top"),
        "transformer_attribution": lambda: transformer_attribution_batch(loaded.model, pixels, "top"),
    }
    for run in runs.values():  # warm-up
        run()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    medians = {name: _median_ms(values) for name, values in timings.items()}
    best = {name: round(1000 * min(values), 1) for name, values in timings.items()}  # least disturbed by others

    def ratios(ms: dict[str, float]) -> dict[str, float]:
        return {name: round(value / ms["forward"], 2) for name, value in ms.items() if name != "forward"}

    return {
        "model": loaded.name,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "ms": medians,
        "ratio_to_forward": ratios(medians),
        "best_ms": best,
        "best_ratio_to_forward": ratios(best),
    }


def flow_seconds(layers: int, tokens: int, seed: int = 0) -> float:
    """Seconds for one exact attention-flow map on random peaky attention `[layers, 2, tokens, tokens]`."""
    rng = np.random.default_rng(seed)
    weights = rng.random((layers, 2, tokens, tokens)) ** 4
    weights /= weights.sum(-1, keepdims=True)
    patches = tokens - 1
    capture = Capture(
        input=np.zeros((3, 1, 1), np.float32),
        attentions=weights.astype(np.float32),
        tokens=np.zeros((layers + 1, tokens, 1), np.float32),
        logits=None,
        probs=None,
        layer_logits=None,
        num_prefix_tokens=1,
        grid=(1, patches),
        patch_size=1,
    )
    start = time.perf_counter()
    attention_flow(capture)
    return round(time.perf_counter() - start, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vit_core.lrp_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm:vit_base_patch16_224")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flow", action="store_true", help="also time attention flow at a few sizes")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        loaded = load_model(args.model)
        weights = "pretrained"
    except WeightsUnavailable:  # speed does not depend on the values of the weights
        loaded = load_model(args.model, random_weights=True)
        weights = "random"
    report = {**benchmark_methods(loaded, args.repeats), "weights": weights}
    if args.flow:
        report["flow_seconds"] = [
            {"layers": layers, "tokens": tokens, "seconds": flow_seconds(layers, tokens)}
            for layers, tokens in ((6, 37), (6, 50), (6, 65), (12, 50))
        ]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
