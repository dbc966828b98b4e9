"""Prompt speed on the CPU, printed as JSON: open_clip's ViT-B/16 (random weights: speed does not depend on
their values), one image, `--threads` torch threads.

    python scripts/bench_clip.py [--repeats 10] [--threads 2]

- `forward_ms`: the image tower's plain forward pass (our fast path), for scale.
- `new_prompt_map_ms`: from the image's existing capture (and its kept forward graph, `PromptGradients`),
  a prompt not seen before -> its Chefer map: one backward pass through the image tower and the map, the
  text embedding cached (goal <= 500 ms); `..._text_uncached_ms` also embeds the phrase with the text tower.
- `capture_with_target_ms`: the same map without a kept graph (forward + backward, what a ZeroGPU worker does).
- `zero_shot_1000_ms`: 1,000 labels for the captured image after their first run (label embeddings cached):
  the labels' head from the cache, the logits and the logit lens (goal <= 50 ms); `zero_shot_1000_first_s`
  embeds the 1,000 prompts with the text tower once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from vit_core import capture, explain, load_model  # noqa: E402
from vit_core.capture import predict  # noqa: E402
from vit_core.zeroshot import PromptGradients, zero_shot  # noqa: E402

WORDS = "red green blue small large old new wet dry bright dark striped spotted wooden metal glass".split()
THINGS = "bus dog cat tree house car bird boat bicycle chair lamp clock bottle flower horse cup".split()


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="openclip:ViT-B-16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, random_weights=True, device="cpu")
    text = loaded.text_encoder()
    pixels = torch.randn(3, *loaded.data_config.input_size[1:], generator=torch.Generator().manual_seed(0))
    base = capture(loaded.model, pixels)  # the image's existing capture
    kept = PromptGradients(loaded.model, pixels)
    phrases = iter(f"a {a} {b} {c}" for a in WORDS for b in WORDS for c in THINGS)

    def new_prompt(cached: bool):
        phrase = next(phrases)
        if cached:
            text.encode([phrase])  # embedded before the clock starts
        start = time.perf_counter()
        explain(kept.capture_for(base, text.target(phrase)), "chefer")
        return 1000 * (time.perf_counter() - start)

    new_prompt(True)  # warm-up
    cached = [new_prompt(True) for _ in range(args.repeats)]
    uncached = [new_prompt(False) for _ in range(args.repeats)]

    labels = [f"a {a} {b}" for a in WORDS for b in THINGS * 4][:1000]
    labels = list(dict.fromkeys(labels))
    labels += [f"label {i}" for i in range(1000 - len(labels))]
    start = time.perf_counter()
    text.head(labels)
    first = time.perf_counter() - start

    def zero_shot_labels():
        zero_shot(loaded.model, base, text.head(labels))

    target = text.target("a red bus")
    report = {
        "model": args.model,
        "weights": "random",
        "threads": args.threads,
        "forward_ms": median_ms(lambda: predict(loaded.model, pixels[None]), args.repeats),
        "new_prompt_map_ms": round(statistics.median(cached), 1),
        "new_prompt_map_text_uncached_ms": round(statistics.median(uncached), 1),
        "capture_with_target_ms": median_ms(
            lambda: explain(capture(loaded.model, pixels, target=target), "chefer"), max(3, args.repeats // 2)
        ),
        "zero_shot_1000_ms": median_ms(zero_shot_labels, args.repeats),
        "zero_shot_1000_first_s": round(first, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
