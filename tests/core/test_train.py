"""The training script's contract on a few tiny steps: deterministic by seed, resumable, writes our format."""

import json

import torch

from vit_core.scenes import CLASSES
from vit_core.train import main
from vit_core.weights import load_vit


def run(tmp_path, name: str, steps: int, checkpoint: str | None = None):
    out = tmp_path / name
    checkpoint = checkpoint or str(tmp_path / f"{name}.pt")
    main(
        [
            "--steps",
            str(steps),
            "--batch",
            "4",
            "--warmup",
            "1",
            "--eval-every",
            "1000",
            "--threads",
            "1",
            "--checkpoint",
            checkpoint,
            "--log",
            str(tmp_path / f"{name}.jsonl"),
            "--out",
            str(out),
        ]
    )
    model, data_config, labels = load_vit(out / "model.safetensors")
    return model, data_config, labels, out


def test_same_seed_same_weights_and_resume_continues(tmp_path):
    first, data_config, labels, out = run(tmp_path, "a", steps=2)
    second, *_ = run(tmp_path, "b", steps=2)
    assert all(
        torch.equal(p, q) for p, q in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    assert labels == list(CLASSES) and data_config.input_size == (3, 96, 96)
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["seed"] == 0 and card["classes"] == list(CLASSES)

    resumed, *_ = run(tmp_path, "a", steps=3, checkpoint=str(tmp_path / "a.pt"))  # picks up at step 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert not all(
        torch.equal(p, q) for p, q in zip(first.state_dict().values(), resumed.state_dict().values(), strict=True)
    )
