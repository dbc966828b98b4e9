"""The Ray engine of the dataset mode: the same `process_batch` through Ray Data, for clusters.

Decoding runs as Ray tasks; the model runs in an actor pool, one model per actor (one GPU each on
CUDA). The weights travel once through Ray's object store, so workers need neither the hub nor the
weights file. Ray writes the results/ Parquet files itself; bad files come back to the driver for
errors.csv. Ray is an optional extra (requirements-scale.txt).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vit_core.batch import (
    BatchFitter,
    BatchOptions,
    Job,
    OutputFolder,
    decode,
    process_batch,
    require,
    result_schema,
    write_overlays,
)
from vit_core.config import DataConfig, ViTConfig
from vit_core.errors import VitCoreError

if TYPE_CHECKING:
    import pyarrow as pa

    from vit_core.zoo import LoadedModel

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # /dev/shm is small in containers (Docker's default: 64 MB)
CONNECT_TIMEOUT_S = 8.0  # an unreachable cluster is reported well within 10 s
ERROR_COLUMNS = ("error_key", "error")
FITTED_COLUMN = "batch_size_fitted"  # per row: the batch size its actor's model ran at (null for a bad file)


def connect(address: str | None = None, num_cpus: int | None = None, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Join the cluster at `address` ("auto": the one running on this machine; "ray://HOST:PORT": Ray
    Client), or start a local Ray when `address` is None. Returns True when Ray was started here (the
    caller shuts it down). A cluster that cannot be reached is refused within `timeout_s`."""
    ray = require("ray", "the Ray engine")
    deadline = time.monotonic() + timeout_s
    if address is not None:
        _probe(_resolve(address), address, deadline)
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 2,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}},  # workers import vit_core from here
        )
        return True
    # Workers on other machines get this vit_core (torch, timm and pyarrow must be installed there).
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parent)]}
    failure: list[BaseException] = []

    def join() -> None:
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except Exception as error:  # reported below as one sentence
            failure.append(error)

    worker = threading.Thread(target=join, daemon=True)
    worker.start()
    worker.join(max(0.5, deadline - time.monotonic()))
    if worker.is_alive():
        raise VitCoreError("ray_unreachable", address=address, reason=f"no answer within {timeout_s:.0f} s")
    if failure:
        raise VitCoreError("ray_unreachable", address=address, reason=_first_line(failure[0])) from failure[0]
    return True


def _pythonpath() -> str:
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return root + (os.pathsep + existing if existing else "")


def _resolve(address: str) -> str:
    """HOST:PORT of the cluster's head for `address` ("auto" is looked up as Ray would)."""
    if address.startswith("ray://"):
        return address.removeprefix("ray://")
    try:
        from ray._private.services import canonicalize_bootstrap_address  # Ray's own lookup of "auto"

        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError as error:
        raise VitCoreError("ray_unreachable", address=address, reason=_first_line(error)) from error
    except (ImportError, ValueError):
        resolved = None if address == "auto" else address
    if resolved is None:
        raise VitCoreError("ray_unreachable", address=address, reason="no running Ray cluster was found")
    return resolved


def _probe(host_port: str, address: str, deadline: float) -> None:
    """A TCP connection to the head: Ray itself retries an unreachable address for minutes."""
    host, _, port = host_port.rpartition(":")
    if not port.isdigit():
        raise VitCoreError("ray_unreachable", address=address, reason="expected HOST:PORT")
    timeout = max(0.5, min(3.0, deadline - time.monotonic()))
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else str(error.strerror or error)
        raise VitCoreError("ray_unreachable", address=address, reason=reason) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0].rstrip(".") if text else type(error).__name__


# ---- the pipeline --------------------------------------------------------------------------------------------
def decode_rows(batch: dict[str, np.ndarray], transform: Any, min_size: int, input_size: tuple) -> dict:
    """A Ray task: paths -> input tensors; a bad file keeps its row, with zeros and its error sentence."""
    pixels = np.zeros((len(batch["path"]), *input_size), dtype=np.float32)
    keys, sentences = [], []
    for row, path in enumerate(batch["path"]):
        try:
            pixels[row] = decode(str(path), transform, min_size).numpy()
            keys.append("")
            sentences.append("")
        except VitCoreError as error:
            keys.append(error.key)
            sentences.append(str(error))
    errors = {"error_key": np.array(keys, dtype=object), "error": np.array(sentences, dtype=object)}
    return {**batch, "pixels": pixels, **errors}


class ModelActor:
    """One model per actor: `process_batch` on each decoded batch; error rows pass through with nulls."""

    def __init__(
        self,
        cfg: ViTConfig,
        state: dict[str, torch.Tensor],
        options: BatchOptions,
        device: str,
        batch_size: int,
        png_dir: str | None,
        data_config: DataConfig,
        threads: int,
    ) -> None:
        from vit_core.model import vit_from_state_dict

        torch.set_num_threads(max(1, threads))
        self.model = vit_from_state_dict(cfg, state).to(device)
        self.options = options
        self.fitter = BatchFitter(batch_size, device)
        self.png_dir = Path(png_dir) if png_dir else None
        self.data_config = data_config

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import pyarrow as pa

        good = np.flatnonzero(batch["error_key"] == "")
        bad = np.flatnonzero(batch["error_key"] != "")
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][good]))
        paths = [str(p) for p in batch["path"][good]]
        truth = [None if t < 0 else int(t) for t in batch["true_index"][good]]
        names = [str(n) for n in batch["name"][good]]

        def one(start: int, stop: int) -> pa.Table:
            return process_batch(self.model, pixels[start:stop], paths[start:stop], self.options, truth[start:stop])

        tables = self.fitter.run(len(good), one) if len(good) else []
        if self.png_dir is not None and self.options.maps:
            offset = 0
            for table in tables:
                rows = slice(offset, offset + table.num_rows)
                write_overlays(pixels[rows], table, names[rows], self.png_dir, self.data_config)
                offset += table.num_rows
        grid = (pixels.shape[-2] // self.model.cfg.patch_size, pixels.shape[-1] // self.model.cfg.patch_size)
        schema = result_schema(self.model, grid, self.options)
        failed = pa.table(
            [pa.array([str(p) for p in batch["path"][bad]], pa.string())]
            + [pa.nulls(len(bad), f.type) for f in schema][1:],
            schema=schema,
        )
        rows = pa.concat_tables([*tables, failed]) if tables else failed
        flags = [None] * (rows.num_rows - len(bad))
        rows = rows.append_column("error_key", pa.array(flags + [str(k) for k in batch["error_key"][bad]], pa.string()))
        rows = rows.append_column("error", pa.array(flags + [str(e) for e in batch["error"][bad]], pa.string()))
        # the fitter keeps a halved size for the rest of the run: the smallest over the rows is what fitted
        fitted = [self.fitter.size] * (rows.num_rows - len(bad)) + [None] * len(bad)
        return rows.append_column(FITTED_COLUMN, pa.array(fitted, pa.int32()))


def _good_rows(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return table.filter(pc.is_null(table.column("error_key"))).drop_columns([*ERROR_COLUMNS, FITTED_COLUMN])


def _error_rows(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return table.filter(pc.is_valid(table.column("error_key"))).select(["path", *ERROR_COLUMNS])


def run_ray(loaded: LoadedModel, job: Job, folder: OutputFolder, address: str | None = None) -> tuple[int, str]:
    """Run `job` through Ray Data and write folder/results/ (Ray's own part files) and errors.csv.

    Returns the batch size that fitted (the smallest any actor ran at after halving on out-of-memory) and
    the actors' device ("auto": "cuda" when the cluster has GPUs)."""
    require("ray.data", "the Ray engine")
    import ray

    started = connect(address)
    try:
        resources = ray.cluster_resources()
        device = job.device
        if device == "auto":
            device = "cuda" if resources.get("GPU", 0) >= 1 else "cpu"
        if device not in ("cpu", "cuda"):
            raise VitCoreError("unknown_device", device=device)
        if device == "cuda" and resources.get("GPU", 0) < 1:  # actors asking for a GPU would wait forever
            raise VitCoreError("cuda_unavailable", device=device)
        cuda = device == "cuda"
        if not job.items:
            return job.batch_size, device
        rows = [
            {"path": item.path, "name": item.name, "true_index": -1 if truth is None else truth}
            for item, truth in zip(job.items, job.true_indices, strict=True)
        ]
        actors = max(1, int(resources.get("GPU", 1))) if cuda else max(1, int(resources.get("CPU", 2)) // 2)
        state = {name: tensor.detach().cpu() for name, tensor in loaded.model.state_dict().items()}
        blocks = max(1, -(-len(rows) // job.batch_size))
        decoded = ray.data.from_items(rows, override_num_blocks=min(blocks, 1000)).map_batches(
            decode_rows,
            batch_size=job.batch_size,
            batch_format="numpy",
            fn_kwargs={
                "transform": loaded.transform,
                "min_size": job.min_size,
                "input_size": tuple(job.data_config.input_size),
            },
            num_cpus=1,
        )
        scored = decoded.map_batches(
            ModelActor,
            batch_size=job.batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={
                "cfg": loaded.cfg,
                "state": state,
                "options": job.options,
                "device": device,
                "batch_size": job.batch_size,
                "png_dir": str(job.png_dir) if job.png_dir else None,
                "data_config": job.data_config,
                "threads": 1,
            },
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            num_cpus=1,
            num_gpus=1 if cuda else 0,
        ).materialize()
        scored.map_batches(_good_rows, batch_format="pyarrow").write_parquet(str(folder.results))
        for error in scored.map_batches(_error_rows, batch_format="pyarrow").take_all():
            folder.error(error["path"], error["error_key"], error["error"])
        fitted = scored.min(FITTED_COLUMN)  # None when every file was bad
        return (job.batch_size if fitted is None else int(fitted)), device
    finally:
        if started:
            ray.shutdown()
