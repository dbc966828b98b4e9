"""The shared analysis store (LRU by bytes, TTL) and the picture helpers, on hand-made cases."""

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.cache import Analysis, AnalysisCache, capture_bytes
from app.render import (
    MATRIX_MARGIN,
    MATRIX_TOP,
    OverlayStyle,
    cell_at,
    colormap,
    overlay,
    patch_at,
    thumbnail_matrix,
)
from tests.reference import synthetic_capture
from vit_core import ViT, ViTConfig, capture

TINY = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=5)


def entry(key: str, layers: int = 1) -> Analysis:
    n = 5  # 4 patches + class token
    return Analysis(key, "m", "x.png", synthetic_capture(np.full((layers, 2, n, n), 1 / n), (2, 2)))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lru_by_bytes_keeps_the_recent_and_the_one_in_use():
    size = entry("a").nbytes
    cache = AnalysisCache(max_bytes=2 * size, ttl_s=100)
    for key in "abc":
        cache.put(entry(key))
    assert cache.get("a") is None and cache.get("b") and cache.get("c")  # a was the least recent
    cache.get("b")  # b is now more recent than c
    cache.put(entry("d"))
    assert cache.get("c") is None and cache.get("b") and cache.get("d")
    big = cache.put(entry("huge", layers=10))  # over budget alone: kept, everything else goes
    assert cache.get("huge") is big and len(cache) == 1


def test_growth_of_an_entry_evicts_others():
    base = entry("a")
    cache = AnalysisCache(max_bytes=int(2.5 * base.nbytes), ttl_s=100)
    cache.put(base)
    cache.put(entry("b"))
    base.by_target[0] = entry("a").capture  # a gradient capture arrives: a now weighs twice as much
    cache.grew(base)
    assert cache.get("b") is None and cache.get("a") is base
    assert cache.nbytes == 2 * capture_bytes(base.capture)


def test_arrays_two_captures_share_count_once():
    base = entry("a")
    alone = base.nbytes
    base.by_target[0] = dataclasses.replace(base.capture, target=0)  # the same arrays in another capture
    assert base.nbytes == alone
    base.by_target[1] = entry("a").capture  # arrays of its own
    assert base.nbytes == 2 * alone


def test_capture_bytes_counts_torch_tensors_too():
    base = synthetic_capture(np.full((2, 3, 5, 5), 0.2, np.float32), (2, 2))
    arrays = capture_bytes(base)
    assert arrays == sum(a.nbytes for a in (base.input, base.attentions, base.tokens))
    # the same fields as tensors (a capture kept on the device) hold the same bytes
    as_tensors = dataclasses.replace(base, attentions=torch.from_numpy(base.attentions))
    assert capture_bytes(as_tensors) == arrays
    device = capture(ViT(TINY).eval(), torch.randn(3, 32, 32), keep_on_device=True)
    assert capture_bytes(device) == device.nbytes > device.attentions.numel() * 4
    assert capture_bytes(device.to_numpy()[0]) == device.nbytes  # float32 everywhere: the same bytes on the host
    cache = AnalysisCache(max_bytes=10**9, ttl_s=100)
    cache.put(Analysis("k", "m", "p", as_tensors))
    assert cache.nbytes == arrays


def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = AnalysisCache(max_bytes=10**9, ttl_s=60, clock=clock)
    cache.put(entry("a"))
    clock.now = 50
    assert cache.get("a") is not None  # touching renews it
    clock.now = 100
    assert cache.get("a") is not None
    clock.now = 161
    assert cache.get("a") is None and len(cache) == 0


def test_memo_computes_once():
    analysis = entry("a")
    calls = []
    for _ in range(3):
        analysis.remember("k", lambda: calls.append(1) or 42)
    assert calls == [1] and analysis.memo["k"] == 42


def test_patch_and_cell_coordinates():
    assert patch_at((0, 0), (224, 224), (14, 14)) == (0, 0)
    assert patch_at((223, 16), (224, 224), (14, 14)) == (1, 13)  # x is the column, y the row
    assert patch_at((5, 230), (224, 224), (14, 14)) is None  # on the colour scale below
    x, y = MATRIX_MARGIN, MATRIX_TOP  # the first thumbnail's corner, after the numbers
    assert cell_at((x, y), (2, 3), cell=10) == (0, 0)
    assert cell_at((x + 2 * 12 + 3, y + 12 + 9), (2, 3), cell=10) == (1, 2)
    assert cell_at((x + 10, y + 3), (2, 3), cell=10) is None  # in the gap
    assert cell_at((x + 3 * 12 + 1, y), (2, 3), cell=10) is None  # outside
    assert cell_at((x - 5, y + 3), (2, 3), cell=10) is None  # on the block numbers


def test_overlay_colours_the_hot_patch_and_adds_a_colorbar():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    grid_map = np.array([[0.0, 1.0]])
    plain = overlay(image, grid_map, OverlayStyle(opacity=1.0, upsample="nearest", colorbar=False))
    pixels = np.asarray(plain)
    assert tuple(pixels[10, 30]) == tuple(colormap("Viridis")[255]) and tuple(pixels[10, 5]) == tuple(
        colormap("Viridis")[0]
    )
    with_bar = overlay(image, grid_map, OverlayStyle(colorbar=True))
    assert with_bar.size[0] == 40 and with_bar.size[1] > 20  # the scale goes below the picture
    band = np.asarray(with_bar)[20:]
    assert (band.min(axis=2) < 100).any()  # its numbers are drawn
    masked = overlay(
        image, grid_map, OverlayStyle(opacity=1.0, upsample="nearest", colorbar=False), keep=np.array([[False, True]])
    )
    assert np.asarray(masked)[10, 5].sum() < pixels[10, 5].sum() and np.array_equal(
        np.asarray(masked)[10, 30], pixels[10, 30]
    )
    marked = np.asarray(overlay(image, grid_map, OverlayStyle(opacity=0.0, colorbar=False), mark=(0, 1)))
    assert marked[0, 25, 0] == 255 and marked[10, 5].sum() == 0  # red box on patch (0, 1) only


def test_thumbnail_matrix_layout():
    maps = np.random.default_rng(0).random((3, 4, 2, 2))
    picture = thumbnail_matrix(maps, cell=8, cmap="Viridis", gap=2)
    assert picture.size == (MATRIX_MARGIN + 4 * 10 - 2 + 3, MATRIX_TOP + 3 * 10 - 2 + 3)
    assert cell_at((MATRIX_MARGIN + 10 + 1, MATRIX_TOP + 20 + 1), (3, 4), 8) == (2, 1)


def test_output_pictures_are_written_once_by_content(tmp_path):
    from app.tabs.base import save_picture

    picture = Image.new("RGB", (8, 8), "red")
    for exact in (True, False):
        first = save_picture(picture, tmp_path, exact)
        stamp = Path(first).stat().st_mtime_ns
        assert save_picture(picture.copy(), tmp_path, exact) == first  # the same name
        assert Path(first).stat().st_mtime_ns == stamp  # not rewritten
        assert save_picture(Image.new("RGB", (8, 8), "blue"), tmp_path, exact) != first
    assert Image.open(save_picture(picture, tmp_path, exact=True)).getpixel((0, 0)) == (255, 0, 0)
    assert not list(tmp_path.glob("*/*.tmp"))


def test_a_photo_is_written_as_a_jpeg_that_differs_from_it_by_little_and_an_exact_picture_as_a_png(tmp_path):
    """An overlay on a photo (a map blended over the cheetah, with the patch grid, a marked patch and a
    colorbar) becomes a JPEG within a few levels of the picture drawn, a fraction of the PNG's size; an exact
    picture stays a lossless PNG."""
    from gradio.media import get_image

    from app.render import OverlayStyle, overlay
    from app.tabs.base import save_picture

    photo = Image.open(get_image("cheetah1.jpg")).convert("RGB").resize((448, 448), Image.Resampling.LANCZOS)
    grid_map = np.random.default_rng(0).random((14, 14)).astype(np.float32)
    drawn = overlay(photo, grid_map, OverlayStyle(grid=True, upsample="nearest"), mark=(3, 4))
    jpeg, png = save_picture(drawn, tmp_path), save_picture(drawn, tmp_path, exact=True)
    assert Path(jpeg).suffix == ".jpg" and Image.open(jpeg).format == "JPEG"
    assert Path(png).suffix == ".png" and np.array_equal(np.asarray(Image.open(png)), np.asarray(drawn))
    difference = np.abs(np.asarray(Image.open(jpeg).convert("RGB"), np.int16) - np.asarray(drawn, np.int16))
    assert Image.open(jpeg).size == drawn.size
    assert difference.mean() < 2 and np.percentile(difference, 99) <= 8, (difference.mean(), difference.max())
    assert Path(jpeg).stat().st_size < Path(png).stat().st_size / 2


def test_a_tab_s_pictures_travel_inline_encoded_by_the_handler():
    """The board encodes each output picture (bare or an update's value) itself, side by side, as a `data:` URL
    of the picture's format; Gradio sends it as it is (no file to write, move or serve, as for its own SVGs),
    and the browser needs no request to show it."""
    import base64
    import io

    import gradio as gr
    from gradio.processing_utils import move_files_to_cache

    from app.tabs.base import picture, write_pictures

    with gr.Blocks():
        views = [picture("a", exact=True), picture("b"), picture("c")]  # a PNG, a JPEG
        text = gr.Markdown()
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    drawn = {id(views[0]): red, id(views[1]): {"__type__": "update", "value": blue, "label": "B"}, id(views[2]): None}
    drawn[id(text)] = "text"
    out = write_pictures(drawn, [*views, text])

    def decoded(url: str, prefix: str) -> Image.Image:
        assert url.startswith(prefix)
        return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :], validate=True)))

    png = decoded(out[id(views[0])], "data:image/png;base64,")
    assert png.format == "PNG" and png.getpixel((0, 0)) == (255, 0, 0)
    assert out[id(views[1])]["label"] == "B"
    jpeg = decoded(out[id(views[1])]["value"], "data:image/jpeg;base64,")
    assert jpeg.format == "JPEG" and np.abs(np.subtract(jpeg.getpixel((0, 0)), (0, 0, 255))).max() <= 2
    assert out[id(views[2])] is None and out[id(text)] == "text"
    for view, url, name in (
        (views[0], out[id(views[0])], "image.png"),
        (views[1], out[id(views[1])]["value"], "image.jpg"),
    ):
        data = view.postprocess(url)
        assert data.url == url and data.path is None and data.orig_name == name  # the download keeps its format
        assert move_files_to_cache(data, view, postprocess=True)["url"] == url  # Gradio leaves it as it is
    assert views[1].postprocess(blue).url.startswith("data:image/jpeg;base64,")  # a handler's PIL image too


def test_the_image_components_compute_their_api_schema_once_per_class(monkeypatch):
    """Gradio builds a new component for every update an event returns and asks it for its schema: ours
    give the schema Gradio's own image gives, computed once per class, not by pydantic per update."""
    import gradio as gr
    from gradio.data_classes import ImageData

    from app.panel import UploadedImage
    from app.tabs.base import picture

    expected = gr.Image(render=False).api_info()
    for cls in (UploadedImage, type(picture("a", render=False))):
        assert cls(render=False).api_info() == expected
        assert cls(render=False).get_block_name() == "image"  # the frontend is gr.Image's
    calls = []
    original = ImageData.model_json_schema.__func__
    monkeypatch.setattr(
        ImageData, "model_json_schema", classmethod(lambda *a, **k: calls.append(1) or original(*a, **k))
    )
    gr.Image(render=False).api_info()
    assert calls == [1]  # Gradio's own image asks pydantic for every new instance
    assert picture("b", render=False).api_info() == UploadedImage(render=False).api_info() == expected
    assert calls == [1]  # ours do not


def test_a_colorbar_s_ticks_share_one_format():
    from app.render import tick_labels

    assert tick_labels((0.0017, 0.0237, 0.0457)) == ["0.0017", "0.0237", "0.0457"]  # not 1.7e-03 beside 0.0457
    assert tick_labels((1.3e-30, 0.025, 0.05)) == ["0", "0.0250", "0.0500"]  # a softmax's underflow is 0
    assert tick_labels((-2.5, 0.0, 2.5)) == ["-2.50", "0", "2.50"]
    # small maxima in fixed-point too, as wide as scientific: 0.000817 beside 0.0457, not 8.17e-04
    assert tick_labels((0.0, 4.085e-4, 8.17e-4)) == ["0", "0.000409", "0.000817"]
    assert tick_labels((0.0, 8.2e-4, 1.63e-3)) == ["0", "0.00082", "0.00163"]
    assert tick_labels((1.2e-4, 3e-4, 5e-4)) == ["0.000120", "0.000300", "0.000500"]
    assert tick_labels((-1e-9, 4e-4, 8e-4)) == ["0", "0.000400", "0.000800"]  # rounds to 0: "0", not "-0.000000"
    assert tick_labels((1e-6, 2e-5, 5e-5)) == ["1.00e-06", "2.00e-05", "5.00e-05"]  # below 1e-4: scientific
    assert tick_labels((0.0, 1250.0, 2500.0)) == ["0", "1.25e+03", "2.50e+03"]  # 1000 and above: scientific
    assert tick_labels((0.0, 0.0, 0.0)) == ["0", "0", "0"]


def test_a_map_of_both_signs_is_drawn_on_a_scale_centred_on_zero():
    """LRP relevance and cosine similarities have a sign: zero is white (the diverging scale's middle) in
    every such map, blue below, red above, and the colorbar reads -m, 0, m; a map of one sign keeps min-max."""
    from app.render import DIVERGING, heat, signed_bound, tick_labels

    relevance = np.array([[-1.0, 0.0, 2.0]])
    assert signed_bound(relevance) == 2.0
    assert signed_bound(np.array([[0.0, 1.0, 2.0]])) is None and signed_bound(np.array([[-3.0, -1.0]])) is None
    assert signed_bound(np.array([[-1e-9, 0.5, 1.0]])) is None  # rounding below zero is not a sign
    colours = np.asarray(heat(relevance, (3, 1), "Viridis", "nearest"))[0]
    lut = colormap(DIVERGING)
    assert (colours[1] == lut[128]).all() and min(colours[1]) > 230  # zero: white
    assert (colours[0] == lut[64]).all() and colours[0][2] > colours[0][0]  # -1 of ±2: halfway to blue
    assert (colours[2] == lut[255]).all() and colours[2][0] > colours[2][2]  # the largest: the reddest
    one_sign = np.asarray(heat(np.array([[0.0, 1.0, 2.0]]), (3, 1), "Viridis", "nearest"))[0]
    assert (one_sign[0] == colormap("Viridis")[0]).all() and (one_sign[2] == colormap("Viridis")[255]).all()
    picture = overlay(Image.new("RGB", (96, 96)), np.array([[-1.0, 2.0], [0.5, 0.0]]), OverlayStyle())
    assert picture.size[1] > 96  # the colorbar below, labelled -2.00, 0, 2.00 (tick_labels of -m, 0, m)
    assert tick_labels((-2.0, 0.0, 2.0)) == ["-2.00", "0", "2.00"]
