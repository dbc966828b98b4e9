"""`python -m vit_core`: models, run (capture to .npz), explain (one map), zeroshot (labels for an
image–text model), batch (a dataset to Parquet), bench, evaluate, scenes.

Bad input (a missing or unreadable image, an unknown model, mismatched weights) prints one sentence
on stderr and exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vit_core.errors import VitCoreError, WeightsUnavailable
from vit_core.validate import check_choice, check_index

EXIT_BAD_INPUT = 2

# The core's sentences speak to anyone (the page too); on the command line some errors add the flags that fix them.
_USE_BUNDLED = "Use --model bundled or a local --weights file."
CLI_HINTS = {
    "hub_offline": _USE_BUNDLED,
    "hub_unreachable": _USE_BUNDLED,
    "hub_download_failed": _USE_BUNDLED,
    "host_unreachable": _USE_BUNDLED,
    "timm_no_hub_weights": "Pass --weights FILE.",
    "weights_for_own_model": "Leave out --weights.",
    "model_file_without_config": (
        "For another library's weights use --model timm:NAME, hf:NAME or torchvision:NAME together with --weights FILE."
    ),
    "weights_unmappable": "`python -m vit_core models` lists what is supported.",
    "unknown_timm_model": (
        "`python -m vit_core models` prints the model list; `timm.list_models('vit*')` names every timm ViT."
    ),
    "bundled_missing": "Train it with `python -m vit_core.train`.",
    "not_shapescenes": "Use --model bundled.",
    "optional_package_missing": "Run `pip install -r requirements-scale.txt`.",
    "batch_results_exist": "Pass --resume, or another --out.",
    "batch_resume_mismatch": "Pass the same --model, --weights, --maps, --stats and --target, or another --out.",
    "batch_no_true_labels": "Use --target top.",
    "batch_out_of_memory": "Try --autocast bf16.",
    "openclip_tag_needed": "Write --model openclip:ARCH/TAG, or pass --weights FILE.",
    "openclip_no_hub_weights": "Pass --weights FILE.",
    "labels_or_prompt_needed": "Pass --text PHRASE, or --labels with an optional --target LABEL.",
    "no_text_tower": "Use --model openclip:ViT-B-16/openai or hf: with a CLIP repository or directory.",
}
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except VitCoreError as error:
        hint = CLI_HINTS.get(error.key)
        print(f"error: {error}" + (f" {hint}" if hint else ""), file=sys.stderr)
        return EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_core", description="Look inside Vision Transformers.")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="the catalog of recommended models, marking what works offline")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(handler=cmd_models)

    run = commands.add_parser("run", help="run one image and write everything captured to an .npz file")
    run.add_argument("image", help="path to an image file")
    _model_arguments(run)
    _label_arguments(run)
    run.add_argument("--out", required=True, help="output .npz path")
    run.set_defaults(handler=cmd_run)

    zeroshot = commands.add_parser("zeroshot", help="an image–text model's probability for each of your labels")
    zeroshot.add_argument("image", help="path to an image file")
    _model_arguments(zeroshot)
    _label_arguments(zeroshot)
    zeroshot.add_argument("--top-k", type=int, default=None, help="print only the K most probable labels")
    zeroshot.add_argument("--json", action="store_true", help="print JSON instead of a table")
    zeroshot.set_defaults(handler=cmd_zeroshot)

    bench = commands.add_parser("bench", help="median latency: reference library vs ours (fast, capture, explain_all)")
    _model_arguments(bench)
    bench.add_argument("--batch", "--batch-size", dest="batch", type=int, default=1)
    bench.add_argument("--repeats", type=int, default=None, help="timed rounds (default 10; with --dataset 3 passes)")
    bench.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    bench.add_argument("--stats", action="store_true", help="also time the streaming statistics path (capture_stats)")
    bench.add_argument("--json", action="store_true", help="print JSON (the default output is JSON too)")
    bench.add_argument(
        "--dataset", default=None, help="a folder of images: `batch --stats --maps rollout` vs the plain forward"
    )
    bench.add_argument("--photos", type=int, default=0, help="with --dataset: first write N 256-640 px JPEGs there")
    bench.add_argument("--workers", type=int, default=None, help="with --dataset: decoding processes (as batch)")
    bench.set_defaults(handler=cmd_bench)

    batch = commands.add_parser("batch", help="a dataset: one Parquet row per image, summary.json, errors.csv")
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="folders (recursive), globs, .txt/.csv lists, files")
    _model_arguments(batch)
    batch.add_argument("--batch-size", type=int, default=16, help="images per model run (default 16)")
    batch.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (0: in this process; default 2, or 0 on a CPU whose every core runs the model)",
    )
    batch.add_argument("--maps", default="", help="comma-separated: attention, rollout, grad_rollout, chefer, gradcam")
    batch.add_argument("--target", default="top", help="class-specific maps explain the top class or the true one")
    batch.add_argument("--stats", action="store_true", help="per-head attention entropy and mean distance")
    batch.add_argument("--masks", default=None, help="a folder of masks with the images' names: localization scores")
    batch.add_argument("--png", action="store_true", help="also write overlay PNGs to OUT/png/")
    batch.add_argument("--out", required=True, help="output folder: results/, summary.json, errors.csv")
    batch.add_argument("--engine", default="local", help="local (DataLoader) or ray (Ray Data)")
    batch.add_argument("--ray-address", default=None, help="with --engine ray: auto or HOST:PORT (default: start one)")
    batch.add_argument("--resume", action="store_true", help="finish an interrupted run in the same --out")
    batch.add_argument("--top-k", type=int, default=5, help="classes kept per image (default 5)")
    batch.set_defaults(handler=cmd_batch)

    evaluate = commands.add_parser(
        "evaluate", help="map localization on seeded ShapeScenes, or the papers' ImageNet protocols with --dataset"
    )
    _model_arguments(evaluate)
    evaluate.add_argument(
        "--dataset", default="shapescenes", help="shapescenes (default), imagenet-seg (gtsegs_ijcv.mat) or imagenet-val"
    )
    evaluate.add_argument("--path", default=None, help="imagenet-seg: gtsegs_ijcv.mat; imagenet-val: the val folder")
    evaluate.add_argument("--perturbation", default="positive", help="imagenet-val: positive or negative")
    evaluate.add_argument("--methods", default=None, help="comma-separated methods (default: all but flow)")
    evaluate.add_argument("--n", type=int, default=None, help="number of images (default: 2000 scenes, every file)")
    evaluate.add_argument("--batch", type=int, default=None, help="images per batch (default 100 scenes, 16 photos)")
    evaluate.add_argument("--seed", type=int, default=20_000, help="scene seed; training used seed 0")
    evaluate.add_argument("--faithfulness", type=int, default=0, help="deletion/insertion AUC on the first N scenes")
    evaluate.add_argument("--json", action="store_true", help="print JSON (the default output is JSON too)")
    evaluate.set_defaults(handler=cmd_evaluate)

    explain = commands.add_parser("explain", help="one explanation map as .npy (patch grid) or .png (overlay)")
    explain.add_argument("image", help="path to an image file")
    _model_arguments(explain)
    explain.add_argument(
        "--method",
        required=True,
        help="attention, rollout, grad_rollout, chefer, gradcam, attnlrp, cp_lrp, transformer_attribution, "
        "legrad or flow",
    )
    explain.add_argument("--layer", type=int, default=None, help="attention: layer index (default: the last)")
    explain.add_argument("--head", default="mean", help="attention: a head index, mean or max")
    explain.add_argument("--query-patch", default=None, help="attention: ROW,COL of the query patch")
    explain.add_argument("--target", default=None, help="class index or label (default: the top prediction)")
    explain.add_argument("--text", default=None, help="image–text models: explain this phrase (a red bus)")
    _label_arguments(explain)
    explain.add_argument("--head-fusion", default="mean", help="rollout: mean, max or min")
    explain.add_argument("--discard-ratio", type=float, default=0.0, help="rollout: lowest fraction dropped per row")
    explain.add_argument(
        "--start-layer", type=int, default=None, help="rollout/relevance/legrad: first layer used (legrad: last two)"
    )
    explain.add_argument("--epsilon", type=float, default=None, help="attnlrp/cp_lrp: the epsilon rule's stabiliser")
    explain.add_argument(
        "--raw", action="store_true", help="write the map's own values (signed relevance for attnlrp/cp_lrp) to .npy"
    )
    explain.add_argument("--out", required=True, help="OUT.npy (float32 map in [0, 1]) or OUT.png (overlay)")
    explain.set_defaults(handler=cmd_explain)

    scenes = commands.add_parser("scenes", help="write example ShapeScenes (image + mask PNGs)")
    scenes.add_argument("--out", default="assets/scenes")
    scenes.add_argument("--n", type=int, default=30)
    scenes.add_argument("--seed", type=int, default=30_000)
    scenes.set_defaults(handler=cmd_scenes)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="bundled", help="bundled, timm:NAME, hf:REPO_OR_DIR, openclip:ARCH/TAG, torchvision:NAME"
    )
    parser.add_argument("--weights", help="a state_dict file in the source's own format (.safetensors, .pth)")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: cuda when available)")
    parser.add_argument(
        "--autocast", choices=["bf16", "fp16"], default=None, help="mixed precision; results are float32 anyway"
    )


def _label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", default=None, help='image–text models: comma-separated labels ("a dog,a cat")')
    parser.add_argument(
        "--template", default=None, help='with --labels: the prompt around each label (default "a photo of a {}.")'
    )
    parser.add_argument(
        "--imagenet-templates", action="store_true", help="with --labels: average CLIP's 80 ImageNet templates"
    )


def _zero_shot_head(args: argparse.Namespace, loaded):
    """The label set of `--labels` (None without it), refused in one sentence for a model with no text tower."""
    from vit_core.text import DEFAULT_TEMPLATE, imagenet_templates

    if args.labels is None:
        return None
    templates = imagenet_templates() if args.imagenet_templates else (args.template or DEFAULT_TEMPLATE,)
    return loaded.text_encoder().head(args.labels, templates)


def _autocast_dtype(args: argparse.Namespace):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[args.autocast]


def cmd_models(args: argparse.Namespace) -> int:
    from vit_core.zoo import CATALOG, available_offline

    rows = [{"name": e.name, "offline": available_offline(e.name), "description": e.description} for e in CATALOG]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'model':<{width}}  offline  description")
    for row in rows:
        print(f"{row['name']:<{width}}  {'yes' if row['offline'] else 'no ':<7}  {row['description']}")
    print(
        "\nAlso: any timm ViT/DeiT name, hf:<repo or save_pretrained dir>, openclip:<arch>/<tag>, torchvision:vit_*, "
        "a vit_core .safetensors."
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from vit_core.capture import capture
    from vit_core.images import load_image, open_image
    from vit_core.zoo import load_model

    out = Path(args.out)
    if out.suffix != ".npz":
        raise VitCoreError("cli_out_suffix", suffixes=".npz", name=out.name)
    image = open_image(args.image)  # a bad file is refused before the model loads
    loaded = load_model(args.model, weights=args.weights, device=args.device)
    image = load_image(image, name=Path(args.image).name, min_size=max(loaded.data_config.input_size[1:]))
    head = _zero_shot_head(args, loaded)
    result = capture(loaded.model, loaded.preprocess(image), autocast=_autocast_dtype(args), zero_shot=head)
    arrays: dict[str, np.ndarray] = {
        "input": result.input,
        "attentions": result.attentions,
        "tokens": result.tokens,
        "num_prefix_tokens": np.array(result.num_prefix_tokens),
        "grid": np.array(result.grid),
        "patch_size": np.array(result.patch_size),
    }
    if result.pool_attention is not None:  # SigLIP's readout: the attention pool's weights [head, key]
        arrays["pool_attention"] = result.pool_attention
    if result.logits is not None:
        arrays.update(logits=result.logits, probs=result.probs, layer_logits=result.layer_logits)
    labels = list(head.labels) if head is not None else loaded.labels
    if labels is not None:
        arrays["labels"] = np.array(labels)
    if loaded.cfg.image_text:  # the image embedding in the joint space (not normalised), as encode_image gives it
        from vit_core.zeroshot import image_embeddings

        arrays["image_embedding"] = image_embeddings(loaded.model, result).numpy()
    if head is not None:
        arrays["templates"] = np.array(head.templates)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    if result.logits is not None:
        top = int(np.argmax(result.logits))
        label = labels[top] if labels else str(top)
        print(f"{out}: top-1 {label} ({result.probs[top]:.1%})")
    elif loaded.cfg.image_text:
        print(f"{out}: {result.num_layers} layers x {result.num_heads} heads and the image embedding captured")
    else:
        print(f"{out}: {result.num_layers} layers x {result.num_heads} heads captured (the model has no head)")
    return 0


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from vit_core.capture import capture
    from vit_core.images import load_image, open_image
    from vit_core.text import parse_labels
    from vit_core.zoo import load_model

    if args.labels is None:
        raise VitCoreError("no_labels")
    parse_labels(args.labels)  # bad labels are refused before the model loads
    if args.top_k is not None and args.top_k < 1:
        raise VitCoreError("cli_option_too_small", option="--top-k", low=1, value=args.top_k)
    image = open_image(args.image)
    loaded = load_model(args.model, weights=args.weights, device=args.device)
    image = load_image(image, name=Path(args.image).name, min_size=max(loaded.data_config.input_size[1:]))
    head = _zero_shot_head(args, loaded)
    result = capture(loaded.model, loaded.preprocess(image), autocast=_autocast_dtype(args), zero_shot=head)
    order = np.argsort(-result.probs, kind="stable")[: args.top_k]
    rows = [
        {"label": head.labels[i], "probability": float(result.probs[i]), "logit": float(result.logits[i])}
        for i in order
    ]
    if args.json:
        report = {"model": args.model, "image": args.image, "templates": list(head.templates), "labels": rows}
        report["activation"] = head.activation
        print(json.dumps(report, indent=2))
        return 0
    width = max(len(row["label"]) for row in rows)
    for row in rows:
        print(f"{row['label']:<{width}}  {row['probability']:.4f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from vit_core.bench import benchmark
    from vit_core.zoo import load_model

    if args.dataset is not None:
        return cmd_bench_dataset(args)
    args.repeats = 10 if args.repeats is None else args.repeats
    for option, value in (("--batch", args.batch), ("--repeats", args.repeats), ("--threads", args.threads)):
        if value < 1:
            raise VitCoreError("cli_option_too_small", option=option, low=1, value=value)
    torch.set_num_threads(args.threads)
    try:
        loaded = load_model(args.model, weights=args.weights, device=args.device)
    except WeightsUnavailable:
        # Speed does not depend on the values of the weights: measure the same architecture.
        loaded = load_model(args.model, device=args.device, random_weights=True)
    report = benchmark(loaded, batch=args.batch, repeats=args.repeats, autocast=_autocast_dtype(args), stats=args.stats)
    print(json.dumps(report, indent=2))
    return 0


def cmd_bench_dataset(args: argparse.Namespace) -> int:
    import torch

    from vit_core.batch import require
    from vit_core.bench_batch import bench_dataset, make_photos
    from vit_core.zoo import load_model

    repeats = 3 if args.repeats is None else args.repeats
    for option, value, low in (
        ("--batch", args.batch, 1),
        ("--repeats", repeats, 1),
        ("--threads", args.threads, 1),
        ("--workers", 0 if args.workers is None else args.workers, 0),
        ("--photos", args.photos, 0),
    ):
        if value < low:
            raise VitCoreError("cli_option_too_small", option=option, low=low, value=value)
    require("pyarrow", "the batch command")
    torch.set_num_threads(args.threads)
    if args.photos:
        make_photos(args.dataset, args.photos)
    try:
        loaded = load_model(args.model, weights=args.weights, device=args.device)
    except WeightsUnavailable:
        loaded = load_model(args.model, device=args.device, random_weights=True)  # speed does not depend on values
    report = bench_dataset(
        loaded, args.dataset, args.batch, args.workers, repeats=repeats, autocast=_autocast_dtype(args)
    )
    print(json.dumps(report, indent=2))
    return 0


def _parse_maps(text: str) -> tuple[str, ...]:
    from vit_core.batch import MAP_METHODS
    from vit_core.explain import NOT_IMPLEMENTED

    methods = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    for method in methods:
        if method in NOT_IMPLEMENTED:
            raise VitCoreError("method_not_implemented", method=method, instead=NOT_IMPLEMENTED[method])
        check_choice(method, MAP_METHODS, "method")
    return methods


def cmd_batch(args: argparse.Namespace) -> int:
    from vit_core.batch import ENGINES, TARGETS, BatchOptions, check_output, collect_inputs, require, run_batch
    from vit_core.zoo import load_model

    check_choice(args.engine, ENGINES, "engine")
    if args.ray_address is not None and args.engine != "ray":
        # Refused rather than ignored: whoever names a cluster expects the run to go there. The sentence is
        # about flags, so it lives here like argparse's own usage errors, not among the core's error keys.
        print(
            f"error: --ray-address {args.ray_address} needs --engine ray; without it the run stays on this machine.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    check_choice(args.target, TARGETS, "target")
    workers = 0 if args.workers is None else args.workers  # None: run_batch chooses
    limits = (("--batch-size", args.batch_size, 1), ("--workers", workers, 0), ("--top-k", args.top_k, 1))
    for option, value, low in limits:
        if value < low:
            raise VitCoreError("cli_option_too_small", option=option, low=low, value=value)
    maps = _parse_maps(args.maps)
    options = BatchOptions(maps, args.stats, args.target, args.top_k, autocast=_autocast_dtype(args))
    require("pyarrow", "the batch command")
    if args.engine == "ray":
        require("ray.data", "the Ray engine")
    # everything that can be refused without the model is refused before it loads
    items = collect_inputs(args.inputs)
    check_output(args.out, args.resume)
    # with Ray the actors choose their device (the head node may have no GPU); this process only reads the weights
    ray = args.engine == "ray"
    loaded = load_model(args.model, weights=args.weights, device="cpu" if ray else args.device)
    try:
        summary = run_batch(
            loaded,
            items,
            args.out,
            options,
            batch_size=args.batch_size,
            workers=args.workers,
            masks=args.masks,
            png=args.png,
            engine=args.engine,
            ray_address=args.ray_address,
            ray_device=args.device if ray else None,
            resume=args.resume,
        )
    except KeyboardInterrupt:
        print(f"interrupted: the images done so far are in {args.out}; rerun with --resume to finish.", file=sys.stderr)
        return EXIT_INTERRUPTED
    accuracy = summary.get("accuracy")
    told = f"accuracy {accuracy:.1%}" if accuracy is not None else f"no accuracy: {summary['accuracy_reason']}"
    speed = summary["images_per_second"]
    print(
        f"{args.out}: {summary['images']} images, {summary['errors']} errors; {told}; "
        + (f"{speed} images/s" if speed is not None else "nothing left to do")
    )
    return 0


DATASETS = ("shapescenes", "imagenet-seg", "imagenet-val")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vit_core.evaluate import SCORED, evaluate
    from vit_core.explain import METHODS
    from vit_core.protocols import evaluate_perturbation, evaluate_segmentation, read_segmentation, read_val_folder
    from vit_core.zoo import load_model

    # every check of the input comes before the model loads
    dataset = check_choice(args.dataset, DATASETS, "dataset")
    methods = SCORED if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        check_choice(method, METHODS, "method")
    for option, value in (("--n", args.n), ("--batch", args.batch)):
        if value is not None and value < 1:
            raise VitCoreError("cli_option_too_small", option=option, low=1, value=value)
    if dataset != "shapescenes":
        if args.path is None:
            raise VitCoreError("cli_dataset_needs_path", dataset=dataset)
        if dataset == "imagenet-val":
            check_choice(args.perturbation, ("positive", "negative"), "perturbation")
            read_val_folder(args.path, 1)
        else:
            next(read_segmentation(args.path), None)
    loaded = load_model(args.model, weights=args.weights, device=args.device)
    batch = {} if args.batch is None else {"batch": args.batch}
    if dataset == "imagenet-seg":
        report = evaluate_segmentation(loaded, args.path, methods, n=args.n, **batch)
    elif dataset == "imagenet-val":
        report = evaluate_perturbation(loaded, args.path, methods, args.perturbation, n=args.n, **batch)
    else:
        n = 2000 if args.n is None else args.n
        report = evaluate(
            loaded, n=n, seed=args.seed, faithfulness_n=max(0, args.faithfulness), methods=methods, **batch
        )
    print(json.dumps({"model": args.model, **report}, indent=2))
    return 0


def cmd_scenes(args: argparse.Namespace) -> int:
    from vit_core.scenes import export_examples

    if args.n < 1:
        raise VitCoreError("cli_option_too_small", option="--n", low=1, value=args.n)
    written = export_examples(args.out, args.n, args.seed)
    print(f"wrote {len(written)} scenes and masks to {args.out}")
    return 0


def _parse_head(text: str):
    if text in ("mean", "max"):
        return text
    try:
        return int(text)
    except ValueError:
        raise VitCoreError("bad_head_choice", value=text) from None


def _parse_patch(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        row, col = (int(part) for part in text.split(","))
    except ValueError:
        raise VitCoreError("bad_query_patch", value=text) from None
    return row, col


def _parse_target(text: str | None, labels: list[str] | None, classes: int) -> int | None:
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        target = int(text)
    elif labels and text in labels:
        target = labels.index(text)
    else:
        raise VitCoreError("unknown_class", value=text)
    return check_index(target, classes, "target class")


def cmd_explain(args: argparse.Namespace) -> int:
    from vit_core.capture import capture
    from vit_core.explain import CLASS_SPECIFIC, METHODS, MODEL_RUN, ExplainOptions, explain, normalise
    from vit_core.images import load_image, open_image
    from vit_core.zoo import load_model

    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise VitCoreError("cli_out_suffix", suffixes=".npy, .png", name=out.name)
    check_choice(args.method, METHODS, "method")
    if args.raw and out.suffix != ".npy":
        raise VitCoreError("cli_raw_needs_npy", name=out.name)
    options = ExplainOptions(
        layer=args.layer,
        head=_parse_head(args.head),
        query_patch=_parse_patch(args.query_patch),
        head_fusion=args.head_fusion,
        discard_ratio=args.discard_ratio,
        start_layer=args.start_layer,
        **({} if args.epsilon is None else {"epsilon": args.epsilon}),
    )
    image = open_image(args.image)  # a bad file is refused before the model loads
    loaded = load_model(args.model, weights=args.weights, device=args.device)
    image = load_image(image, name=Path(args.image).name, min_size=max(loaded.data_config.input_size[1:]))
    target = None
    head = _zero_shot_head(args, loaded)
    if args.text is not None:
        target = loaded.text_encoder().target(args.text)  # a phrase: its image–text similarity
    elif args.method in CLASS_SPECIFIC:
        if loaded.cfg.image_text and head is None:
            raise VitCoreError("labels_or_prompt_needed")
        if loaded.model.head is None and head is None:
            raise VitCoreError("no_head", what="class-specific maps")
        labels = list(head.labels) if head is not None else loaded.labels
        target = _parse_target(args.target, labels, len(labels) if head is not None else loaded.cfg.num_classes)
        target = "top" if target is None else target
    gradients = None if args.method in MODEL_RUN else target  # those run the model themselves
    result = capture(
        loaded.model, loaded.preprocess(image), target=gradients, autocast=_autocast_dtype(args), zero_shot=head
    )
    grid_map = explain(result, args.method, options, model=loaded.model, target=target)
    grid_map = grid_map.astype(np.float32) if args.raw else normalise(grid_map)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, grid_map)
    else:
        from vit_core.overlay import input_view, overlay  # numpy and PIL: the CLI never imports plotly or gradio

        overlay(input_view(result.input, loaded.data_config), grid_map).save(out)
    kind = "raw" if args.raw else "normalised"
    print(f"{out}: {args.method} map ({kind}) on the {result.grid[0]}x{result.grid[1]} patch grid")
    return 0
