"""The papers' protocols (`vit_core.protocols`) on small synthetic files with the real layouts and known answers:
ImageNet-segmentation's MATLAB v7.3 file, an ImageNet-style val folder, and the CLI's one-sentence refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vit_core import protocols
from vit_core.protocols import (
    REMOVAL_STEPS,
    SegmentationScores,
    average_precision,
    evaluate_perturbation,
    evaluate_segmentation,
    perturbation_auc,
    read_segmentation,
    read_val_folder,
    removal_masks,
)
from vit_core.scenes import scene_batch
from vit_core.zoo import load_model

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vit_core", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def write_gtsegs(path: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """The layout of gtsegs_ijcv.mat as h5py sees it: /value/img and /value/gt are [n, 1] object references;
    an image is stored [3, W, H], a mask behind a 1x1 cell of references as [W, H] (column-major MATLAB)."""
    with h5py.File(path, "w") as file:
        refs = file.create_group("#refs#")
        image_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        mask_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            image_refs[i, 0] = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0)).ref
            inner = refs.create_dataset(f"gt{i}", data=mask.astype(np.uint8).transpose(1, 0)).ref
            cell = refs.create_dataset(f"cell{i}", data=np.array([[inner]], dtype=h5py.ref_dtype))
            mask_refs[i, 0] = cell.ref
        file.create_dataset("value/img", data=image_refs)
        file.create_dataset("value/gt", data=mask_refs)


def left_half(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[:, : width // 2] = True
    return mask


@pytest.fixture
def gtsegs(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 60), (50, 50), (64, 48))]
    path = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs(path, images, [left_half(*image.shape[:2]) for image in images])
    return path


def test_average_precision_by_hand():
    # ranked 0.9 (+), 0.8 (−), 0.7 (+), 0.6 (−): precision 1 at recall 0.5, 2/3 at recall 1 -> 0.5·1 + 0.5·2/3
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)  # one tied threshold
    assert average_precision(np.array([0.1, 0.9]), np.array([1, 0])) == pytest.approx(0.5)


def test_segmentation_scores_known_answers():
    mask = left_half(8, 8)
    perfect, inverted, constant = SegmentationScores(), SegmentationScores(), SegmentationScores()
    perfect.add(mask.astype(float), mask)
    inverted.add((~mask).astype(float), mask)
    constant.add(np.full((8, 8), 0.3), mask)
    assert perfect.report() == pytest.approx({"pixel_accuracy": 1.0, "mean_iou": 1.0, "mean_average_precision": 1.0})
    assert inverted.report()["pixel_accuracy"] == 0.0 and inverted.report()["mean_iou"] == 0.0
    # a flat map predicts no foreground: half the pixels right, IoU 1/2 on the background and 0 on the foreground
    assert constant.report() == pytest.approx({"pixel_accuracy": 0.5, "mean_iou": 0.25, "mean_average_precision": 0.5})


def test_reads_the_matlab_layout(gtsegs):
    entries = list(read_segmentation(gtsegs))
    assert [image.shape for image, _ in entries] == [(40, 60, 3), (50, 50, 3), (64, 48, 3)]
    assert all(image.dtype == np.uint8 and mask.dtype == bool for image, mask in entries)
    assert all(np.array_equal(mask, left_half(*mask.shape)) for _, mask in entries)


def test_segmentation_pipeline_known_answer(gtsegs, monkeypatch):
    """Maps equal to the masks on the patch grid score 1 (their bilinear edge falls between patches); inverted, 0."""
    loaded = load_model("bundled")

    def mask_maps(model, pixels, methods, target, options):
        grid = np.zeros((len(pixels), 12, 12), np.float32)
        grid[:, :, :6] = 1.0
        return {"rollout": grid, "gradcam": 1 - grid}

    monkeypatch.setattr(protocols, "maps_for_batch", mask_maps)
    report = evaluate_segmentation(loaded, gtsegs, ["rollout", "gradcam"], batch=2)
    assert report["n"] == 3
    assert report["scores"]["rollout"] == pytest.approx(
        {"pixel_accuracy": 1.0, "mean_iou": 1.0, "mean_average_precision": 1.0}
    )
    assert report["scores"]["gradcam"]["pixel_accuracy"] == 0.0 and report["scores"]["gradcam"]["mean_iou"] == 0.0


def test_removal_masks_and_auc_known_answers():
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # 4 pixels, ranked 4 > 3 > 2 > 1
    positive, negative = removal_masks(maps, "positive"), removal_masks(maps, "negative")
    assert positive.shape == (len(REMOVAL_STEPS), 1, 2, 2)
    assert not positive[0].any() and not negative[0].any()  # the 0 % point
    assert positive[5, 0].tolist() == [[False, False], [True, True]]  # 50 %: the two highest
    assert negative[5, 0].tolist() == [[True, True], [False, False]]  # 50 %: the two lowest
    assert positive[9].sum() == 3  # int(4 · 0.9)
    assert perturbation_auc([1.0] * 10) == pytest.approx(90.0)
    assert perturbation_auc([0.5] * 10) == pytest.approx(45.0)
    assert perturbation_auc([1.0 - i / 10 for i in range(10)]) == pytest.approx(100 * (0.9 - 0.9**2 / 2))


@pytest.fixture
def val_folder(tmp_path) -> Path:
    """Two synsets in ImageNet's layout, holding ShapeScenes circles (class 0) and triangles (class 1)."""
    root = tmp_path / "val"
    scenes = [s for s in scene_batch(4242, 0, 40) if s.label in (0, 1)][:6]
    for index, scene in enumerate(scenes):
        folder = root / f"n0000000{scene.label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.image).save(folder / f"ILSVRC2012_val_{index:08d}.png")
    return root


def test_val_folder_order_and_the_zero_point_is_the_models_accuracy(val_folder, monkeypatch):
    items = read_val_folder(val_folder)
    assert [label for _, label in items] == sorted(label for _, label in items) and {0, 1} == {x[1] for x in items}
    loaded = load_model("bundled")
    pixels = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p, _ in items])
    accuracy = float((loaded.model(pixels).argmax(-1) == torch.tensor([y for _, y in items])).float().mean())
    report = evaluate_perturbation(loaded, val_folder, ["rollout", "attnlrp"], "positive", batch=4)
    assert report["n"] == len(items) and report["steps"] == list(REMOVAL_STEPS)
    for curve in report["accuracy"].values():
        assert curve[0] == pytest.approx(accuracy)  # nothing removed yet
    assert report["auc"]["rollout"] == pytest.approx(perturbation_auc(report["accuracy"]["rollout"]))

    # a flat map ranks pixels in reading order both ways: positive and negative remove the same pixels
    monkeypatch.setattr(
        protocols, "maps_for_batch", lambda m, p, methods, t, o: {"rollout": np.zeros((len(p), 12, 12))}
    )
    positive = evaluate_perturbation(loaded, val_folder, ["rollout"], "positive")
    negative = evaluate_perturbation(loaded, val_folder, ["rollout"], "negative")
    assert positive["accuracy"] == negative["accuracy"]


def test_cli_runs_both_protocols(gtsegs, val_folder):
    seg = cli("evaluate", "--dataset", "imagenet-seg", "--path", str(gtsegs), "--methods", "rollout,legrad", "--json")
    assert seg.returncode == 0, seg.stderr
    report = json.loads(seg.stdout)
    assert report["n"] == 3 and set(report["scores"]) == {"rollout", "legrad"}
    assert all(0 <= v <= 1 for scores in report["scores"].values() for v in scores.values())
    val = cli("evaluate", "--dataset", "imagenet-val", "--path", str(val_folder), "--perturbation", "negative",
              "--methods", "chefer", "--batch", "3")  # fmt: skip
    assert val.returncode == 0, val.stderr
    report = json.loads(val.stdout)
    assert report["perturbation"] == "negative" and 0 <= report["auc"]["chefer"] <= 90


@pytest.mark.parametrize(
    "args,match",
    [
        (["--dataset", "imagenet-seg", "--path", "nowhere.mat"], "nowhere.mat does not exist."),
        (["--dataset", "imagenet-seg", "--path", "README.md"], "README.md is not gtsegs_ijcv.mat (MATLAB v7.3"),
        (["--dataset", "imagenet-val", "--path", "assets/scenes"], "is not an ImageNet validation folder"),
        (["--dataset", "imagenet-seg"], "--dataset imagenet-seg needs --path"),
        (["--dataset", "coco"], "unknown dataset 'coco'; use one of shapescenes, imagenet-seg, imagenet-val."),
        (["--dataset", "imagenet-val", "--path", ".", "--perturbation", "sideways"], "unknown perturbation"),
        (["--methods", "rollout,flow", "--n", "4"], "attention flow needs one exact max-flow per token"),
        (["--methods", "rollout,nope"], "unknown method 'nope'"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, match, tmp_path):
    result = cli("evaluate", "--model", "bundled", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and match in result.stderr, result.stderr


def test_an_hdf5_file_without_the_layout_names_it(tmp_path):
    path = tmp_path / "other.mat"
    with h5py.File(path, "w") as file:
        file.create_dataset("images", data=np.zeros((2, 2)))
    result = cli("evaluate", "--dataset", "imagenet-seg", "--path", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: other.mat is not gtsegs_ijcv.mat (MATLAB v7.3 / HDF5 with /value/img and /value/gt)."
    )
