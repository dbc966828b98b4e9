"""Dataset mode: run a model over many images and write one Parquet row per image, plus a summary.

`process_batch` is the one per-batch function: pixels in, a `pyarrow.Table` of predictions, per-head
statistics and maps out. Two engines feed it: `local` (a torch DataLoader whose worker processes decode
and preprocess while the model runs, in a fixed order) and `ray` (`vit_core.batch_ray`, Ray Data with
one model per actor). Both write `results/` (Parquet part files) and `errors.csv` in the same output
folder; `summary.json` is then computed from what was written, so a resumed run and a Ray run are
summarised exactly like a single local run.

pyarrow is an optional extra (requirements-scale.txt); this module is imported only by the `batch`
command and the dataset benchmark, never by `import vit_core`.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import numpy as np
import torch
from PIL import Image

from vit_core.analysis import attention_entropy, mean_attention_distance
from vit_core.capture import capture_batch, predict
from vit_core.config import DataConfig
from vit_core.errors import VitCoreError
from vit_core.explain import CLASS_SPECIFIC, METHODS, NOT_IMPLEMENTED, explain
from vit_core.images import load_image, model_view
from vit_core.metrics import localization, mean_localization
from vit_core.model import ViT
from vit_core.stats import capture_stats
from vit_core.validate import check_choice, check_range

if TYPE_CHECKING:
    import pyarrow as pa

    from vit_core.zoo import LoadedModel

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
LIST_SUFFIXES = (".txt", ".csv")
MAP_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m not in NOT_IMPLEMENTED)
STREAMING_MAPS = frozenset({"rollout", "attention"})  # maps `capture_stats` computes (explain's default options)
Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = get_args(Engine)
TargetChoice = Literal["top", "true"]
TARGETS: tuple[str, ...] = get_args(TargetChoice)
ROWS_PER_PART = 1024  # rows per local Parquet part file; a resumed run redoes at most this many images
RUN_KEYS = ("model", "weights", "maps", "stats", "target", "top_k")  # settings a resumed run must share


def require(package: str, feature: str) -> Any:
    """Import an optional package (requirements-scale.txt) or refuse with one sentence."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise VitCoreError("optional_package_missing", package=package.split(".")[0], feature=feature) from error


# ---- inputs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputImage:
    path: str  # absolute, as written in the results' `path` column
    name: str  # relative path under its input folder, as listed, or the file name: for masks and PNGs
    folder: str | None  # the class folder's name (ImageFolder layout ROOT/CLASS/...), if there is one


def collect_inputs(inputs: Sequence[str]) -> list[InputImage]:
    """Every image named by `inputs`, in a fixed order: argument by argument, sorted within each.

    An input is a folder (searched recursively for image files; ROOT/CLASS/... gives the class folder),
    a glob pattern (a folder it matches is searched like a folder), a text file with one path per line,
    a CSV file (its `path` column, else its first column), or an image file. Relative paths in a list
    are relative to the list's folder. A file named twice is kept once. A missing input, or none that
    yields an image, is refused with one sentence.
    """
    found: list[InputImage] = []
    seen: set[str] = set()

    def add(path: Path, name: str, folder: str | None) -> None:
        resolved = str(path.resolve())
        if resolved not in seen:
            seen.add(resolved)
            found.append(InputImage(resolved, name, folder))

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            for file in sorted(_image_files(path)):
                relative = file.relative_to(path)
                add(file, relative.as_posix(), relative.parts[0] if len(relative.parts) > 1 else None)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for entry in _read_list(path):
                listed = Path(entry)
                file = listed if listed.is_absolute() else path.parent / listed
                add(file, listed.name if listed.is_absolute() else listed.as_posix(), _parent_name(file))
        elif path.is_file():
            add(path, path.name, _parent_name(path))
        elif glob.has_magic(text):
            base = _static_prefix(text)
            for match in sorted(glob.glob(text, recursive=True)):
                matched = Path(match)
                for file in sorted(_image_files(matched)) if matched.is_dir() else [matched]:
                    if file.is_file():
                        name = file.relative_to(base).as_posix() if file.is_relative_to(base) else file.name
                        add(file, name, _parent_name(file))
        else:
            raise VitCoreError("batch_input_missing", name=text)
    if not found:
        raise VitCoreError("batch_no_images", inputs=", ".join(inputs) or "no input")
    return found


def _image_files(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root) / name


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise VitCoreError("batch_list_unreadable", name=path.name, reason=str(error)) from error
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = [row for row in csv.reader(text.splitlines()) if row and row[0].strip()]
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    column = header.index("path") if "path" in header else 0
    body = rows[1:] if "path" in header else rows
    return [row[column].strip() for row in body if len(row) > column and row[column].strip()]


def _parent_name(path: Path) -> str | None:
    return path.resolve().parent.name or None


def _static_prefix(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (`photos/*/x.jpg` -> `photos`)."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


# ---- true labels -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrueLabels:
    """The class of every image from its class folder's name, or why there is none."""

    indices: dict[str, int] | None  # path -> class index; None when accuracy cannot be computed
    reason: str | None  # why not, in a sentence
    matched_by: dict[str, int]  # {"label": folders named like a label, "synset": folders named by synset id}
    synsets: str  # where ImageNet synset ids come from for this model, or why they do not apply


def imagenet_synsets(labels: Sequence[str] | None) -> list[str] | None:
    """The ImageNet synset id (`n01440764`) of each class, when `labels` are an ImageNet label list in
    ImageNet's order. timm ships the synset lists offline (`timm/data/_info`); a label matches its
    synset's description ("tench, Tinca tinca", timm and transformers) or its first name ("tench",
    torchvision). 95 % of the labels must match: torchvision renames two duplicates ("crane bird")."""
    if not labels:
        return None
    from timm.data import ImageNetInfo

    for subset, count in (("imagenet-1k", 1000), ("imagenet-12k", 11821), ("imagenet-22k", 21841)):
        if len(labels) != count:
            continue
        info = ImageNetInfo(subset)
        hits = 0
        for index, label in enumerate(labels):
            description = info.index_to_description(index).lower()
            hits += label.lower() in (description, description.split(",")[0].strip())
        if hits >= 0.95 * count:
            return [info.index_to_label_name(index) for index in range(count)]
    return None


def match_true_labels(items: Sequence[InputImage], labels: Sequence[str] | None) -> TrueLabels:
    """A folder name maps to a class when it equals one of the model's labels (case-insensitive) or
    that class's ImageNet synset id. Accuracy needs every image in a class folder that maps."""
    try:
        synsets = imagenet_synsets(labels)
    except ImportError:  # timm is a runtime requirement; without it only label names match
        synsets = None
    synset_note = (
        "ImageNet synset ids from timm's offline synset list"
        if synsets
        else "not applicable: the model's labels are not an ImageNet label list"
    )
    if not labels:
        return TrueLabels(None, "the model has no class labels (no classification head)", {}, synset_note)
    by_label = {label.lower(): index for index, label in enumerate(labels)}
    by_synset = {synset.lower(): index for index, synset in enumerate(synsets or [])}
    counts = {"label": 0, "synset": 0}
    indices: dict[str, int] = {}
    unmatched: set[str] = set()
    unfoldered = 0
    for item in items:
        key = (item.folder or "").lower()
        if item.folder is None:
            unfoldered += 1
        elif key in by_label:
            indices[item.path] = by_label[key]
            counts["label"] += 1
        elif key in by_synset:
            indices[item.path] = by_synset[key]
            counts["synset"] += 1
        else:
            unmatched.add(item.folder)
    if unfoldered:
        reason = f"{unfoldered} of {len(items)} images are not in class folders (ROOT/CLASS/IMAGE)"
        return TrueLabels(None, reason, counts, synset_note)
    if unmatched:
        shown = ", ".join(sorted(unmatched)[:5]) + (", ..." if len(unmatched) > 5 else "")
        reason = f"folder names match none of the model's labels or ImageNet synset ids: {shown}"
        return TrueLabels(None, reason, counts, synset_note)
    return TrueLabels(indices, None, counts, synset_note)


# ---- the per-batch function ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchOptions:
    """What to compute for every image. Maps are raw values on the patch grid (`explain`'s defaults)."""

    maps: tuple[str, ...] = ()  # method names of `vit_core.explain`
    stats: bool = False  # per-head attention entropy (nats) and mean attention distance (pixels)
    target: TargetChoice = "top"  # class-specific maps explain the top prediction or the true class
    top_k: int = 5
    labels: tuple[str, ...] | None = None  # the model's class names, for the `top_labels` column
    autocast: torch.dtype | None = None

    def __post_init__(self) -> None:
        for method in self.maps:
            check_choice(method, MAP_METHODS, "method")
        check_choice(self.target, TARGETS, "target")
        check_range(self.top_k, 1, None, "top-k")

    @property
    def class_specific(self) -> bool:
        return any(method in CLASS_SPECIFIC for method in self.maps)

    @property
    def streaming(self) -> bool:
        """Whether the streaming statistics path (`capture_stats`) gives everything asked for: statistics,
        rollout and raw attention with `explain`'s defaults (the only maps a dataset run makes) need no
        `[L, B, H, N, N]` capture; class-specific maps need the full capture and its backward pass."""
        return bool(self.stats or self.maps) and all(method in STREAMING_MAPS for method in self.maps)


def result_schema(model: ViT, grid: tuple[int, int], options: BatchOptions) -> pa.Schema:
    """The columns of every results row; fixed for a run, so every part file and engine agree."""
    import pyarrow as pa

    cfg = model.cfg
    fields = [pa.field("path", pa.string())]
    if model.head is not None:
        k = min(options.top_k, cfg.num_classes)
        fields += [
            pa.field("top_indices", pa.list_(pa.int32(), k)),
            pa.field("top_labels", pa.list_(pa.string(), k)),
            pa.field("top_probs", pa.list_(pa.float32(), k)),
            pa.field("true_index", pa.int32()),  # null when the true class is not known
            pa.field("true_label", pa.string()),
            pa.field("target", pa.int32()),  # the class the class-specific maps explain; null without them
        ]
    if options.stats:
        per_head = pa.list_(pa.list_(pa.float32(), cfg.num_heads), cfg.depth)  # [layer][head]
        fields += [pa.field("entropy", per_head), pa.field("distance", per_head)]
    rows, cols = grid
    fields += [pa.field(f"map_{method}", pa.list_(pa.list_(pa.float32(), cols), rows)) for method in options.maps]
    return pa.schema(fields)


def process_batch(
    model: ViT,
    pixels: torch.Tensor,
    paths: Sequence[str],
    options: BatchOptions,
    true_indices: Sequence[int | None] | None = None,
    *,
    streaming: bool | None = None,
) -> pa.Table:
    """One row per image of `pixels` `[B, C, H, W]`: top-k classes and probabilities, the true class,
    per-head entropy and mean attention distance `[layer, head]`, and each requested map `[rows, cols]`.

    Nothing is captured when only predictions are asked for (the fast path). Statistics, rollout and raw
    attention alone take the streaming statistics path (`capture_stats`: the reductions run inside the
    forward pass and at most one layer's attention exists at a time); class-specific maps take the full
    capture and one backward pass for the whole batch, for the top class or (`target="true"`) the true
    class. `streaming=False` forces the full capture for what the streaming path could do; both write
    the same rows (tested to 1e-5).
    """
    import pyarrow as pa

    batch = pixels.shape[0]
    truth = list(true_indices) if true_indices is not None else [None] * batch
    grid = (pixels.shape[-2] // model.cfg.patch_size, pixels.shape[-1] // model.cfg.patch_size)
    schema = result_schema(model, grid, options)
    columns: dict[str, Any] = {"path": pa.array(list(paths), pa.string())}
    target = None
    if options.class_specific:
        if model.head is None:
            raise VitCoreError("no_head", what="class-specific maps")
        target = "top" if options.target == "top" else truth
        if options.target == "true" and any(t is None for t in truth):
            raise VitCoreError("batch_no_true_labels", reason="an image has no true class")
    if options.streaming and streaming is not False:
        results = _from_stats(model, pixels, options)
    elif options.maps or options.stats:
        results = _from_capture(model, pixels, options, target)
    else:
        results = _BatchResults(logits=None, targets=None, entropy=None, distance=None, maps={})
    if model.head is not None:
        logits = results.logits if results.logits is not None else predict(model, pixels, autocast=options.autocast)
        probs = logits.cpu().double().softmax(-1)
        top_probs, top = probs.topk(min(options.top_k, probs.shape[-1]), dim=-1)  # [B, k], best first
        labels = options.labels
        columns["top_indices"] = _nested(top.numpy().astype(np.int32), pa.int32())
        columns["top_labels"] = _nested(
            np.array([[labels[i] if labels else str(i) for i in row] for row in top.tolist()], dtype=object),
            pa.string(),
        )
        columns["top_probs"] = _nested(top_probs.numpy().astype(np.float32), pa.float32())
        columns["true_index"] = pa.array(truth, pa.int32())
        columns["true_label"] = pa.array([None if t is None or not labels else labels[t] for t in truth], pa.string())
        columns["target"] = pa.array(results.targets or [None] * batch, pa.int32())
    if options.stats:
        columns["entropy"] = _nested(results.entropy, pa.float32())
        columns["distance"] = _nested(results.distance, pa.float32())
    for method in options.maps:
        columns[f"map_{method}"] = _nested(results.maps[method], pa.float32())
    return pa.table([columns[f.name] for f in schema], schema=schema)


@dataclass(frozen=True)
class _BatchResults:
    """What one batch's model run gave, on the host, before it becomes columns."""

    logits: torch.Tensor | None  # [B, classes] float32; None when nothing was captured, or without a head
    targets: list[int] | None  # per image, the class the class-specific maps explain; None without them
    entropy: np.ndarray | None  # [B, layer, head] nats
    distance: np.ndarray | None  # [B, layer, head] pixels
    maps: dict[str, np.ndarray]  # method -> [B, rows, cols] float32


def _from_stats(model: ViT, pixels: torch.Tensor, options: BatchOptions) -> _BatchResults:
    """The streaming statistics path: no `[L, B, H, N, N]` stack, one small host copy."""
    # the rows hold the final prediction only, so the logit lens after every block is not computed
    stats = capture_stats(model, pixels, k=options.top_k, autocast=options.autocast, logit_lens=False).to_numpy()
    maps = {}
    for method in options.maps:
        # explain's defaults: rollout with mean fusion, no discard, from layer 0; raw attention of the readout
        # (the last layer's class row, the attention pool's weights, or the last layer's mean row), head mean
        rows = stats.rollout if method == "rollout" else stats.readout_rows()  # [B, N]
        maps[method] = rows[:, stats.num_prefix_tokens :].reshape(-1, *stats.grid).astype(np.float32)
    logits = None if stats.logits is None else torch.from_numpy(stats.logits)
    return _BatchResults(logits, None, stats.entropy, stats.distance, maps)


def _from_capture(model: ViT, pixels: torch.Tensor, options: BatchOptions, target: Any) -> _BatchResults:
    """The full capture (every layer's attention, and the gradients for class-specific maps), image by image."""
    captures = capture_batch(model, pixels, target=target, autocast=options.autocast)
    logits = torch.from_numpy(np.stack([c.logits for c in captures])) if model.head is not None else None
    entropy = distance = None
    if options.stats:
        entropy = np.stack([attention_entropy(c) for c in captures])
        distance = np.stack([mean_attention_distance(c) for c in captures])
    maps = {method: np.stack([explain(c, method) for c in captures]) for method in options.maps}
    targets = [c.target for c in captures] if target is not None else None
    return _BatchResults(logits, targets, entropy, distance, maps)


def _nested(array: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """`[B, a, b, ...]` -> B fixed-size lists of lists (`[a][b]...`) of `value_type`."""
    import pyarrow as pa

    nested = pa.array(array.reshape(-1).tolist() if array.dtype == object else array.reshape(-1), value_type)
    for size in reversed(array.shape[1:]):
        nested = pa.FixedSizeListArray.from_arrays(nested, size)
    return nested


def unnest(column: pa.ChunkedArray | pa.Array, shape: Sequence[int]) -> np.ndarray:
    """A fixed-size list column back to a numpy array `[rows, *shape]`."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = len(array)
    for _ in shape:
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(rows, *shape)


# ---- CUDA out of memory: halve and retry ------------------------------------------------------------------
T = TypeVar("T")


@dataclass
class BatchFitter:
    """Runs a batch as sub-batches of at most `size` images; on out-of-memory it halves `size` and retries.

    The smaller size is kept for the rest of the run. Once a halved size has worked, `notify` gets one
    sentence naming it; if even one image does not fit, the run stops with one sentence.
    """

    size: int
    device: str = "cuda"
    notify: Callable[[str], None] = field(default=lambda sentence: print(f"warning: {sentence}", file=sys.stderr))
    _failed: int | None = field(default=None, init=False, repr=False)  # the size that last ran out

    def run(self, count: int, fn: Callable[[int, int], T]) -> list[T]:
        """`fn(start, stop)` over `range(count)` in consecutive slices of at most `size` items."""
        results: list[T] = []
        start = 0
        while start < count:
            stop = min(count, start + self.size)
            try:
                results.append(fn(start, stop))
            except torch.OutOfMemoryError:
                if self.size == 1:
                    raise VitCoreError("batch_out_of_memory", device=self.device) from None
                self._failed = self.size if self._failed is None else self._failed
                self.size = max(1, self.size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            if self._failed is not None:
                self.notify(str(VitCoreError("batch_size_reduced", failed=self._failed, size=self.size)))
                self._failed = None
            start = stop
        return results


# ---- decoding -------------------------------------------------------------------------------------------
def decode(path: str, transform: Callable[[Image.Image], torch.Tensor], min_size: int) -> torch.Tensor:
    """One file -> the model's input tensor `[C, H, W]`, or a `VitCoreError` with its one sentence."""
    name = Path(path).name
    try:
        return transform(load_image(path, name=name, min_size=min_size))
    except VitCoreError:
        raise
    except (OSError, ValueError, SyntaxError) as error:  # a decoder that fails only inside the transform
        raise VitCoreError("image_corrupt", name=name) from error


class ImageFiles(torch.utils.data.Dataset):
    """Paths -> (index, input tensor or None, error or None); runs in the DataLoader's worker processes."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor], min_size: int):
        self.paths, self.transform, self.min_size = list(paths), transform, min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, VitCoreError | None]:
        try:
            return index, decode(self.paths[index], self.transform, self.min_size), None
        except VitCoreError as error:
            return index, None, error


@dataclass
class DecodedBatch:
    indices: list[int]  # positions in the run's list of images, of the decoded ones
    pixels: torch.Tensor | None  # [B, C, H, W]; None when every file of the batch failed
    errors: list[tuple[int, VitCoreError]]
    count: int  # files in the batch, decoded or not

    def pin_memory(self) -> DecodedBatch:  # the DataLoader calls this with pin_memory=True
        return dataclasses.replace(self, pixels=None if self.pixels is None else self.pixels.pin_memory())


def collate(items: list[tuple[int, torch.Tensor | None, VitCoreError | None]]) -> DecodedBatch:
    good = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    errors = [(index, error) for index, _, error in items if error is not None]
    pixels = torch.stack([p for _, p in good]) if good else None
    return DecodedBatch([index for index, _ in good], pixels, errors, len(items))


# ---- the output folder ----------------------------------------------------------------------------------
class OutputFolder:
    """DIR/results/ (Parquet parts), DIR/errors.csv, DIR/run.json; what an earlier run already did."""

    def __init__(self, out: str | Path, run: dict[str, Any], resume: bool):
        self.root = Path(out)
        self.results = self.root / "results"
        self.errors_csv = self.root / "errors.csv"
        self.run_json = self.root / "run.json"
        earlier = check_output(out, resume)
        if earlier and self.run_json.exists():
            before = json.loads(self.run_json.read_text())
            changed = [key for key in RUN_KEYS if before.get(key) != run.get(key)]
            if changed:
                raise VitCoreError("batch_resume_mismatch", folder=str(self.root), settings=", ".join(changed))
        self.run_json.write_text(json.dumps(run, indent=2))
        self.done = self._done_paths() if earlier else set()
        self._next_part = 1 + max((int(p.stem.split("-")[1]) for p in self.results.glob("part-*.parquet")), default=-1)
        self._pending: list[pa.Table] = []
        self.written = 0
        self.error_count = 0

    def part_files(self) -> list[Path]:
        return _part_files(self.results)

    def _done_paths(self) -> set[str]:
        import pyarrow.parquet as pq

        done = {str(v) for f in self.part_files() for v in pq.read_table(f, columns=["path"]).column(0).to_pylist()}
        if self.errors_csv.exists():
            with self.errors_csv.open(newline="", encoding="utf-8") as handle:
                done |= {row["path"] for row in csv.DictReader(handle)}
        return done

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        if sum(t.num_rows for t in self._pending) >= ROWS_PER_PART:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows as the next part file, atomically (a temporary name, then a rename)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [t for t in self._pending if t.num_rows]
        self._pending = []
        if not rows:
            return
        final = self.results / f"part-{self._next_part:05d}.parquet"
        temporary = self.results / f".{final.name}.tmp"
        pq.write_table(pa.concat_tables(rows), temporary)
        os.replace(temporary, final)
        self._next_part += 1
        self.written += sum(t.num_rows for t in rows)

    def error(self, path: str, key: str, sentence: str) -> None:
        """One line of errors.csv (path, error key, the one sentence), written at once."""
        new = not self.errors_csv.exists()
        with self.errors_csv.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["path", "key", "error"])
            writer.writerow([path, key, sentence])
        self.error_count += 1

    def read_results(self, columns: list[str] | None = None) -> pa.Table | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.part_files()
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])

    def read_errors(self) -> list[dict[str, str]]:
        if not self.errors_csv.exists():
            return []
        with self.errors_csv.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def check_output(out: str | Path, resume: bool) -> bool:
    """Make the output folder and check that it can be written; True when an earlier run left results
    there (refused unless `resume`)."""
    root = Path(out)
    results = root / "results"
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("")
        probe.unlink()
        for leftover in results.glob(".part-*.tmp"):  # an interrupted write
            leftover.unlink()
    except OSError as error:
        raise VitCoreError("batch_out_unwritable", folder=str(root), reason=_reason(error)) from error
    earlier = bool(_part_files(results)) or (root / "errors.csv").exists()
    if earlier and not resume:
        raise VitCoreError("batch_results_exist", folder=str(root))
    return earlier


def _part_files(results: Path) -> list[Path]:
    return sorted(p for p in results.glob("*.parquet") if not p.name.startswith((".", "_")))


def _reason(error: OSError) -> str:
    return str(error.strerror or error)


# ---- overlays -------------------------------------------------------------------------------------------------
def write_overlays(
    pixels: torch.Tensor, table: pa.Table, names: Sequence[str], folder: Path, data_config: DataConfig
) -> None:
    """`folder/<name without suffix>.<method>.png` for every row and map: the map over the model's input view."""
    from vit_core.overlay import input_view, overlay

    methods = [name.removeprefix("map_") for name in table.column_names if name.startswith("map_")]
    for method in methods:
        column = table.column(f"map_{method}")
        grids = unnest(column, (len(column[0]), len(column[0][0]))) if len(column) else []
        for image, name, grid_map in zip(pixels, names, grids, strict=True):
            target = folder / f"{_safe_stem(name)}.{method}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            overlay(input_view(image, data_config), grid_map).save(target)


def _safe_stem(name: str) -> str:
    """A relative name without its suffix, kept inside the output folder."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        path = Path(path.name)
    return path.with_suffix("").as_posix()


# ---- the run -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """What both engines need: the images still to do and how to treat them."""

    items: list[InputImage]
    true_indices: list[int | None]
    options: BatchOptions
    batch_size: int
    workers: int
    png_dir: Path | None
    data_config: DataConfig
    min_size: int  # the model's input side: JPEGs over 12 MP decode in draft mode down to twice that
    device: str  # where the model runs: the loaded model's device, or for Ray "cpu", "cuda" or "auto"


def run_batch(
    loaded: LoadedModel,
    inputs: Sequence[str] | Sequence[InputImage],
    out: str | Path,
    options: BatchOptions = BatchOptions(),
    *,
    batch_size: int = 16,
    workers: int | None = None,
    masks: str | Path | None = None,
    png: bool = False,
    engine: Engine = "local",
    ray_address: str | None = None,
    ray_device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `loaded` over every image of `inputs` (see `collect_inputs`; or its result) and write
    DIR/results/, DIR/errors.csv, DIR/summary.json.

    Returns the summary. Bad files go to errors.csv and the run goes on; `resume` skips every path
    already in results/ or errors.csv (same model and settings), so no row is written twice. With the
    Ray engine the actors run the model on `ray_device` ("cpu", "cuda", or by default "auto": the
    cluster's GPUs if it has any), wherever `loaded` itself lives. `workers`: decoding processes of the
    local engine, by default `decoding_workers`'s choice.
    """
    require("pyarrow", "the batch command")
    engine = check_choice(engine, ENGINES, "engine")  # type: ignore[assignment]
    check_range(batch_size, 1, None, "batch size")
    workers = decoding_workers(workers, loaded.device)
    masks_dir = Path(masks) if masks is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise VitCoreError("batch_masks_missing", folder=str(masks_dir))
    if options.class_specific and loaded.model.head is None:
        raise VitCoreError("no_head", what="class-specific maps")
    options = dataclasses.replace(options, labels=tuple(loaded.labels) if loaded.labels else None)
    items = list(inputs) if inputs and all(isinstance(i, InputImage) for i in inputs) else collect_inputs(inputs)
    truth = match_true_labels(items, loaded.labels)
    if options.target == "true" and options.class_specific and truth.indices is None:
        raise VitCoreError("batch_no_true_labels", reason=truth.reason)
    run = {
        "model": loaded.name,
        "weights": loaded.weights,
        "maps": list(options.maps),
        "stats": options.stats,
        "target": options.target,
        "top_k": options.top_k,
    }
    folder = OutputFolder(out, run, resume)
    todo = [item for item in items if item.path not in folder.done]
    job = Job(
        items=todo,
        true_indices=[truth.indices.get(item.path) if truth.indices else None for item in todo],
        options=options,
        batch_size=batch_size,
        workers=workers,
        png_dir=folder.root / "png" if png else None,
        data_config=loaded.data_config,
        min_size=max(loaded.data_config.input_size[1:]),
        device=(ray_device or "auto") if engine == "ray" else str(loaded.device),
    )
    started = time.perf_counter()
    if engine == "ray":
        from vit_core.batch_ray import run_ray

        used_batch, device = run_ray(loaded, job, folder, ray_address)
        job = dataclasses.replace(job, device=device)
    else:
        used_batch = run_local(loaded, job, folder, progress)
    seconds = time.perf_counter() - started
    timing = {
        "engine": engine,
        "device": job.device,
        "autocast": str(options.autocast).replace("torch.", "") if options.autocast else "float32",
        "batch_size": batch_size,
        "batch_size_used": used_batch,
        "workers": workers,
        "images_this_run": len(todo),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(todo) / seconds, 2) if seconds > 0 else None,
        "resumed_images": len(items) - len(todo),
    }
    summary = summarize(folder, items, truth, loaded.data_config, masks_dir, {**run, **timing})
    (folder.root / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def decoding_workers(workers: int | None, device: torch.device | str) -> int:
    """`workers` as given, or by default: 2 decoding processes, and none (decoding in this process between
    batches) when the model runs on the CPU with a torch thread on every core the process may use.

    There the processes have no core of their own: each time one decodes, it preempts a thread of the
    model, and the other thread waits for it at the end of the operation. On this project's 2-core
    machine the dataset benchmark (ViT-S/16, batch 16) ran at 0.86 of timm's forward decoding in the
    process and at 0.74 with 2 processes; decoding itself takes about 6 % of the model's time.
    """
    if workers is not None:
        return int(check_range(workers, 0, None, "workers"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if torch.device(device).type == "cpu" and torch.get_num_threads() >= cores else 2


def run_local(loaded: LoadedModel, job: Job, folder: OutputFolder, progress: bool = True) -> int:
    """The local engine: a DataLoader decodes in `job.workers` processes, in order; returns the batch size used."""
    from tqdm import tqdm

    paths = [item.path for item in job.items]
    cuda = loaded.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths, loaded.transform, job.min_size),
        batch_size=job.batch_size,
        shuffle=False,
        num_workers=job.workers,
        collate_fn=collate,
        pin_memory=cuda,
    )
    with tqdm(total=len(paths), unit="img", desc="batch", disable=not progress, dynamic_ncols=True) as bar:
        fitter = BatchFitter(job.batch_size, str(loaded.device), notify=lambda text: bar.write(f"warning: {text}"))
        try:
            for decoded in loader:
                for index, error in decoded.errors:
                    folder.error(paths[index], error.key, str(error))
                if decoded.pixels is not None:
                    run_decoded(loaded.model, decoded, job, folder, fitter)
                bar.update(decoded.count)
        finally:  # also when interrupted: what is done stays done for --resume
            folder.flush()
    return fitter.size


def run_decoded(model: ViT, decoded: DecodedBatch, job: Job, folder: OutputFolder, fitter: BatchFitter) -> None:
    """`process_batch` over one decoded batch, in sub-batches that fit; rows to `folder`, overlays to PNG."""
    indices = decoded.indices

    def one(start: int, stop: int) -> pa.Table:
        chosen = indices[start:stop]
        return process_batch(
            model,
            decoded.pixels[start:stop],
            [job.items[i].path for i in chosen],
            job.options,
            [job.true_indices[i] for i in chosen],
        )

    tables = fitter.run(len(indices), one)
    offset = 0
    for table in tables:
        folder.add(table)
        if job.png_dir is not None and job.options.maps:
            chosen = indices[offset : offset + table.num_rows]
            names = [job.items[i].name for i in chosen]
            write_overlays(decoded.pixels[offset : offset + table.num_rows], table, names, job.png_dir, job.data_config)
        offset += table.num_rows


# ---- the summary -----------------------------------------------------------------------------------------------
def summarize(
    folder: OutputFolder,
    items: Sequence[InputImage],
    truth: TrueLabels,
    data_config: DataConfig,
    masks_dir: Path | None,
    run: dict[str, Any],
) -> dict[str, Any]:
    """summary.json from everything in results/ (earlier runs included): accuracy, per-head statistics over
    the dataset (mean and std per layer and head), localization against masks, and the run's speed."""
    table = folder.read_results()
    errors = folder.read_errors()
    rows = 0 if table is None else table.num_rows
    summary: dict[str, Any] = {**run, "images": rows, "errors": len(errors)}
    summary["labels"] = {"matched_by": truth.matched_by, "synsets": truth.synsets}
    summary.update(_accuracy(table, truth))
    if table is not None and "entropy" in table.column_names and rows:
        summary["head_stats"] = {
            "entropy": _mean_std(table.column("entropy"), "nats"),
            "distance": _mean_std(table.column("distance"), "pixels"),
        }
    if masks_dir is not None:
        summary["localization"] = _localization(table, items, data_config, masks_dir)
    return summary


def _accuracy(table: pa.Table | None, truth: TrueLabels) -> dict[str, Any]:
    if truth.reason is not None:
        return {"accuracy": None, "accuracy_reason": truth.reason}
    if table is None or "top_indices" not in table.column_names or not table.num_rows:
        return {"accuracy": None, "accuracy_reason": "no image was analysed"}
    true = np.array(table.column("true_index").to_pylist(), dtype=np.int64)
    k = table.schema.field("top_indices").type.list_size
    top = unnest(table.column("top_indices"), (k,))
    return {
        "accuracy": float(np.mean(top[:, 0] == true)),
        f"top{k}_accuracy": float(np.mean((top == true[:, None]).any(axis=1))),
        "accuracy_reason": None,
    }


def _mean_std(column: pa.ChunkedArray, unit: str) -> dict[str, Any]:
    layers = column.type.list_size
    heads = column.type.value_type.list_size
    values = unnest(column, (layers, heads)).astype(np.float64)  # [images, layer, head]
    return {
        "unit": unit,
        "mean": np.round(values.mean(axis=0), 6).tolist(),  # [layer][head]
        "std": np.round(values.std(axis=0), 6).tolist(),
    }


def find_mask(masks_dir: Path, name: str) -> Path | None:
    """The mask of image `name`: the same relative path or file name, as is or as .png (or `<stem>_mask.png`)."""
    relative = Path(_safe_stem(name))
    suffix = Path(name).suffix
    for stem in dict.fromkeys([relative, Path(relative.name)]):
        for candidate in (f"{stem}{suffix}", f"{stem}.png", f"{stem}_mask.png"):
            if (masks_dir / candidate).is_file():
                return masks_dir / candidate
    return None


def model_mask(path: Path, data_config: DataConfig) -> np.ndarray:
    """A mask file as the model sees its image: the preprocessing's crop, resized to the input, `[H, W]` bool."""
    mask = Image.open(path)
    mask.load()
    view = model_view(mask.size, data_config)
    if view.box is not None:
        mask = mask.crop(tuple(round(v) for v in view.box))
    height, width = data_config.input_size[1:]
    gray = np.asarray(mask.convert("L").resize((width, height), Image.Resampling.NEAREST))
    return gray >= 128


def _localization(
    table: pa.Table | None, items: Sequence[InputImage], data_config: DataConfig, masks_dir: Path
) -> dict[str, Any]:
    """Pointing game, IoU and mass inside the mask (`vit_core.metrics`) per map, over images with a mask."""
    names = {item.path: item.name for item in items}
    methods = [c.removeprefix("map_") for c in table.column_names if c.startswith("map_")] if table else []
    scores: dict[str, list] = {method: [] for method in methods}
    found = missing = unreadable = 0
    if table is not None and methods:
        paths = table.column("path").to_pylist()
        grids = {}
        for method in methods:
            column = table.column(f"map_{method}")
            grids[method] = unnest(column, (column.type.list_size, column.type.value_type.list_size))
        for row, path in enumerate(paths):
            mask_path = find_mask(masks_dir, names.get(path, Path(path).name))
            if mask_path is None:
                missing += 1
                continue
            try:
                mask = model_mask(mask_path, data_config)
            except (OSError, ValueError, SyntaxError):
                unreadable += 1
                continue
            found += 1
            for method in methods:
                scores[method].append(localization(grids[method][row], mask))
    report: dict[str, Any] = {"masks_found": found, "masks_missing": missing, "masks_unreadable": unreadable}
    if not methods:
        report["note"] = "no maps were requested, so there is nothing to score"
    for method, values in scores.items():
        report[method] = mean_localization(values) if values else None
    return report
