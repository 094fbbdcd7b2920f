"""The Space through its public API: a real server on 127.0.0.1 with the tiny model, called with
gradio_client, as a script author would."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from zegformer.text import MAX_CLASSES, MAX_NAME_LENGTH  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = json.loads((ROOT / "examples" / "examples.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples_cache"))
    import app
    from gradio_client import Client
    from zegformer import load_random_predictor

    demo = app.build_demo(load_random_predictor())
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False,
                     download_files=str(tmp_path_factory.mktemp("downloads")))
    finally:
        demo.close()


def segment(client, image, classes, mode="decoupled", threshold=0.0, opacity=0.5):
    from gradio_client import handle_file

    out = client.predict(handle_file(str(image)), classes, mode, threshold, opacity,
                         api_name="/segment")
    names = ["confidences", "table", "disagreement", "files", "result", "status", "parsed"]
    assert len(out) == len(names)
    return dict(zip(names, out))


def by_name(files):
    return {Path(f).name: Path(f) for f in files}


def test_only_segment_is_public(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/segment"]
    assert not api["unnamed_endpoints"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/segment"]["parameters"]]
    assert params == ["image", "classes", "mode", "threshold", "opacity"]


def test_api_page_names_every_parameter_and_output(client):
    """view_api shows each value under its component's label, never Gradio's `value_21`."""
    import re

    api = client.view_api(print_info=False, return_format="dict")
    endpoint = api["named_endpoints"]["/segment"]
    labels = [p["label"] for p in endpoint["parameters"] + endpoint["returns"]]
    assert not [n for n in labels if re.fullmatch(r"(value|parameter)_\d+", n)], labels
    assert [r["label"] for r in endpoint["returns"]] == [
        "Per-class confidence (mean score over its pixels)", "Classes",
        "Where the two modes disagree", "Downloads (label map, overlay, figure, CSV, JSON)",
        "Result", "Status", "Parsed classes"]
    assert [p["component"] for p in endpoint["parameters"]] == ["Image", "Textbox", "Radio",
                                                              "Slider", "Slider"]
    assert "Segment `image` into the comma-separated `classes`" in endpoint["description"]


def test_segment_an_example_image(client):
    example = EXAMPLES[0]
    image = ROOT / "examples" / example["image"]
    out = segment(client, image, example["classes"])
    requested = [c.strip() for c in example["classes"].split(",")]
    data = out["result"]
    assert [c["name"] for c in data["classes"]] == requested
    for c in data["classes"]:
        assert 0.0 <= c["confidence"] <= 1.0 and 0.0 <= c["area_fraction"] <= 1.0
        assert c["split"] in ("seen", "novel") and c["color"].startswith("#")
    assert sum(c["area_fraction"] for c in data["classes"]) == pytest.approx(1.0, abs=1e-6)
    assert data["untrained"] is True and data["mode"] == "decoupled"
    files = by_name(out["files"])
    width, height = Image.open(image).size
    assert Image.open(files["decoupled_overlay.webp"]).size == (width, height)
    assert Image.open(files["decoupled_labels.png"]).size == (width, height)
    assert json.loads(files["result.json"].read_text())["classes"] == data["classes"]
    assert {c["label"] for c in out["confidences"]["confidences"]} <= set(requested)
    assert [row[0] for row in out["table"]["data"]] and len(out["table"]["data"]) == len(requested)
    assert "weights: untrained" in out["status"] and "**device:** cpu" in out["status"]
    assert "backbone" in out["status"]  # latency per stage
    assert out["disagreement"] is None


def test_both_modes_side_by_side(client):
    out = segment(client, ROOT / "examples" / EXAMPLES[1]["image"], "cat, tv | television, wall",
                  mode="both")
    data = out["result"]
    assert data["mode"] == "both" and set(data["results"]) == {"decoupled", "pixel"}
    assert [c["name"] for c in data["results"]["pixel"]["classes"]] == ["cat", "tv | television",
                                                                      "wall"]
    assert 0.0 <= data["disagreement_fraction"] <= 1.0
    assert Path(out["disagreement"]).is_file()
    names = set(by_name(out["files"]))
    assert {"pixel_overlay.webp", "pixel_labels.png", "disagreement.webp"} <= names
    assert [row[2] for row in out["table"]["data"]] == ["decoupled"] * 3 + ["pixel"] * 3
    assert "**pixel:**" in out["status"]


def test_threshold_leaves_pixels_unlabelled(client):
    image = ROOT / "examples" / EXAMPLES[2]["image"]
    low = segment(client, image, "cup, table, wall", threshold=0.0)["result"]
    high = segment(client, image, "cup, table, wall", threshold=1.0)["result"]
    assert low["unlabeled_fraction"] == 0.0
    assert high["unlabeled_fraction"] > 0.5
    assert sum(c["area_fraction"] for c in high["classes"]) < 0.5


def test_large_images_are_downscaled(client, tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1800, 2500, 3), np.uint8)).save(path)
    data = segment(client, path, "noise, sky")["result"]
    assert data["original_size"] == {"height": 1800, "width": 2500}
    assert max(data["image_size"].values()) == 2048


BAD_CASES = [
    ("not_an_image", "cat", "decoupled", "not an image"),
    ("ok", "", "decoupled", "no class names"),
    ("ok", " , ,, ", "decoupled", "no class names"),
    ("ok", "cat, Cat", "decoupled", "listed twice"),
    ("ok", ", ".join(f"c{i}" for i in range(MAX_CLASSES + 1)), "decoupled", "too many classes"),
    ("ok", "x" * (MAX_NAME_LENGTH + 1), "decoupled", "too long"),
    ("ok", "ca\u200bt, dog", "decoupled", "invisible"),
    ("ok", "cat\x07", "decoupled", "control"),
    ("ok", "🙂, dog", "decoupled", "no letters"),
    ("ok", "tv | , dog", "decoupled", "empty synonym"),
    ("ok", "cat", "turbo", "not in the list of choices"),
    ("ok", "cat", ("decoupled", 1.5, 0.5), "greater than maximum"),
    ("ok", "cat", ("decoupled", 0.0, -1.0), "less than minimum"),
]


@pytest.mark.parametrize("image,classes,mode,message", BAD_CASES)
def test_bad_input_gets_a_clear_error_and_the_app_keeps_serving(client, tmp_path, image, classes,
                                                               mode, message):
    from gradio_client.exceptions import AppError

    if image == "not_an_image":
        path = tmp_path / "notes.png"
        path.write_text("this is text, not pixels")
    else:
        path = ROOT / "examples" / EXAMPLES[1]["image"]
    mode, threshold, opacity = mode if isinstance(mode, tuple) else (mode, 0.0, 0.5)
    with pytest.raises(AppError) as err:
        segment(client, path, classes, mode=mode, threshold=threshold, opacity=opacity)
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)
    good = segment(client, ROOT / "examples" / EXAMPLES[1]["image"], "cat, wall")
    assert [c["name"] for c in good["result"]["classes"]] == ["cat", "wall"]


def test_without_weights_the_api_says_what_to_set(monkeypatch):
    import app
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from zegformer.faces import startup

    for var in ("ZEGFORMER_WEIGHTS", "ZEGFORMER_CLIP_WEIGHTS", "ZEGFORMER_CONFIG",
                "ZEGFORMER_RANDOM_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    demo = app.build_demo(startup.load_app_predictor())
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(AppError, match="ZEGFORMER_WEIGHTS"):
            client.predict(handle_file(str(ROOT / "examples" / EXAMPLES[0]["image"])), "cat",
                           "decoupled", 0.0, 0.5, api_name="/segment")
    finally:
        demo.close()


def test_python_app_py_random_weights_serves_the_ui(tmp_path):
    """The documented command starts a working server (killed by its pid afterwards)."""
    from gradio_client import Client, handle_file

    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               OMP_NUM_THREADS="1", GRADIO_EXAMPLES_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--random-weights", "--port",
                             str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        client = None
        for _ in range(600):  # the server is up when the client can read its config
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False,
                                download_files=str(tmp_path))
                break
            except Exception:
                time.sleep(0.5)
        assert client is not None, "app.py did not start serving"
        out = client.predict(handle_file(str(ROOT / "examples" / EXAMPLES[0]["image"])),
                             "person, sky", "pixel", 0.0, 0.5, api_name="/segment")
        assert out[4]["untrained"] is True and out[4]["mode"] == "pixel"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
