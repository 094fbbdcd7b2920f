"""The Space's helpers, callbacks and UI wiring, without launching a server (see test_app_api.py
for that)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

import gradio as gr  # noqa: E402
from result_support import block_result, two_modes_scene  # noqa: E402

from zegformer.errors import ZegFormerError  # noqa: E402
from zegformer.faces import startup, tables, views  # noqa: E402
from zegformer.faces.modes import expand_modes, run_modes  # noqa: E402
from zegformer.text import MAX_CLASSES, MAX_NAME_LENGTH, parse_classes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "examples" / "cat.jpg"


def no_progress(*args, **kwargs):
    """Stands in for gr.Progress when a callback is called directly."""


# ------------------------------------------------------------------------------ vocabularies
@pytest.mark.parametrize("label,count", [("COCO-Stuff (171)", 171), ("PASCAL VOC (20)", 20),
                                         ("ADE20K (150)", 150), ("ADE20K-Full (847)", 847)])
def test_every_preset_fills_a_box_the_parser_accepts(label, count):
    assert label in startup.available_presets()
    text = startup.fill_classes("", label, extend=False)
    names = parse_classes(text)
    assert len(names) == count
    assert all(len(n) <= MAX_NAME_LENGTH for n in names)


def test_official_synonyms_become_bar_synonyms():
    assert startup.app_class_name("pot, flowerpot") == "pot | flowerpot"
    assert startup.app_class_name("wall") == "wall"
    long = ", ".join(["computing machine"] * 10)
    short = startup.app_class_name(long)
    assert len(short) <= MAX_NAME_LENGTH and short.startswith("computing machine | ")
    ade = startup.preset_classes("ADE20K (150)")
    assert "building | edifice" in ade and not any("," in n for n in ade)


def test_extend_keeps_the_box_and_adds_only_new_classes():
    out = startup.fill_classes("Cat, my special thing", "PASCAL VOC (20)", extend=True)
    names = parse_classes(out)
    assert names[:2] == ["Cat", "my special thing"]
    assert len(names) == 2 + 19  # "cat" is in VOC already (case-insensitive)
    assert startup.fill_classes("  ", "PASCAL VOC (20)", extend=True).startswith("aeroplane")
    with pytest.raises(ZegFormerError, match="unknown preset"):
        startup.fill_classes("", "Cityscapes", extend=False)


def test_describe_classes_shows_the_parsed_list_or_the_problem():
    assert "2 classes" in startup.describe_classes("cat,  tv|television")
    assert r"**tv \| television**" in startup.describe_classes("cat,  tv|television")
    assert "at most" in startup.describe_classes("")
    assert "Cannot use" in startup.describe_classes("cat, CAT")
    many = ", ".join(f"class{i}" for i in range(MAX_CLASSES + 1))
    assert "too many" in startup.describe_classes(many)


def test_expand_modes():
    assert expand_modes("both") == ("decoupled", "pixel")
    assert expand_modes("pixel") == ("pixel",)
    with pytest.raises(ZegFormerError, match="unknown mode"):
        expand_modes("fast")


def test_a_checkpoint_without_decoupled_mode_refuses_both(tiny_baseline):
    """Whether the checkpoint supports a mode is the predictor's check; the app shows it."""
    import app

    with pytest.raises(gr.Error, match="only mode='pixel'"):
        app.segment(tiny_baseline, app.serve(tiny_baseline), str(CAT), "cat, wall", "both",
                    0.0, 0.5, progress=no_progress)
    out = app.segment(tiny_baseline, app.serve(tiny_baseline), str(CAT), "cat, wall", "pixel",
                      0.0, 0.5, progress=no_progress)
    assert out[4]["mode"] == "pixel"


# ------------------------------------------------------------------------------ responses
def test_respond_shows_the_results_in_memory(tmp_path):
    image, names, results = two_modes_scene()
    out = tables.respond(image, results, 0.4, tmp_path)
    by_name = {Path(f).name: f for f in out.files}
    assert set(by_name) >= {"decoupled_overlay.webp", "decoupled_labels.png", "pixel_figure.webp",
                            "disagreement.webp", "classes.csv", "result.json"}
    assert Path(out.files[-1]).name == "result.json"  # the document last, naming every file
    data = json.loads(Path(by_name["result.json"]).read_text())
    assert data == json.loads(json.dumps(out.data))
    assert data["files"] == [Path(f).name for f in out.files]
    assert data["original_size"] == {"height": 48, "width": 64}
    # the API's confidences: found classes only, each its mean score over its pixels
    assert out.confidences == {c.name: c.confidence for c in results[0].classes if c.present}
    assert len(out.table) == 2 * len(names) and out.table[0][:3] == [
        results[0].present_classes[0].name, "seen" if results[0].present_classes[0].seen
        else "novel", "decoupled"]
    assert "downscaled from 64 × 48" in out.status and "weights: untrained" in out.status
    assert out.parsed == startup.describe_classes(", ".join(names))
    assert out.api_values() == (out.confidences, {"headers": tables.TABLE_HEADERS,
                                                  "data": out.table},
                                out.disagreement, out.files, out.data, out.status, out.parsed)
    assert "Both modes" in out.panel and "pixel: confidence" in out.panel
    assert out.page_table.headers[2:] == ["decoupled: area", "decoupled: confidence",
                                          "pixel: area", "pixel: confidence"]

    values = out.overlays  # drawn from the results in memory, not from the files
    assert [title for _, title, _ in values] == ["Decoupled (ZegFormer)", "Pixel-level"]
    (base, masks), _, cmap = values[0]
    assert base is image
    present = results[0].present_classes
    assert [label for _, label in masks] == [  # the legend gives areas, not confidences
        f"{views.short_name(c.name)} — {views.area_text(c.area_fraction)} of image"
        for c in present]
    assert list(cmap) == [label for _, label in masks]
    assert set(cmap.values()) <= {c["color"] for c in out.data["classes"]}
    np.testing.assert_allclose(masks[0][0], (results[0].label_map == present[0].index) * 0.4)
    (base2, masks2), _, _ = values[1]
    np.testing.assert_allclose(masks2[0][0], (results[1].label_map ==
                                              results[1].present_classes[0].index) * 0.4)
    # an image that is not the one the results were computed on is refused, not drawn
    with pytest.raises(ValueError, match="does not match"):
        tables.respond(np.zeros((5, 50, 3), np.uint8), results, 0.4, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_respond_single_mode_has_no_disagreement_and_checks_opacity(tmp_path):
    image = np.zeros((24, 32, 3), np.uint8)
    out = tables.respond(image, [block_result(["a", "b"], untrained=False)], 1.0, tmp_path)
    assert out.disagreement is None and "disagreement_fraction" not in out.data
    assert "untrained" not in out.status.lower() and "downscaled" not in out.status
    assert len(out.overlays) == 1
    with pytest.raises(ZegFormerError, match="opacity"):
        tables.respond(image, [block_result(["a", "b"])], 1.5, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing written with a bad opacity


def test_output_dirs_are_fresh_and_old_ones_pruned(tmp_path):
    from zegformer.faces.web_guard import OutputStore

    store = OutputStore(tmp_path, max_age_s=60)
    a, b = store.new_dir(), store.new_dir()
    assert a != b and a.is_dir() and b.is_dir()
    old = tmp_path / f"{time.time() - 120:.0f}-{a.name.split('-')[1]}"  # made 2 minutes ago
    a.rename(old)
    store.new_dir()
    assert not old.exists() and b.exists()


def test_run_modes_spreads_progress_over_modes_and_decodes_once(tmp_path):
    from zegformer.inference.image import load_image

    calls, seen, decodes = [], [], []

    class Recorder:  # decodes what it is given, as Predictor.predict does, and keeps the pixels
        def predict(self, image, classes, mode, threshold, progress):
            seen.append((image, classes, threshold))
            if not isinstance(image, np.ndarray):
                decodes.append(image)
            progress(0.5, "half")
            result = block_result(["a", "b"], mode)
            result.image = image if isinstance(image, np.ndarray) else load_image(image)
            return result

    path = tmp_path / "img.png"
    Image.fromarray(np.full((6, 8, 3), 7, np.uint8)).save(path)
    rgb, results = run_modes(Recorder(), path, "a, b", ["decoupled", "pixel"], 0.3,
                             lambda f, d: calls.append((f, d)))
    assert [r.mode for r in results] == ["decoupled", "pixel"]
    assert calls == [(0.25, "Decoupled (ZegFormer): half"), (0.75, "Pixel-level: half")]
    assert rgb.shape == (6, 8, 3) and (rgb == 7).all()
    # the upload goes to the predictor as given and is decoded once, by the predictor; the
    # second mode and the drawings reuse those pixels; the class text and threshold pass through
    assert decodes == [path] and seen[0][0] == path and seen[1][0] is rgb
    assert [(c, t) for _, c, t in seen] == [("a, b", 0.3)] * 2


# ------------------------------------------------------------------------------ start-up
def test_without_weights_the_app_explains_what_to_set(monkeypatch):
    for var in (startup.WEIGHTS_ENV, startup.CLIP_WEIGHTS_ENV, startup.CONFIG_ENV,
                startup.RANDOM_ENV):
        monkeypatch.delenv(var, raising=False)
    message = startup.load_app_predictor()
    assert isinstance(message, str)
    assert "ZEGFORMER_WEIGHTS" in message and "--random-weights" in message

    import app

    demo = app.build_demo(message)
    ids = {c["props"].get("elem_id") for c in demo.get_config_file()["components"]}
    assert {"setup-help", "input-image", "classes", "run"} <= ids
    with pytest.raises(gr.Error, match="ZEGFORMER_WEIGHTS"):
        app.segment(message, None, str(CAT), "cat", "decoupled", 0.0, 0.5, progress=no_progress)


def test_random_weights_from_the_environment(monkeypatch):
    monkeypatch.setenv(startup.RANDOM_ENV, "1")
    predictor = startup.load_app_predictor()
    assert predictor.untrained


def test_blocks_build_with_one_public_endpoint(tiny_demo):
    config = tiny_demo.get_config_file()
    public = [d for d in config["dependencies"] if d.get("api_visibility", "public") == "public"]
    assert [d["api_name"] for d in public] == ["segment"]
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"overlay", "overlay-pixel", "confidences", "class-table", "downloads", "result-json",
            "status", "disagreement", "preset", "mode", "threshold", "opacity", "untrained"} <= ids
    assert tiny_demo._queue.max_size == 32  # a burst waits in a bounded queue
    by_id = {c["id"]: c["props"].get("elem_id") for c in config["components"]}
    assert public[0]["targets"] == []  # an API endpoint; the page's button has its own event
    api_outputs = [by_id[i] for i in public[0]["outputs"]]
    assert api_outputs == ["api-confidences", "class-table", "disagreement", "downloads",
                           "result-json", "status", "parsed-classes"]
    from zegformer.faces.page import PAGE_OUTPUTS

    page = [fn for fn in tiny_demo.fns.values()
            if [o.elem_id for o in fn.outputs] == PAGE_OUTPUTS]
    runs = [fn for fn in page if fn.concurrency_id == "model"]  # the button and the examples
    redraws = [fn for fn in page if fn.concurrency_id == "redraw"]
    catch_ups = [fn for fn in redraws if fn.name == "catch_up"]  # after each run: sliders moved?
    redraws = [fn for fn in redraws if fn.name != "catch_up"]  # the two sliders
    assert len(runs) == 2 and len(redraws) == 2 and len(catch_ups) == 2 and len(page) == 6
    assert all(fn.queue and fn.api_visibility == "private" for fn in page)  # images: queued
    assert all(fn.trigger_mode == "always_last" for fn in redraws)
    assert all(fn.targets == [(None, "then")] for fn in catch_ups)  # chained to the runs
    sliders = {t[0]: t[1] for fn in redraws for t in fn.targets}
    assert sorted(by_id[i] for i in sliders) == ["opacity", "threshold"]
    assert set(sliders.values()) == {"release"}
    examples = next(c for c in config["components"] if c["props"].get("elem_id") == "examples")
    assert [by_id[i] for i in examples["props"]["component_ids"]] == ["input-image", "classes"]
    image = next(c for c in config["components"] if c["props"].get("elem_id") == "input-image")
    assert image["props"]["sources"] == ["upload", "webcam", "clipboard"]


def test_the_callbacks_segment_in_memory(tiny_predictor):
    import app

    infer = app.serve(tiny_predictor)
    out = app.segment(tiny_predictor, infer, str(CAT), "cat, wall | partition", "both", 0.2,
                      0.6, progress=no_progress)
    confidences, table, disagreement, files, data, status, parsed = out
    assert data["mode"] == "both" and set(data["results"]) == {"decoupled", "pixel"}
    assert data["opacity"] == 0.6 and disagreement in files  # the file written, not a copy
    assert Image.open(disagreement).width == data["image_size"]["width"]
    assert all(Path(f).is_file() for f in files) and "**pixel:**" in status
    assert "2 classes" in parsed
    assert set(confidences) == {c["name"] for c in data["classes"] if c["present"]}

    shown = app.segment_and_show(tiny_predictor, infer, str(CAT), "cat, wall | partition",
                                 "decoupled", 0.0, 0.5, progress=no_progress)
    assert len(shown) == 10 and shown[8]["visible"] is False  # no second overlay in one mode
    assert shown[2]["visible"] is False  # nor a disagreement map
    assert shown[9].results[0].mode == "decoupled" and shown[9].threshold == 0.0  # kept
    first = shown[7]
    assert first["label"] == "Decoupled (ZegFormer)"
    (base, masks) = first["value"]
    with Image.open(CAT) as im:
        assert base.shape == (im.height, im.width, 3)
    found = [c for c in shown[4]["classes"] if c["present"]]
    assert sorted(label for _, label in masks) == sorted(
        f"{views.short_name(c['name'])} — {views.area_text(c['area_fraction'])} of image"
        for c in found)
    assert set(first["color_map"].values()) == {c["color"] for c in found}
    assert sum(float(m.sum()) for m, _ in masks) == pytest.approx(
        0.5 * base.shape[0] * base.shape[1] * (1 - shown[4]["unlabeled_fraction"]))
    with pytest.raises(gr.Error, match="Upload an image"):
        app.segment(tiny_predictor, infer, None, "cat", "decoupled", 0.0, 0.5,
                    progress=no_progress)
    with pytest.raises(gr.Error, match="opacity"):
        app.segment(tiny_predictor, infer, str(CAT), "cat", "decoupled", 0.0, 1.5,
                    progress=no_progress)
    with pytest.raises(gr.Error, match="threshold"):
        app.segment(tiny_predictor, infer, str(CAT), "cat", "decoupled", 2.0, 0.5,
                    progress=no_progress)
    # the page's test-time augmentation box: the official passes, named on the status line
    shown = app.segment_and_show(tiny_predictor, infer, str(CAT), "cat, wall", "decoupled", 0.0,
                                 0.5, True, progress=no_progress)
    assert shown[4]["results"]["decoupled"]["tta_passes"] == 12
    assert "test-time augmentation: 12 passes" in shown[5]


def test_a_second_click_on_an_example_does_not_run_the_model():
    import app

    calls = []

    def infer(image, classes, modes, threshold, progress=None):
        calls.append((image, classes, tuple(modes), threshold))
        return None, [block_result(["a"], m) for m in modes]

    example = app.remembered(infer, size=2)
    first = example("a.jpg", "a", ["decoupled"], 0.0, print)
    assert example("a.jpg", "a", ["decoupled"], 0.0, None) is first
    example("b.jpg", "a", ["decoupled"], 0.0)
    assert calls == [("a.jpg", "a", ("decoupled",), 0.0), ("b.jpg", "a", ("decoupled",), 0.0)]


def test_the_fast_box_reaches_the_predictor_and_is_said_on_the_page(tiny_predictor):
    import app

    from zegformer.faces.serving import chosen

    assert chosen(tta=False, fast=True) == {"fast": True} and chosen(tta=False, fast=False) == {}
    with pytest.raises(TypeError):
        chosen(fats=True)
    infer = app.serve(tiny_predictor)
    exact = app.segment_and_show(tiny_predictor, infer, str(CAT), "cat, wall", "decoupled", 0.0,
                                 0.5, progress=no_progress)
    fast = app.segment_and_show(tiny_predictor, infer, str(CAT), "cat, wall", "decoupled", 0.0,
                                0.5, False, "", True, progress=no_progress)
    assert exact[4]["fast"] is False and "fast approximation" not in exact[5]
    assert fast[4]["fast"] is True and "fast approximation" in fast[5]
    assert "weights: untrained" in fast[5]  # the status line says it once, briefly

    calls = []

    def counting(image, classes, modes, threshold, progress=None, **options):
        calls.append(options)
        return None, [block_result(["a"], m) for m in modes]

    example = app.remembered(counting, size=4)
    example("a.jpg", "a", ["decoupled"], 0.0)
    example("a.jpg", "a", ["decoupled"], 0.0, fast=True)  # not the exact answer again
    example("a.jpg", "a", ["decoupled"], 0.0, fast=True)
    assert calls == [{}, {"fast": True}]


def test_presets_fill_the_class_box():
    import app

    assert app.replace_classes("cat", "PASCAL VOC (20)").startswith("aeroplane, bicycle")
    assert app.add_classes("cat", "PASCAL VOC (20)").startswith("cat, aeroplane")
    with pytest.raises(gr.Error, match="Choose a preset"):
        app.replace_classes("cat", None)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples_cache"))
    import app
    from zegformer import load_random_predictor

    return app.build_demo(load_random_predictor())
