"""The no-weights state of the Space (issue 12), without a browser: what the page says to the
Space owner for each kind of wrong or missing weights (no library or CLI advice), which
controls are switched off, and the API's one-line answer. The browser side is in
test_browser_states.py."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import io
import pickle

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import gradio as gr  # noqa: E402

from zegformer.faces import startup  # noqa: E402

SETUP_VARS = (startup.WEIGHTS_ENV, startup.CLIP_WEIGHTS_ENV, startup.CONFIG_ENV,
              startup.RANDOM_ENV)
LIBRARY_ADVICE = ["weights=PATH", "--opts", "trust_pickle", "--trust-pickle in the CLIs",
                  "clip_weights=", "--clip-weights", "*Variables*"]


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _pickled_objects() -> bytes:
    return _torch_bytes({"model": {"a": torch.ones(1)}, "extra": os.stat_result(range(10))})


# name -> (file bytes, what the page must say)
WRONG_FILES = {
    "garbage.pth": (np.random.default_rng(0).bytes(4096), "is not a PyTorch checkpoint"),
    "empty.pth": (b"", "is empty (0 bytes)"),
    "page.pth": (b"<!DOCTYPE html><html><title>Sign in</title></html>", "is a web page"),
    "lfs.pth": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n",
                "is a Git LFS pointer"),
    "cut.pth": (_torch_bytes({"model": {"a": torch.ones(1000)}})[:600], "is cut short"),
    "objects.pth": (_pickled_objects(), "The app never runs code from a weights file"),
    "sam.pth": (_torch_bytes({"model": {"image_encoder.x": torch.zeros(2)}}),
                "is not a ZegFormer checkpoint"),
    "R-101.pkl": (pickle.dumps({"model": {"x": os.stat_result(range(10))}}),
                  "The app never runs code from a weights file"),
}


@pytest.fixture()
def clean_env(monkeypatch):
    for var in SETUP_VARS + (startup.HF_TOKEN_ENV,):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _help_for(clean_env, tmp_path, name: str) -> startup.SetupHelp:
    data, _ = WRONG_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    clean_env.setenv(startup.WEIGHTS_ENV, str(path))
    message = startup.load_app_predictor()
    assert isinstance(message, startup.SetupHelp), f"{name} loaded"
    return message


@pytest.mark.parametrize("name", list(WRONG_FILES))
def test_each_wrong_weights_file_gets_a_message_that_fits_it(clean_env, tmp_path, name):
    message = _help_for(clean_env, tmp_path, name)
    assert WRONG_FILES[name][1] in message.reason
    assert str(tmp_path / name) in message.reason  # which file
    for advice in LIBRARY_ADVICE:
        assert advice not in message, advice
    assert "\n" not in message.reason
    # the variable's current value is shown, as code
    assert f"`ZEGFORMER_WEIGHTS` = `{tmp_path / name}`" in message


def test_python_objects_are_sent_to_the_converter_not_to_a_flag(clean_env, tmp_path):
    reason = _help_for(clean_env, tmp_path, "objects.pth").reason
    assert "holds Python objects besides tensors (os.stat_result)" in reason
    assert "python -m zegformer.hub convert CKPT.pth OUT_DIR --trust-pickle" in reason
    assert f"point `{startup.WEIGHTS_ENV}` at the `model.safetensors`" in reason


def test_missing_weights_say_which_variable_and_what_it_accepts(clean_env):
    message = startup.load_app_predictor()
    assert message.reason == ("`ZEGFORMER_WEIGHTS` is not set, so there is no ZegFormer "
                              "checkpoint to load.")
    lines = message.splitlines()
    assert lines[0] == "## No model is loaded"
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| `")}
    assert set(rows) == {"`ZEGFORMER_WEIGHTS` (required)", "`ZEGFORMER_CLIP_WEIGHTS` (optional)",
                         "`ZEGFORMER_CONFIG` (optional)", "`HF_TOKEN` (a secret, optional)"}
    assert "hf://owner/repo/model.safetensors" in rows["`ZEGFORMER_WEIGHTS` (required)"]
    assert all(line.count("|") == 3 for line in rows.values())  # two cells each
    assert ("**Now:** `ZEGFORMER_WEIGHTS` not set; `ZEGFORMER_CLIP_WEIGHTS` not set; "
            "`ZEGFORMER_CONFIG` not set; `HF_TOKEN` not set.") in message
    assert "Variables and secrets" in message and "ZEGFORMER_RANDOM_WEIGHTS" in message
    for advice in LIBRARY_ADVICE:
        assert advice not in message


def test_the_clip_hint_names_the_variable_only():
    said = startup.for_space_owner(
        "x.pth is a CLIP state dict: pass it as the CLIP weights "
        "(clip_weights= / --clip-weights / ZEGFORMER_CLIP_WEIGHTS)")
    assert said == ("x.pth is a CLIP state dict: set it as `ZEGFORMER_CLIP_WEIGHTS`, not "
                    "`ZEGFORMER_WEIGHTS`")
    said = startup.for_space_owner("download them once and set ZEGFORMER_CLIP_WEIGHTS "
                                   "(or --clip-weights) to the file")
    assert said == "download them once and set ZEGFORMER_CLIP_WEIGHTS to the file"


def test_loader_text_is_escaped_but_code_spans_stay():
    text = startup.markdown_with_code("a_b*c <title> run `git lfs pull` now")
    assert "`git lfs pull`" in text and "<title>" not in text and "\\_" in text
    assert startup.markdown_with_code("odd ` tick") == startup.markdown_text("odd ` tick")


def test_the_token_is_never_shown(clean_env):
    clean_env.setenv(startup.HF_TOKEN_ENV, "hf_secret_value")
    clean_env.setenv(startup.CONFIG_ENV, "my`config.yaml")
    message = startup.setup_help("reason")
    assert "hf_secret_value" not in message and "`HF_TOKEN` set" in message
    assert "`ZEGFORMER_CONFIG` = `my'config.yaml`" in message  # a backtick cannot end the code


def test_without_a_model_every_control_is_off_and_the_examples_have_no_event(clean_env):
    import app

    message = startup.load_app_predictor()
    demo = app.build_demo(message)
    config = demo.get_config_file()
    by_id = {c["id"]: c for c in config["components"]}
    read = {i for d in config["dependencies"] for i in d["inputs"]}
    for cid in read:
        props = by_id[cid]["props"]
        if by_id[cid]["type"] != "state":
            assert props.get("interactive") is False, props.get("elem_id")
    buttons = [c for c in config["components"] if c["type"] == "button"]
    assert buttons and all(c["props"]["interactive"] is False for c in buttons)
    examples = next(c for c in config["components"] if c["props"].get("elem_id") == "examples")
    assert examples["type"] == "dataset"
    assert not any(examples["id"] in [t[0] for t in d["targets"]]
                   for d in config["dependencies"])
    help_box = next(c for c in config["components"] if c["props"].get("elem_id") == "setup-help")
    assert help_box["props"]["value"] == str(message)


def test_with_a_model_the_controls_stay_on(tmp_path):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path / "examples_cache")
    import app
    from zegformer import load_random_predictor

    config = app.build_demo(load_random_predictor()).get_config_file()
    run = next(c for c in config["components"] if c["props"].get("elem_id") == "run")
    assert run["props"].get("interactive") is not False


def test_the_api_answer_without_a_model_is_one_plain_line(clean_env):
    import app

    message = startup.load_app_predictor()
    with pytest.raises(gr.Error) as err:
        app.segment(message, None, None, "cat", "decoupled", 0.0, 0.5,
                    progress=lambda *a, **k: None)
    text = err.value.message
    assert text.startswith("No model is loaded: ZEGFORMER_WEIGHTS is not set")
    assert "\n" not in text and "`" not in text and "**" not in text and "|" not in text
    assert "ZEGFORMER_CLIP_WEIGHTS" in text
