"""Train the bundled ShapeScenes ViT from scratch: `python -m vit_core.train`.

Deterministic by seed (the data stream is a pure function of (seed, step), the init of the seed),
resumable from `--checkpoint` (loaded with `weights_only=True`), with a progress bar and a JSON-lines
log. A curriculum raises scene difficulty from easy to full over the first part of training; warmup
then cosine decay of the learning rate (AdamW). Writes our own safetensors format plus a model card.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from vit_core.config import DataConfig, ViTConfig
from vit_core.model import ViT
from vit_core.scenes import CLASSES, SIZE, scene_batch
from vit_core.weights import save_vit

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
EVAL_SEED = 10_001  # fixed split used for monitoring during training; the final evaluation uses others


def model_config() -> ViTConfig:
    return ViTConfig(
        image_size=(SIZE, SIZE),
        patch_size=8,
        embed_dim=144,
        depth=6,
        num_heads=6,
        mlp_dim=576,
        num_classes=len(CLASSES),
    )


def data_config() -> DataConfig:
    # Scenes are already SIZE x SIZE; other images are resized on the short side and centre-cropped.
    return DataConfig(input_size=(3, SIZE, SIZE), interpolation="bicubic", mean=MEAN, std=STD, crop_pct=1.0)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `[B, H, W, 3]` -> normalised float `[B, 3, H, W]`, the same maths as the timm transform."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def difficulty_at(step: int, curriculum_steps: int) -> float:
    return min(1.0, step / max(1, curriculum_steps))


class SceneStream(IterableDataset):
    """Batch `step` is scenes [step*B, (step+1)*B) of the training stream: resuming replays nothing."""

    def __init__(self, seed: int, start_step: int, steps: int, batch: int, curriculum_steps: int) -> None:
        self.seed, self.start_step, self.steps, self.batch = seed, start_step, steps, batch
        self.curriculum_steps = curriculum_steps

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            scenes = scene_batch(
                self.seed, step * self.batch, self.batch, difficulty=difficulty_at(step, self.curriculum_steps)
            )
            images = np.stack([s.image for s in scenes])
            labels = np.array([s.label for s in scenes])
            yield to_tensor(images), torch.from_numpy(labels)


def learning_rate(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def accuracy(model: ViT, seed: int, count: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, count, 250):
        scenes = scene_batch(seed, start, min(250, count - start))
        logits = model(to_tensor(np.stack([s.image for s in scenes])))
        correct += int((logits.argmax(-1) == torch.tensor([s.label for s in scenes])).sum())
    model.train()
    return correct / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=1e-5)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--curriculum", type=float, default=0.4, help="fraction of steps to reach full difficulty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--checkpoint", default="checkpoints/bundled_train.pt")
    parser.add_argument("--log", default="checkpoints/bundled_train.jsonl")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "assets" / "bundled"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = ViT(model_config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    checkpoint = Path(args.checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    start_step, elapsed_before = 0, 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        print(f"resuming from step {start_step} ({checkpoint})")

    curriculum_steps = int(args.curriculum * args.steps)
    stream = SceneStream(args.seed, start_step, args.steps, args.batch, curriculum_steps)
    loader = DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=4, persistent_workers=False)
    started = time.monotonic()
    log = Path(args.log).open("a")
    bar = tqdm(total=args.steps, initial=start_step, desc="train", dynamic_ncols=True)
    step = start_step
    for pixels, labels in loader:
        lr = learning_rate(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(pixels)
        loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        record = {
            "step": step,
            "loss": round(loss.item(), 4),
            "train_acc": round((logits.argmax(-1) == labels).float().mean().item(), 4),
            "lr": round(lr, 7),
            "difficulty": round(difficulty_at(step - 1, curriculum_steps), 3),
            "elapsed_s": round(elapsed_before + time.monotonic() - started, 1),
        }
        if step % args.eval_every == 0 or step == args.steps:
            record["eval_acc"] = accuracy(model, EVAL_SEED, 500)
        log.write(json.dumps(record) + "\n")
        log.flush()
        bar.set_postfix(loss=record["loss"], acc=record["train_acc"], eval=record.get("eval_acc", ""))
        bar.update(1)
        if step % 100 == 0 or step == args.steps:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "elapsed_s": record["elapsed_s"],
                },
                checkpoint,
            )
    bar.close()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    save_vit(out / "model.safetensors", model, data_config(), list(CLASSES))
    card = {
        "name": "bundled",
        "task": "ShapeScenes: classify the one target shape among clutter",
        "classes": list(CLASSES),
        "architecture": model.cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "preprocessing": data_config().to_dict(),
        "training": {
            "command": " ".join(["python -m vit_core.train", *(sys.argv[1:] if argv is None else argv)]),
            "seed": args.seed,
            "steps": args.steps,
            "batch": args.batch,
            "images_seen": args.steps * args.batch,
            "optimizer": f"AdamW lr {args.lr} (warmup {args.warmup}, cosine to {args.min_lr}), "
            f"weight decay {args.weight_decay}, label smoothing {args.label_smoothing}, grad clip 1.0",
            "curriculum": f"difficulty 0 -> 1 over the first {curriculum_steps} steps",
            "duration_s": round(elapsed_before + time.monotonic() - started, 1),
            "hardware": f"CPU, {args.threads} threads",
        },
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {out / 'model.safetensors'} and model_card.json")


if __name__ == "__main__":
    main()
