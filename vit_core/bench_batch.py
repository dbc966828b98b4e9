"""The dataset benchmark: images/s of a whole `batch --stats --maps rollout` run, JPEG decoding and
Parquet writing included, against the source library's plain forward on already-preprocessed tensors
at the same batch size (timm with fused attention for a timm model), measured in the same process.

`make_photos` writes synthetic photo-like JPEGs (256-640 px a side) for it; speed depends on their
sizes, not on what they show.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vit_core.batch import BatchOptions, collect_inputs, decode, decoding_workers, run_batch
from vit_core.zoo import LoadedModel


def make_photos(folder: str | Path, count: int, seed: int = 0, sizes: tuple[int, int] = (256, 640)) -> list[Path]:
    """`count` JPEGs of random sizes within `sizes`: smooth colour fields with grain, quality 90."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for index in range(count):
        width, height = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
        coarse = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8), "RGB")
        field = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, size=(height, width, 1), dtype=np.int16)
        pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
        path = out / f"photo_{index:04d}.jpg"
        Image.fromarray(pixels, "RGB").save(path, quality=90)
        written.append(path)
    return written


def _reference_forward(reference: torch.nn.Module):
    if type(reference).__module__.startswith("transformers"):
        return lambda pixels: reference(pixel_values=pixels)
    return reference


def bench_dataset(
    loaded: LoadedModel,
    folder: str | Path,
    batch_size: int = 16,
    workers: int | None = None,
    repeats: int = 3,
    autocast: torch.dtype | None = None,
) -> dict:
    """Median images/s over `repeats` interleaved passes of: the reference's plain forward over every
    image of `folder` (preprocessed beforehand, not timed) and `run_batch(--stats --maps rollout)` end to
    end into a fresh output folder. One untimed warm-up of each comes first. `workers`: decoding
    processes (by default `vit_core.batch.decoding_workers`'s choice, as the `batch` command)."""
    items = collect_inputs([str(folder)])
    paths = [item.path for item in items]
    min_size = max(loaded.data_config.input_size[1:])
    tensors = torch.stack([decode(path, loaded.transform, min_size) for path in paths])  # [N, C, H, W]
    device = loaded.device
    workers = decoding_workers(workers, device)
    reference = loaded.make_reference().to(device).eval()
    forward = _reference_forward(reference)
    options = BatchOptions(maps=("rollout",), stats=True, autocast=autocast)

    def reference_pass(images: torch.Tensor) -> None:
        precision = torch.autocast(device.type, dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
        with torch.inference_mode(), precision:
            for start in range(0, len(images), batch_size):
                forward(images[start : start + batch_size].to(device))
            if device.type == "cuda":
                torch.cuda.synchronize()

    scratch = Path(tempfile.mkdtemp(prefix="vit-bench-batch-"))
    try:

        def ours_pass(name: str, inputs: list[str]) -> dict:
            return run_batch(
                loaded, inputs, scratch / name, options, batch_size=batch_size, workers=workers, progress=False
            )

        reference_pass(tensors[:batch_size])  # warm-up
        ours_pass("warmup", paths[:batch_size])
        reference_seconds, ours_seconds = [], []
        for round_index in range(repeats):
            start = time.perf_counter()
            reference_pass(tensors)
            reference_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            summary = ours_pass(f"run{round_index}", [str(folder)])
            ours_seconds.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sizes = [Image.open(path).size for path in paths]
    reference_ips = len(paths) / statistics.median(reference_seconds)
    ours_ips = len(paths) / statistics.median(ours_seconds)
    return {
        "model": loaded.name,
        "weights": loaded.weights,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": batch_size,
        "workers": workers,
        "images": len(paths),
        "image_sides_px": [min(min(s) for s in sizes), max(max(s) for s in sizes)],
        "repeats": repeats,
        "autocast": str(autocast).replace("torch.", "") if autocast else "float32",
        "reference_images_per_s": round(reference_ips, 2),
        "batch_images_per_s": round(ours_ips, 2),
        "ratio": round(ours_ips / reference_ips, 3),
        "what": (
            "batch: `batch --stats --maps rollout` end to end (decoding in `workers` processes, or between batches "
            "with 0; the streaming statistics path with rollout, Parquet, summary); reference: plain forward on "
            "preprocessed tensors"
        ),
        "errors": summary["errors"],
        "torch": torch.__version__,
    }
