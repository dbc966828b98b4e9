"""Tiny image–text models built offline for tests: an open_clip architecture registered from a JSON config
(open_clip's own BPE vocabulary ships in its package) and an HF CLIPModel saved with a tiny tokenizer."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

TINY_OPENCLIP = "Tiny-CLIP-test"
OPENCLIP_CONFIG = dict(
    embed_dim=24,
    quick_gelu=True,
    vision_cfg=dict(image_size=64, layers=2, width=32, patch_size=16, head_width=8),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=2),
)


def register_tiny_openclip(folder: Path) -> str:
    """Register the tiny architecture with open_clip (`openclip:Tiny-CLIP-test`); idempotent."""
    import open_clip

    path = Path(folder) / f"{TINY_OPENCLIP}.json"
    path.write_text(json.dumps(OPENCLIP_CONFIG))
    open_clip.add_model_config(path)
    return TINY_OPENCLIP


def tiny_tokenizer():
    """A CLIP BPE tokenizer over single letters (no merges): every word is spelt letter by letter."""
    from transformers import CLIPTokenizer

    letters = list(string.ascii_lowercase)
    vocab = {token: i for i, token in enumerate([*letters, *(c + "</w>" for c in letters)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_hf_clip(folder: Path, seed: int = 0, image_size: int = 64, patch_size: int = 16) -> Path:
    """A random CLIPModel (QuickGELU) with its tiny tokenizer, saved with save_pretrained to `folder`."""
    from transformers import CLIPConfig, CLIPModel

    from tests.reference import perturb

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=len(tokenizer),
            max_position_embeddings=24,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=16,
    )
    model = perturb(CLIPModel(config), seed=seed)
    folder = Path(folder)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
