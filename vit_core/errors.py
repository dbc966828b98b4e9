"""Errors as data: every user-facing problem is a `VitCoreError(key, **params)`.

The English sentence is one rendering of the key (`MESSAGES` below); the app translates by key
(`app/locales/<language>.json`, `error.<key>`), never by parsing the English back. The CLI prints the
English sentence and exits with code 2. Parameters are plain values (str, int, float); a `what`
parameter names the thing concerned with a word of `WHAT`, which the app translates too (`what.<word>`).
Range and choice checks go through the shared helpers of `vit_core.validate`.
"""

from __future__ import annotations

import string
from typing import Any, Literal, get_args

# The things an error can be about: an index, a knob, a feature or a part of a model's files.
What = Literal[
    # indices and knobs
    "layer",
    "head",
    "class",
    "target class",
    "token",
    "token layer",
    "start layer",
    "patch row",
    "patch column",
    "steps",
    "discard ratio",
    "mass fraction",
    "head fusion",
    "method",
    "dataset",
    "perturbation",
    "top-k",
    "number of scenes",
    "batch size",
    "workers",
    "engine",
    "target",
    # features that need a classification head
    "class-specific maps",
    "faithfulness curves",
    "head ablations",
    "per-layer predictions",
    # the files of a pretrained model
    "weights",
    "config",
    "preprocessing",
    # results
    "capture field",
    "statistics kernel",
]
WHAT: tuple[str, ...] = get_args(What)

_TIMM = "timm model {name!r} cannot be represented: "
_TIMM_SUPPORTED = (
    "; vit_core supports timm VisionTransformer and VisionTransformerDistilled with a linear patch embedding, "
    "absolute position embeddings, plain attention and a GELU MLP (ViT, DeiT, DINO, DINOv2, CLIP, SigLIP)."
)
_NO_HUB = "no local copy of the {what} of {model} was found and the Hugging Face hub cannot be reached"

# key -> English template ({name} placeholders filled from the error's params)
MESSAGES: dict[str, str] = {
    # vit_core.validate: the shared checks
    "index_out_of_range": "{what} {value} is out of range; use 0 to {last}.",
    "not_an_index": "{what} must be a whole number, got {value!r}.",
    "value_out_of_range": "{what} must be in {interval}, got {value}.",
    "value_too_small": "{what} must be at least {low}, got {value}.",
    "not_a_number": "{what} must be a number, got {value!r}.",
    "unknown_choice": "unknown {what} {value!r}; use one of {choices}.",
    "patch_outside_grid": "patch ({row}, {col}) is outside the {rows}x{cols} patch grid.",
    "bad_query_patch": "query patch {value!r} must be ROW,COL (two whole numbers).",
    "bad_head_choice": "head {value!r} is not a head index, mean or max.",
    "unknown_class": "unknown class {value!r}; give a class index or one of this model's labels.",
    "no_head": "this model has no classification head, so {what} are not available.",
    # images
    "image_missing": "{name} does not exist.",
    "image_not_a_file": "{name} is not a file.",
    "image_unreadable": "{name} cannot be read ({reason}).",
    "image_empty": "{name} is empty (0 bytes).",
    "image_bomb": "{name} is too large to open safely (over {limit} MP).",
    "image_too_compressed": (
        "{name} claims to be {width}x{height} pixels but holds only {kilobytes} KB of data; "
        "a file compressed this far is refused as a possible decompression bomb."
    ),
    "image_not_an_image": "{name} is not an image file that can be read (use PNG, JPEG, WebP, GIF, BMP or TIFF).",
    "image_corrupt": "{name} is truncated or corrupt and cannot be decoded.",
    "image_no_pixels": "{name} has no pixels.",
    "image_too_many_pixels": "{name} is {width}x{height} pixels ({megapixels} MP); the limit is {limit} MP.",
    "image_aspect": "{name} is {width}x{height} pixels, an aspect ratio beyond {limit}:1 that cannot be analysed.",
    # what a public page accepts (app.api, app.service)
    "not_uploaded": "send the image as an upload; files on the server cannot be named.",
    "model_not_offered": "this page runs only the models in its model menu; choose one of those.",
    "model_too_large": (
        "{name} has {millions} M parameters, more than this page's limit of {limit} M; choose a smaller model."
    ),
    # the model, its config and its inputs
    "unknown_hook": "unknown capture point {name!r}; valid names are {valid}.",
    "input_not_patch_multiple": "input of {height}x{width} pixels is not a multiple of the {patch}-pixel patch size.",
    "embed_dim_not_divisible": "embed_dim {embed_dim} is not divisible by num_heads {num_heads}.",
    "token_pool_without_class_token": "global_pool='token' needs a class token; use global_pool='avg'.",
    "global_pool_unsupported": "global_pool {value!r} is not supported; use 'token', 'avg' or 'map'.",
    "distill_token_without_class_token": "a distillation token needs a class token before it.",
    "distill_head_without_token": "a distillation head needs a distillation token and num_classes > 0.",
    "norms_exclusive": "final_norm and fc_norm are exclusive: the norm sits before or after pooling.",
    "projection_and_head": "a model has an image projection (image_embed_dim) or a class head (num_classes), not both.",
    "embedding_width_without_projection": (
        "without an image projection the image embedding is the pooled token, so image_embed_dim must be "
        "embed_dim ({embed_dim}), not {image_embed_dim}."
    ),
    "unknown_config_fields": "unknown ViTConfig fields {fields}; known fields are {known}.",
    "unknown_device": "unknown device {device!r}; use 'cpu', 'cuda' or 'auto'.",
    "cuda_unavailable": "device {device!r} was requested but CUDA is not available on this machine.",
    "not_a_batch": "expected a batch of images [B, C, H, W], got a tensor of shape {shape}.",
    "one_image_only": "capture() takes one image; use capture_batch() for a batch.",
    "target_count_mismatch": "got {targets} targets for a batch of {batch} images.",
    "stats_kernel_unavailable": (
        "the fused statistics kernel cannot run on {device}: it needs CUDA and Triton; use the explicit kernel."
    ),
    "no_attention_pool": "this model is not read out by an attention pool, so it has no pool attention to show.",
    "capture_without_pool": (
        "this model reads its image out with an attention pool, and the maps start from the pool's weights, "
        "which this capture lacks; keep pool_attention (and pool_attention_grads for class-specific maps)."
    ),
    "capture_without_target": "class-specific maps need a capture made with a target class (capture(..., target=c)).",
    # text prompts and zero-shot labels (vit_core.text)
    "no_text_tower": "this model has no text tower, so it takes no prompt or labels; use a CLIP or SigLIP model.",
    "labels_or_prompt_needed": (
        "an image–text model explains a label or a phrase: give it labels or a prompt to explain."
    ),
    "no_labels": "give at least one label, separated by commas.",
    "too_many_labels": "{count} labels are more than the limit of {limit}.",
    "empty_label": "label {position} is empty; separate labels by single commas.",
    "duplicate_label": "label {position} ({label!r}) repeats label {first}.",
    "template_without_slot": "the template {template!r} needs exactly one empty pair of braces where the label goes.",
    "empty_prompt": "the prompt is empty; type a phrase such as 'a red bus'.",
    "prompt_too_long": (
        "the prompt {prompt!r}... is {tokens} tokens long; this model's text tower reads at most {limit} tokens."
    ),
    "method_not_implemented": "the {method} method is not implemented yet; use {instead} instead.",
    "method_needs_model": "the {method} map runs the model again, so it needs the model as well as the capture.",
    "flow_too_large": (
        "attention flow needs one exact max-flow per token, and a model with {tokens} tokens in {layers} layers is "
        "over its limit of {limit} tokens at that depth (about 10 s per image); use rollout instead."
    ),
    "map_grid_mismatch": "the map's grid {map_rows}x{map_cols} does not match the image's {rows}x{cols} patches.",
    "dataset_path_missing": "{path} does not exist.",
    "dataset_layout": "{name} is not {expected}.",
    "dataset_empty": "{name} holds no images; expected {expected}.",
    "not_shapescenes": (
        "model {name!r} does not predict the ShapeScenes classes ({classes}); "
        "evaluation needs the bundled model or another ShapeScenes model."
    ),
    # loading models: vit_core.zoo and vit_core.weights
    "unknown_model": (
        "unknown model {name!r}; use bundled, timm:NAME, hf:REPO_OR_DIR, torchvision:NAME "
        "or a vit_core .safetensors file."
    ),
    "weights_for_own_model": (
        "a separate weights file applies to timm:, hf: and torchvision: models, not to vit_core files."
    ),
    "bundled_missing": "the bundled model is missing ({path}).",
    "unknown_timm_model": "unknown timm model {name!r}; check the spelling, or choose a model from the model list.",
    "timm_no_hub_weights": "timm:{name} has no weights on the Hugging Face hub; it needs a local weights file.",
    "hf_dir_without_config": "{path!r} has no config.json; expected a save_pretrained directory.",
    "hf_dir_without_weights": "{path!r} holds no model.safetensors or pytorch_model.bin.",
    "hf_ref_invalid": "{ref!r} is neither a local directory nor a Hugging Face repository id.",
    "hf_model_type_unsupported": (
        "HF model type {model_type!r} is not supported; vit_core loads the model types {supported}."
    ),
    "hf_naflex_unsupported": (
        "HF {model_type} models are NaFlex (patches of any aspect ratio with a mask), which vit_core does not "
        "represent; the fixed-resolution SigLIP 2 checkpoints load as model type siglip "
        "(hf:google/siglip2-base-patch16-224) or through open_clip (openclip:ViT-B-16-SigLIP2/webli)."
    ),
    "hf_swiglu_unsupported": "HF {model_type} models with a SwiGLU MLP (the giant DINOv2) are not supported.",
    "hf_activation_unsupported": "HF activation {name!r} is not supported; use one of {choices}.",
    "hf_qkv_incomplete": "the HF weights of {block} hold only {found} of its q, k and v {param} tensors.",
    "openclip_ambiguous_name": (
        "{name!r} is ambiguous: write openclip:ARCH or openclip:ARCH/TAG with one of open_clip's architectures "
        "(openclip:ViT-B-16/openai), or hf:REPO for a transformers CLIP or SigLIP repository."
    ),
    "unknown_openclip_model": "unknown open_clip architecture {name!r}; vit_core loads {supported}.",
    "unknown_openclip_tag": "open_clip has no pretrained tag {tag!r} for {name}; its tags are {tags}.",
    "openclip_tag_needed": "openclip:{name} needs a pretrained tag (ARCH/TAG) or a weights file; its tags are {tags}.",
    "openclip_no_hub_weights": "openclip:{name} has no weights on the Hugging Face hub; it needs a local weights file.",
    "openclip_not_a_vit": "open_clip model {name!r} has a {kind} image tower, not a ViT; vit_core loads {supported}.",
    "openclip_unsupported": "open_clip model {name!r} cannot be represented: its image tower has {feature}.",
    "unknown_torchvision_model": "unknown torchvision ViT {name!r}; use one of {choices}.",
    "weights_file_missing": "weights file {path!r} does not exist.",
    "weights_not_a_file": "weights file {path!r} is not a regular file.",
    "weights_bad_safetensors": "weights file {name!r} is not a readable safetensors file.",
    "weights_not_loadable": (
        "weights file {name!r} is neither safetensors nor a plain tensor state_dict "
        "(it cannot be loaded with weights_only=True)."
    ),
    "weights_not_state_dict": "weights file {name!r} does not hold a state_dict of tensors.",
    "model_file_missing": "model file {path!r} does not exist.",
    "model_file_unreadable": "model file {name!r} is not a readable safetensors file.",
    "model_file_without_config": "{name!r} has no vit_core config in its metadata, so it is not a vit_core model file.",
    # downloads: vit_core.hub
    "hub_offline": _NO_HUB + " (HF_HUB_OFFLINE=1); the bundled model works offline.",
    "hub_unreachable": _NO_HUB + " (no network); the bundled model works offline.",
    "hub_repository_missing": "the Hugging Face repository {repo!r} of {model} does not exist.",
    "hub_download_failed": "the {what} of {model} could not be downloaded from the Hugging Face hub ({reason}).",
    "hub_files_missing": "the Hugging Face repository {repo!r} has none of {files}.",
    "host_unreachable": (
        "no local copy of the {what} of {model} was found in {folder} and {host} cannot be reached; "
        "the bundled model works offline."
    ),
    "download_failed": "the {what} of {model} could not be downloaded ({reason}).",
    # weight conversion: vit_core.convert
    "weights_unmappable": (
        "the {source} weights hold {key!r}, which vit_core cannot map: this is not a plain ViT/DeiT/DINO checkpoint."
    ),
    "weights_shape_mismatch": (
        "the {source} weights do not match the architecture: {key!r} has shape {weights_shape} in the weights "
        "but {model_shape} in the model."
    ),
    "weights_unexpected_key": "the {source} weights hold {key!r}, which this architecture does not have.",
    "weights_missing_key": (
        "the {source} weights lack {key!r} (shape {shape}), which the architecture needs ({count} keys missing in all)."
    ),
    "timm_not_a_vit": _TIMM + "it is a {kind}" + _TIMM_SUPPORTED,
    "timm_attention_pool": (
        _TIMM + "its attention pool has {feature}; vit_core reads SigLIP's attention pool (global_pool='map', "
        "one learnt query with its norm and MLP)" + _TIMM_SUPPORTED
    ),
    "timm_no_pos_embed": _TIMM + "it has no absolute position embedding" + _TIMM_SUPPORTED,
    "timm_attention_class": _TIMM + "its attention is a {kind}" + _TIMM_SUPPORTED,
    "timm_qk_norm": _TIMM + "it normalises queries/keys or the attention output" + _TIMM_SUPPORTED,
    "timm_gated_attention": _TIMM + "its attention is gated" + _TIMM_SUPPORTED,
    "timm_mlp_class": _TIMM + "its MLP is a {kind}" + _TIMM_SUPPORTED,
    "timm_patch_norm": _TIMM + "it normalises the patch embedding" + _TIMM_SUPPORTED,
    "timm_no_bias": _TIMM + "its projections have no bias" + _TIMM_SUPPORTED,
    "timm_activation": _TIMM + "its MLP activation is {kind}, not GELU" + _TIMM_SUPPORTED,
    "timm_global_pool": _TIMM + "it pools with global_pool={pool!r}" + _TIMM_SUPPORTED,
    "timm_distill_token_without_head": "timm has no distillation token without a distillation head.",
    "timm_mlp_width": "timm cannot express an MLP width of {mlp_dim} for embed_dim {embed_dim}.",
    "torchvision_not_a_vit": "torchvision model {kind} is not a VisionTransformer.",
    "torchvision_representation": "torchvision ViTs with a pre-logits layer (representation_size) are not supported.",
    "torchvision_conv_stem": (
        "torchvision ViTs with a convolutional stem are not supported; use the plain patch embedding."
    ),
    # dataset runs (vit_core.batch, vit_core.batch_ray)
    "optional_package_missing": "{package} is not installed; {feature} needs the extras in requirements-scale.txt.",
    "batch_input_missing": "{name} is not a file, a folder or a pattern that matches any file.",
    "batch_list_unreadable": "the list of images {name} cannot be read ({reason}).",
    "batch_no_images": "no images were found in {inputs}.",
    "batch_out_unwritable": "the output folder {folder} cannot be written ({reason}).",
    "batch_results_exist": "{folder} already holds the results of an earlier run; resume it or choose another folder.",
    "batch_resume_mismatch": (
        "{folder} holds a run with other settings ({settings}); resume it with the same settings "
        "or choose another folder."
    ),
    "batch_masks_missing": "the masks folder {folder} does not exist.",
    "batch_no_true_labels": (
        "explaining the true class needs every image in a class folder named after one of the model's labels "
        "or an ImageNet synset id ({reason})."
    ),
    "batch_size_reduced": "out of memory at batch size {failed}; continuing with batch size {size}, which fits.",
    "batch_out_of_memory": "the model runs out of memory on {device} even at batch size 1.",
    "ray_unreachable": "the Ray cluster at {address} cannot be reached ({reason}).",
    # the command line (vit_core.cli)
    "cli_out_suffix": "--out must end in {suffixes}, got {name!r}.",
    "cli_option_too_small": "{option} must be at least {low}, got {value}.",
    "cli_raw_needs_npy": "--raw writes the map's own values, which only a .npy file holds; got {name!r}.",
    "cli_dataset_needs_path": "--dataset {dataset} needs --path to the data.",
    # the page (app/)
    "choose_model": "choose a model first.",
    "upload_image": "upload an image first.",
    "choose_heads": "choose at least one head to ablate.",
}


def placeholders(template: str) -> set[str]:
    """The parameter names a template fills in (`{value!r}` -> "value")."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def render(key: str, params: dict[str, Any]) -> str:
    """The English sentence of `key` with `params` filled in; an unknown key or a missing parameter raises."""
    template = MESSAGES.get(key)
    if template is None:
        raise KeyError(f"unknown error key {key!r}; add it to vit_core.errors.MESSAGES")
    missing = placeholders(template) - set(params)
    if missing:
        raise KeyError(f"error {key!r} needs the parameters {sorted(missing)}")
    if "what" in params and params["what"] not in WHAT:
        raise ValueError(f"error {key!r}: what={params['what']!r} is not a word of vit_core.errors.WHAT")
    return template.format(**params)


def _restore(cls: type[VitCoreError], key: str, params: dict[str, Any]) -> VitCoreError:
    return cls(key, **params)


class VitCoreError(Exception):
    """A problem with the user's input, carried as a key and its parameters; `str()` is the English sentence."""

    def __init__(self, key: str, /, **params: Any) -> None:  # a parameter may be called "key" too
        self.key = key
        self.params = params
        super().__init__(render(key, params))

    def __reduce__(self):
        # pickled as (key, params), not as the sentence: ZeroGPU workers send errors across processes
        return _restore, (type(self), self.key, self.params)


class WeightsUnavailable(VitCoreError):
    """Pretrained weights are neither cached locally nor downloadable right now."""
