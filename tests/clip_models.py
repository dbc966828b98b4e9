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


# ---- SigLIP --------------------------------------------------------------------------------------------------
SIGLIP_SENTENCES = (
    "a photo of a dog",
    "a photo of a cat",
    "a red bus on a wet street at night",
    "a tree in a green field",
    "a drawing of a dog on grass under the bright yellow moon",
)
TINY_TIMM_SIGLIP = "vit_tiny_patch16_siglip_64_test"
SIGLIP_CONTEXT = 32  # tokens: the tiny sentencepiece vocabulary (30 pieces) spells most words in several
TINY_OPENCLIP_SIGLIP = "Tiny-SigLIP-test"


def tiny_siglip_tokenizer(folder: Path):
    """A SiglipTokenizer whose sentencepiece model is trained here on a few sentences (SigLIP's own class: a
    sentencepiece unigram model, `</s>` as end and pad token), saved with save_pretrained to `folder`."""
    import io

    import sentencepiece
    from transformers import SiglipTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SIGLIP_SENTENCES * 20),
        model_writer=model,
        vocab_size=30,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    vocab = folder / "spiece.model"
    vocab.write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(vocab), model_max_length=SIGLIP_CONTEXT)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


SIGLIP_VISION = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=64, patch_size=16
)


def tiny_hf_siglip(folder: Path, seed: int = 0) -> Path:
    """A random SiglipModel with its tiny sentencepiece tokenizer, saved with save_pretrained to `folder`."""
    from transformers import SiglipConfig, SiglipModel

    from tests.reference import perturb

    tokenizer = tiny_siglip_tokenizer(Path(folder))
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=len(tokenizer),
            max_position_embeddings=SIGLIP_CONTEXT,
            projection_size=32,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,  # SigLIP's texts have no start token
        ),
        vision_config=SIGLIP_VISION,
    )
    model = perturb(SiglipModel(config), seed=seed)
    model.save_pretrained(str(folder))
    return Path(folder)


def register_tiny_timm_siglip() -> str:
    """A tiny timm SigLIP tower (no class token, attention pool, gelu_tanh) registered with timm; idempotent."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer

    if TINY_TIMM_SIGLIP not in timm.list_models(TINY_TIMM_SIGLIP):

        def vit_tiny_patch16_siglip_64_test(pretrained: bool = False, **kwargs):
            args = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=4, class_token=False)
            args.update(global_pool="map", act_layer="gelu_tanh", num_classes=0)
            return _create_vision_transformer(TINY_TIMM_SIGLIP, pretrained=pretrained, **dict(args, **kwargs))

        register_model(vit_tiny_patch16_siglip_64_test)
    return TINY_TIMM_SIGLIP


def register_tiny_openclip_siglip(folder: Path) -> str:
    """An open_clip SigLIP architecture (`openclip:Tiny-SigLIP-test`) with the tiny timm tower, open_clip's own
    text tower and a local Hugging Face tokenizer folder in place of the hub's; idempotent."""
    import open_clip

    register_tiny_timm_siglip()
    folder = Path(folder)
    tiny_siglip_tokenizer(folder / "tokenizer")
    config = dict(
        embed_dim=32,
        init_logit_bias=-10,
        custom_text=True,
        vision_cfg=dict(image_size=64, timm_model_name=TINY_TIMM_SIGLIP, timm_pool="map", timm_proj="none"),
        text_cfg=dict(
            context_length=SIGLIP_CONTEXT,
            vocab_size=30,
            hf_tokenizer_name=str(folder / "tokenizer"),
            tokenizer_kwargs=dict(clean="canonicalize"),
            width=32,
            heads=4,
            layers=2,
            no_causal_mask=True,
            proj_bias=True,
            pool_type="last",
            norm_kwargs=dict(eps=1e-6),
            act_kwargs=dict(approximate="tanh"),
        ),
    )
    path = folder / f"{TINY_OPENCLIP_SIGLIP}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return TINY_OPENCLIP_SIGLIP
