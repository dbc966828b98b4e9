"""Dataset mode: inputs, true labels, the Parquet rows, summary.json, errors.csv, resume, the CLI, the
out-of-memory fallback, the dataset benchmark and the Ray engine (one local Ray for the session)."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import need
from vit_core import capture
from vit_core.analysis import attention_entropy, mean_attention_distance
from vit_core.errors import VitCoreError
from vit_core.explain import explain
from vit_core.scenes import CLASSES, scene_batch
from vit_core.zoo import load_model

pa = need("pyarrow")
pq = need("pyarrow.parquet")

from vit_core import batch  # noqa: E402  (needs pyarrow)
from vit_core.batch import (  # noqa: E402
    BatchFitter,
    BatchOptions,
    InputImage,
    collect_inputs,
    decode,
    match_true_labels,
    run_batch,
    unnest,
)
from vit_core.cli import main  # noqa: E402

SCENES = 10  # images in the class-folder dataset, plus one corrupt file


@pytest.fixture(scope="module")
def bundled():
    return load_model("bundled", device="cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """ShapeScenes in an ImageFolder layout (ROOT/<class>/NN.png), masks with the same relative names in
    a sibling folder, and one corrupt JPEG."""
    root = tmp_path_factory.mktemp("dataset")
    for index, item in enumerate(scene_batch(7, 0, SCENES)):
        for folder, array in (("images", item.image), ("masks", item.mask.astype(np.uint8) * 255)):
            target = root / folder / CLASSES[item.label] / f"{index:02d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(target)
    broken = root / "images" / "circle" / "broken.jpg"
    broken.parent.mkdir(exist_ok=True)
    Image.fromarray(item.image).save(broken, quality=90)
    broken.write_bytes(broken.read_bytes()[:700])  # a truncated JPEG: its header reads, its pixels do not
    return root


OPTIONS = BatchOptions(maps=("rollout", "chefer"), stats=True)


@pytest.fixture(scope="module")
def local_run(bundled, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    summary = run_batch(
        bundled,
        [str(dataset / "images")],
        out,
        OPTIONS,
        batch_size=4,
        workers=2,
        masks=dataset / "masks",
        png=True,
        progress=False,
    )
    return out, summary


def table_of(out: Path) -> "pa.Table":
    files = sorted((out / "results").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


# ---- inputs and labels ----------------------------------------------------------------------------------
def test_inputs_from_folders_globs_and_lists_in_a_fixed_order(tmp_path):
    for name in ("b/2.png", "a/1.jpg", "a/.hidden.png", "a/notes.txt", "top.webp", ".cache/x.png"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"x")
    data = tmp_path / "data"
    items = collect_inputs([str(data)])
    assert [i.name for i in items] == ["a/1.jpg", "b/2.png", "top.webp"]  # recursive, sorted, hidden skipped
    assert [i.folder for i in items] == ["a", "b", None]  # ROOT/CLASS/... ; a file in ROOT has no class
    assert all(Path(i.path).is_absolute() for i in items)
    globbed = collect_inputs([str(data / "*" / "*.png"), str(data / "a" / "1.jpg")])
    assert [i.name for i in globbed] == ["b/2.png", "1.jpg"]
    (tmp_path / "list.txt").write_text("# photos\ndata/b/2.png\n\ndata/a/1.jpg\ndata/b/2.png\n")
    assert [i.name for i in collect_inputs([str(tmp_path / "list.txt")])] == ["data/b/2.png", "data/a/1.jpg"]
    (tmp_path / "list.csv").write_text("label,path\nx,data/top.webp\ny,data/a/1.jpg\n")
    listed = collect_inputs([str(tmp_path / "list.csv"), str(data)])  # a file named twice is kept once
    assert [i.name for i in listed] == ["data/top.webp", "data/a/1.jpg", "b/2.png"]
    with pytest.raises(VitCoreError) as missing:
        collect_inputs([str(tmp_path / "nowhere")])
    assert missing.value.key == "batch_input_missing"
    (tmp_path / "empty").mkdir()
    with pytest.raises(VitCoreError) as empty:
        collect_inputs([str(tmp_path / "empty"), str(tmp_path / "*.jpg")])
    assert empty.value.key == "batch_no_images"


def item(folder: str | None, name: str = "x.jpg") -> InputImage:
    return InputImage(f"/data/{folder}/{name}", name, folder)


def test_true_labels_from_label_names_or_imagenet_synsets():
    labels = ["Circle", "square"]
    truth = match_true_labels([item("circle"), item("SQUARE", "y.jpg")], labels)
    assert truth.indices == {"/data/circle/x.jpg": 0, "/data/SQUARE/y.jpg": 1} and truth.reason is None
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    timm_labels = [info.index_to_description(i) for i in range(1000)]  # "tench, Tinca tinca"
    torchvision_like = [label.split(",")[0] for label in timm_labels]  # "tench"
    for imagenet in (timm_labels, torchvision_like):
        truth = match_true_labels([item("n01440764"), item("n01443537", "y.jpg")], imagenet)
        assert list(truth.indices.values()) == [0, 1] and truth.matched_by == {"label": 0, "synset": 2}
        assert "synset" in truth.synsets
    assert batch.imagenet_synsets(labels) is None
    unmatched = match_true_labels([item("circle"), item("dogs")], labels)
    assert unmatched.indices is None and "dogs" in unmatched.reason
    flat = match_true_labels([item(None)], labels)
    assert flat.indices is None and "class folders" in flat.reason
    assert match_true_labels([item("circle")], None).reason.startswith("the model has no class labels")


# ---- the local engine ----------------------------------------------------------------------------------
def test_results_are_one_parquet_row_per_good_image_in_input_order(local_run, bundled, dataset):
    out, _ = local_run
    table = table_of(out)
    expected = [i.path for i in collect_inputs([str(dataset / "images")]) if not i.path.endswith("broken.jpg")]
    assert table.column("path").to_pylist() == expected  # deterministic order, the bad file left out
    k, depth, heads, grid = 5, bundled.cfg.depth, bundled.cfg.num_heads, bundled.cfg.grid
    schema = table.schema
    assert schema.names == [
        "path",
        "top_indices",
        "top_labels",
        "top_probs",
        "true_index",
        "true_label",
        "target",
        "entropy",
        "distance",
        "map_rollout",
        "map_chefer",
    ]
    assert schema.field("top_indices").type == pa.list_(pa.int32(), k)
    assert schema.field("top_labels").type == pa.list_(pa.string(), k)
    assert schema.field("entropy").type == pa.list_(pa.list_(pa.float32(), heads), depth)
    assert schema.field("map_rollout").type == pa.list_(pa.list_(pa.float32(), grid[1]), grid[0])
    # the first row against a single-image capture through the library
    path = expected[0]
    single = capture(bundled.model, decode(path, bundled.transform, 96), target="top")
    row = table.slice(0, 1)
    assert row.column("top_indices")[0].as_py()[0] == int(np.argmax(single.logits)) == row.column("target")[0].as_py()
    assert row.column("top_labels")[0].as_py()[0] == bundled.labels[int(np.argmax(single.logits))]
    assert row.column("true_label")[0].as_py() == Path(path).parent.name
    assert np.allclose(unnest(row.column("entropy"), (depth, heads))[0], attention_entropy(single), atol=1e-5)
    assert np.allclose(unnest(row.column("distance"), (depth, heads))[0], mean_attention_distance(single), atol=1e-4)
    for method in ("rollout", "chefer"):
        assert np.allclose(unnest(row.column(f"map_{method}"), grid)[0], explain(single, method), atol=1e-5)
    probs = unnest(table.column("top_probs"), (k,))
    assert np.all(np.diff(probs, axis=1) <= 0) and np.all(probs.sum(1) <= 1 + 1e-5)


def test_summary_has_accuracy_head_statistics_localization_and_speed(local_run, bundled):
    out, summary = local_run
    assert json.loads((out / "summary.json").read_text()) == summary
    table = table_of(out)
    top = unnest(table.column("top_indices"), (5,))[:, 0]
    true = np.array(table.column("true_index").to_pylist())
    assert summary["images"] == SCENES and summary["errors"] == 1
    assert summary["accuracy"] == pytest.approx(np.mean(top == true)) and summary["accuracy_reason"] is None
    assert summary["labels"]["matched_by"] == {"label": SCENES + 1, "synset": 0}
    entropy = unnest(table.column("entropy"), (bundled.cfg.depth, bundled.cfg.num_heads)).astype(np.float64)
    assert np.allclose(summary["head_stats"]["entropy"]["mean"], entropy.mean(0), atol=1e-5)
    assert np.allclose(summary["head_stats"]["entropy"]["std"], entropy.std(0), atol=1e-5)
    assert summary["head_stats"]["distance"]["unit"] == "pixels"
    local = summary["localization"]
    assert local["masks_found"] == SCENES and local["masks_missing"] == 0
    assert set(local["rollout"]) == {"pointing", "iou", "mass_inside"} and local["rollout"]["pointing"] >= 0.8
    assert summary["device"] == "cpu" and summary["batch_size"] == 4 and summary["batch_size_used"] == 4
    assert summary["images_per_second"] > 0 and summary["engine"] == "local"


def test_a_corrupt_file_goes_to_errors_csv_and_overlays_are_written(local_run, dataset):
    out, _ = local_run
    with (out / "errors.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["path"].endswith("broken.jpg") and rows[0]["key"] == "image_corrupt"
    assert rows[0]["error"] == "broken.jpg is truncated or corrupt and cannot be decoded."
    pngs = sorted((out / "png").rglob("*.png"))
    assert len(pngs) == 2 * SCENES
    assert Image.open(pngs[0]).size == (96, 96) and pngs[0].name.endswith((".chefer.png", ".rollout.png"))


def test_resume_after_an_interruption_writes_no_duplicate_rows(bundled, dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    images = [str(dataset / "images")]
    calls = []
    real = batch.process_batch

    def interrupted(model, pixels, paths, *args):
        calls.append(len(paths))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, pixels, paths, *args)

    monkeypatch.setattr(batch, "ROWS_PER_PART", 2)
    monkeypatch.setattr(batch, "process_batch", interrupted)
    options = BatchOptions(maps=("rollout",))
    with pytest.raises(KeyboardInterrupt):
        run_batch(bundled, images, out, options, batch_size=2, workers=0, progress=False)
    done = table_of(out).column("path").to_pylist()
    assert len(done) == sum(calls[:2]) >= 3  # the two batches before the interruption were written
    failed_before = len(list(csv.DictReader((out / "errors.csv").open()))) if (out / "errors.csv").exists() else 0
    monkeypatch.setattr(batch, "process_batch", real)
    with pytest.raises(VitCoreError) as exists:  # without resume an earlier run is never overwritten
        run_batch(bundled, images, out, options, workers=0, progress=False)
    assert exists.value.key == "batch_results_exist"
    with pytest.raises(VitCoreError) as changed:
        run_batch(bundled, images, out, BatchOptions(maps=("chefer",)), workers=0, resume=True, progress=False)
    assert changed.value.key == "batch_resume_mismatch" and "maps" in str(changed.value)
    summary = run_batch(bundled, images, out, options, batch_size=4, workers=0, resume=True, progress=False)
    paths = table_of(out).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == SCENES and set(done) < set(paths)
    assert summary["resumed_images"] == len(done) + failed_before
    assert summary["images"] == SCENES and summary["errors"] == 1
    again = run_batch(bundled, images, out, options, workers=0, resume=True, progress=False)
    assert again["images_this_run"] == 0 and again["images"] == SCENES and again["errors"] == 1
    assert len(list(csv.DictReader((out / "errors.csv").open()))) == 1


def test_target_true_explains_the_true_class_and_needs_class_folders(bundled, dataset, tmp_path):
    paths = sorted((dataset / "images").rglob("0*.png"))[:4]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    options = BatchOptions(maps=("chefer",), target="true")
    run_batch(bundled, [str(listing)], tmp_path / "out", options, workers=0, progress=False)
    table = table_of(tmp_path / "out")
    assert table.column("target").to_pylist() == table.column("true_index").to_pylist()
    assert table.column("true_label").to_pylist() == [p.parent.name for p in paths]
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.open(paths[0]).save(flat / "a.png")
    with pytest.raises(VitCoreError) as refused:
        run_batch(bundled, [str(flat)], tmp_path / "out2", options, workers=0, progress=False)
    assert refused.value.key == "batch_no_true_labels"
    summary = run_batch(bundled, [str(flat)], tmp_path / "out3", BatchOptions(), workers=0, progress=False)
    assert summary["accuracy"] is None and "class folders" in summary["accuracy_reason"]
    assert "entropy" not in table_of(tmp_path / "out3").column_names


def test_statistics_and_class_agnostic_maps_stream_and_write_the_rows_of_the_full_capture(
    bundled, dataset, tmp_path, monkeypatch
):
    """`--stats --maps rollout,attention` takes `capture_stats`, never the full capture; its Parquet rows
    equal those of the full-capture path (forced with streaming=False) to 1e-5."""
    images = [str(dataset / "images")]
    options = BatchOptions(maps=("rollout", "attention"), stats=True)
    assert options.streaming and not BatchOptions(maps=("rollout", "chefer"), stats=True).streaming
    assert BatchOptions(stats=True).streaming and not BatchOptions().streaming
    real_capture, real_process = batch.capture_batch, batch.process_batch
    streamed = []

    def no_capture(*args, **kwargs):
        raise AssertionError("the streaming path made a full capture")

    def counted(*args, **kwargs):
        streamed.append(1)
        return real_stats(*args, **kwargs)

    real_stats = batch.capture_stats
    monkeypatch.setattr(batch, "capture_batch", no_capture)
    monkeypatch.setattr(batch, "capture_stats", counted)
    run_batch(bundled, images, tmp_path / "streamed", options, batch_size=4, workers=0, progress=False)
    assert len(streamed) == 3  # 10 images in batches of 4
    monkeypatch.setattr(batch, "capture_batch", real_capture)
    monkeypatch.setattr(batch, "capture_stats", no_capture)
    monkeypatch.setattr(batch, "process_batch", lambda *args: real_process(*args, streaming=False))
    run_batch(bundled, images, tmp_path / "captured", options, batch_size=4, workers=0, progress=False)
    ours, full = table_of(tmp_path / "streamed"), table_of(tmp_path / "captured")
    assert ours.schema.equals(full.schema) and ours.num_rows == full.num_rows == SCENES
    for name in full.column_names:
        if name in ("top_probs", "entropy", "distance") or name.startswith("map_"):
            difference = np.abs(np.array(ours.column(name).to_pylist()) - np.array(full.column(name).to_pylist()))
            assert difference.max() <= 1e-5, (name, difference.max())
        else:
            assert ours.column(name).to_pylist() == full.column(name).to_pylist(), name


# ---- out of memory ----------------------------------------------------------------------------------------
def test_out_of_memory_halves_the_batch_and_names_the_size_that_fits():
    notices = []
    fitter = BatchFitter(16, "cuda:0", notify=notices.append)
    seen = []

    def fake(start: int, stop: int) -> tuple[int, int]:
        if stop - start > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        seen.append((start, stop))
        return start, stop

    assert fitter.run(10, fake) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert fitter.size == 2
    assert notices == ["out of memory at batch size 16; continuing with batch size 2, which fits."]
    assert fitter.run(3, fake) == [(0, 2), (2, 3)] and len(notices) == 1  # the smaller size is kept

    def never(start: int, stop: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (fake)")

    with pytest.raises(VitCoreError) as error:
        BatchFitter(4, "cuda:0", notify=notices.append).run(4, never)
    assert error.value.key == "batch_out_of_memory" and "batch size 1" in str(error.value)


def test_a_ray_actor_reports_the_batch_size_that_fitted(bundled, dataset, monkeypatch):
    """The Ray engine's summary reads `batch_size_used` from the actors' rows: the halved size, not the asked one."""
    from vit_core import batch_ray

    real = batch_ray.process_batch

    def small_memory(model, pixels, *args):
        if len(pixels) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real(model, pixels, *args)

    monkeypatch.setattr(batch_ray, "process_batch", small_memory)
    paths = [*sorted(str(p) for p in (dataset / "images").rglob("*.png"))[:5], str(next(dataset.rglob("broken.jpg")))]
    pixels = [decode(p, bundled.transform, 96).numpy() for p in paths[:-1]] + [None]  # the last file is corrupt
    good = [p is not None for p in pixels]
    state = bundled.model.state_dict()
    options = BatchOptions(stats=True)
    threads = torch.get_num_threads()  # the actor sets this process's torch threads
    actor = batch_ray.ModelActor(bundled.cfg, state, options, "cpu", 4, None, bundled.data_config, threads)
    rows = actor(
        {
            "path": np.array(paths, dtype=object),
            "name": np.array([Path(p).name for p in paths], dtype=object),
            "true_index": np.full(len(paths), -1),
            "pixels": np.stack([p if p is not None else np.zeros((3, 96, 96), np.float32) for p in pixels]),
            "error_key": np.array(["" if g else "image_corrupt" for g in good], dtype=object),
            "error": np.array(["" if g else "corrupt" for g in good], dtype=object),
        }
    )
    assert rows.column(batch_ray.FITTED_COLUMN).to_pylist() == [2] * 5 + [None]
    assert batch_ray.FITTED_COLUMN not in batch_ray._good_rows(rows).column_names


# ---- the command line ----------------------------------------------------------------------------------------
def one_sentence(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_cli_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys, dataset):
    (tmp_path / "empty").mkdir()
    assert "no images were found" in one_sentence(capsys, "batch", str(tmp_path / "empty"), "--out", str(tmp_path))
    images = str(dataset / "images")
    engine = one_sentence(capsys, "batch", images, "--engine", "spark", "--out", str(tmp_path / "o"))
    assert "unknown engine 'spark'; use one of local, ray." in engine
    (tmp_path / "file").write_text("")
    unwritable = one_sentence(capsys, "batch", images, "--out", str(tmp_path / "file" / "out"))
    assert "cannot be written" in unwritable
    assert "unknown method" in one_sentence(capsys, "batch", images, "--maps", "rollout,lrp", "--out", str(tmp_path))
    assert "--batch-size must be at least 1" in one_sentence(capsys, "batch", images, "--batch-size", "0", "--out", "o")
    cluster = one_sentence(capsys, "batch", images, "--ray-address", "auto", "--out", str(tmp_path / "o"))
    assert cluster == "error: --ray-address auto needs --engine ray; without it the run stays on this machine."
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_cli_batch_prints_one_line_and_refuses_to_overwrite(tmp_path, capsys, dataset):
    args = ["batch", str(dataset / "images" / "c*"), "--model", "bundled", "--workers", "0", "--out", str(tmp_path)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tmp_path}: ") and "images/s" in captured.out
    assert "--resume" in one_sentence(capsys, *args)
    assert main([*args, "--resume"]) == 0


def test_the_cli_draws_png_overlays_without_plotly_or_gradio(tmp_path, dataset):
    """`explain --out x.png` and `batch --png` draw with vit_core.overlay (numpy and PIL), in a fresh process."""
    image = next((dataset / "images").rglob("*.png"))
    code = (
        "import sys\n"
        "from vit_core.cli import main\n"
        f"assert main(['explain', {str(image)!r}, '--method', 'rollout', '--out', {str(tmp_path / 'x.png')!r}]) == 0\n"
        f"assert main(['batch', {str(image)!r}, '--maps', 'rollout', '--png', '--workers', '0',"
        f" '--out', {str(tmp_path / 'run')!r}]) == 0\n"
        "imported = sorted({'plotly', 'gradio', 'app'} & {name.split('.')[0] for name in sys.modules})\n"
        "assert not imported, imported\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "x.png").size == (96, 96)
    assert [p.name for p in (tmp_path / "run" / "png").rglob("*.png")] == [f"{image.stem}.rollout.png"]


def test_dataset_bench_measures_batch_against_the_plain_forward(bundled, tmp_path):
    from vit_core.bench_batch import bench_dataset, make_photos

    photos = make_photos(tmp_path / "photos", 4, seed=1)
    sizes = [Image.open(p).size for p in photos]
    assert all(256 <= side <= 640 for size in sizes for side in size)
    report = bench_dataset(bundled, tmp_path / "photos", batch_size=2, workers=0, repeats=1)
    assert report["images"] == 4 and report["errors"] == 0
    assert report["ratio"] == pytest.approx(report["batch_images_per_s"] / report["reference_images_per_s"], rel=0.01)


def test_decoding_workers_default_to_none_when_the_model_has_every_core(monkeypatch):
    from vit_core.batch import decoding_workers

    assert decoding_workers(3, "cpu") == 3 and decoding_workers(0, "cuda") == 0  # as given
    with pytest.raises(VitCoreError):
        decoding_workers(-1, "cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    assert decoding_workers(None, "cpu") == 0  # the processes would only take turns with the model's threads
    assert decoding_workers(None, torch.device("cuda")) == 2  # they decode while the GPU computes
    if cores > 1:
        monkeypatch.setattr(torch, "get_num_threads", lambda: cores - 1)
        assert decoding_workers(None, "cpu") == 2  # a core is left for them


# ---- the Ray engine (one local Ray for the session; keep these few) -----------------------------------------
@pytest.mark.ray
def test_ray_engine_writes_the_same_rows_as_the_local_engine(ray_session, local_run, bundled, dataset, tmp_path):
    out = tmp_path / "ray"
    summary = run_batch(
        bundled, [str(dataset / "images")], out, OPTIONS, batch_size=4, masks=dataset / "masks", engine="ray"
    )
    local, ray_rows = table_of(local_run[0]).sort_by("path"), table_of(out).sort_by("path")
    assert ray_rows.schema.equals(local.schema) and ray_rows.num_rows == SCENES
    for name in local.column_names:
        numbers = name in ("top_probs", "entropy", "distance") or name.startswith("map_")
        if numbers:  # 1 torch thread in the actor, 2 here: summation order differs
            ours, theirs = (np.array(t.column(name).to_pylist()) for t in (ray_rows, local))
            assert np.allclose(ours, theirs, atol=1e-5), name
        else:
            assert ray_rows.column(name).to_pylist() == local.column(name).to_pylist(), name
    errors = [list(csv.DictReader((folder / "errors.csv").open())) for folder in (out, local_run[0])]
    assert errors[0] == errors[1] and len(errors[0]) == 1
    assert summary["engine"] == "ray" and summary["accuracy"] == local_run[1]["accuracy"]
    assert summary["batch_size"] == summary["batch_size_used"] == 4  # what the actors ran at
    assert summary["localization"]["rollout"] == pytest.approx(local_run[1]["localization"]["rollout"])
    assert ray_session.is_initialized()  # the engine joined the session's Ray and left it running


@pytest.mark.ray
def test_an_unreachable_ray_cluster_is_one_sentence_within_10_s(tmp_path, capsys, dataset):
    need("ray")
    start = time.monotonic()
    args = ["batch", str(dataset / "images"), "--engine", "ray", "--ray-address", "127.0.0.1:1"]
    sentence = one_sentence(capsys, *args, "--out", str(tmp_path))
    assert time.monotonic() - start < 10
    assert "the Ray cluster at 127.0.0.1:1 cannot be reached" in sentence
