"""python -m zegformer.hub: convert a checkpoint to safetensors + config + model card, load it
without pickle (bitwise the same predictions as the .pth), push it to a fake Hub on 127.0.0.1
and load it back through hf://."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fake_hub import TOKEN, start_fake_hub
from zegformer import WeightsError, ZegFormerError, build_model, load_predictor
from zegformer.hub import WEIGHTS_FILE, convert_checkpoint
from zegformer.hub.__main__ import main as hub_main
from zegformer.loading.checkpoint import read_state_dict
from zegformer.loading.config import load_config

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
IMAGE = np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)
NAMES = "cat, dog | puppy, grass, sky"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint as the official release stores one: {"model": ...} with the training-
    only criterion buffer, plus a non-weight entry."""
    torch.manual_seed(1)
    sd = dict(build_model("tiny").state_dict())
    sd["criterion.empty_weight"] = torch.ones(157)
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    torch.save({"model": sd, "iteration": 59999}, path)
    return path


@pytest.fixture(scope="module")
def converted(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("repo")
    info = convert_checkpoint(checkpoint, out, "tiny")
    return out, info


def _predictions(predictor):
    return {f"{mode}_{key}": getattr(predictor.predict(IMAGE, NAMES, mode=mode), key)
            for mode in ("decoupled", "pixel") for key in ("probs", "label_map")}


def test_convert_writes_weights_config_and_card(checkpoint, converted):
    from safetensors import safe_open

    out, info = converted
    original = torch.load(checkpoint, weights_only=True)["model"]
    with safe_open(str(out / WEIGHTS_FILE), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        for key in keys:  # official names, values bit for bit
            assert torch.equal(f.get_tensor(key), original[key]), key
    assert keys == set(original) - {"criterion.empty_weight"}
    assert info["dropped"] == ["criterion.empty_weight"]
    assert meta["zegformer_format"] == "zegformer" and meta["config"] == "tiny"
    # the config and its _BASE_ chain, flattened into configs/, load to the same config
    copied = out / "configs" / "tiny.yaml"
    assert len(list((out / "configs").glob("*.yaml"))) == 4
    a, b = load_config(copied), load_config("tiny")
    a.pop("CONFIG_FILE"), b.pop("CONFIG_FILE")
    assert a == b
    # the card: Hugging Face front matter, how to load, where the weights come from
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == "other" and front["library_name"] == "zegformer-studio"
    assert {"image-segmentation", "zegformer", "safetensors"} <= set(front["tags"])
    assert 'load_predictor("tiny", "hf://OWNER/REPO/model.safetensors")' in text
    assert info["source_sha256"] in text and "Untrained test weights" in text


def test_safetensors_predict_bitwise_like_the_pth(checkpoint, converted, monkeypatch):
    out, _ = converted
    from_pth = _predictions(load_predictor("tiny", checkpoint, device="cpu"))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a safetensors file must not be unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    from_st = _predictions(load_predictor("tiny", out / WEIGHTS_FILE, device="cpu"))
    for key, value in from_pth.items():
        np.testing.assert_array_equal(from_st[key], value, err_msg=key)
    # a safetensors file under another name is recognised by its bytes
    renamed = out.parent / "renamed.pth"
    renamed.write_bytes((out / WEIGHTS_FILE).read_bytes())
    assert set(read_state_dict(renamed)) == set(read_state_dict(out / WEIGHTS_FILE))


def test_convert_refuses_a_config_that_does_not_fit(checkpoint, tmp_path):
    with pytest.raises(WeightsError, match="does not fit --config-file zegformer_R101"):
        convert_checkpoint(checkpoint, tmp_path / "r101", "zegformer_R101_bs32_60k_vit16_coco-stuff")
    assert not (tmp_path / "r101" / WEIGHTS_FILE).exists()


def test_convert_cli_and_overwrite(checkpoint, tmp_path, capsys):
    args = ["convert", str(checkpoint), str(tmp_path / "out"), "--config-file", "tiny",
            "--repo-id", "someone/zegformer-tiny", "--license", "mit"]
    assert hub_main(args) == 0
    assert "dropped: criterion.empty_weight" in capsys.readouterr().out
    text = (tmp_path / "out/README.md").read_text()
    assert "hf://someone/zegformer-tiny/model.safetensors" in text and "license: mit" in text
    assert hub_main(args) == 1  # the weights exist: refused without --force
    assert "--force" in capsys.readouterr().err
    assert hub_main(args + ["--force"]) == 0


def test_convert_refuses_a_backbone_only_file(tmp_path):
    path = tmp_path / "R-101.pth"
    torch.save({"stem.conv1.weight": torch.zeros(1), "res2.0.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not a trained ZegFormer"):
        convert_checkpoint(path, tmp_path / "out", "tiny")


# ---------------------------------------------------------------- push / pull via a fake Hub


def _env(tmp_path, hub_url: str, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy") and
           not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT=hub_url, HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path / "hf_home"),
               NO_PROXY="127.0.0.1,localhost", PYTHONPATH=str(ROOT))
    if token:
        env["HF_TOKEN"] = token
    return env


def _local_only(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TESTS / "local_only.py"), *args], env=env,
                          capture_output=True, text=True, timeout=240, cwd=str(ROOT))


@pytest.fixture
def fake_hub():
    hub, server = start_fake_hub()
    yield hub
    server.shutdown()
    server.server_close()


def test_push_uploads_the_folder_and_hf_loads_it_back(converted, checkpoint, fake_hub,
                                                      tmp_path):
    out, _ = converted
    folder = tmp_path / "to_push"
    folder.mkdir()
    for p in out.rglob("*"):
        if p.is_file():
            (folder / p.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (folder / p.relative_to(out)).write_bytes(p.read_bytes())
    env = _env(tmp_path, fake_hub.url)
    run = _local_only(["-m", "zegformer.hub", "push", str(folder), "someone/zegformer-tiny"], env)
    assert run.returncode == 0, run.stderr
    assert "uploaded" in run.stdout and fake_hub.url in run.stdout
    files = fake_hub.repos["someone/zegformer-tiny"]
    assert set(files) == {"README.md", WEIGHTS_FILE} | {
        f"configs/{p.name}" for p in (out / "configs").iterdir()}
    assert files[WEIGHTS_FILE] == (out / WEIGHTS_FILE).read_bytes()
    assert len(fake_hub.lfs) == 1  # the weights went through LFS, the rest inline
    assert "hf://someone/zegformer-tiny/model.safetensors" in files["README.md"].decode()
    assert "OWNER/REPO" not in files["README.md"].decode()
    assert fake_hub.created[0]["name"] == "zegformer-tiny" and \
        fake_hub.created[0]["organization"] == "someone"
    assert fake_hub.unknown == []
    # a second push (repository exists, exist_ok) also works
    assert _local_only(["-m", "zegformer.hub", "push", str(folder), "someone/zegformer-tiny"],
                       env).returncode == 0
    # hf:// through huggingface_hub's download into an empty cache, no pickle
    script = tmp_path / "pull.py"
    script.write_text(
        "import sys, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from test_hub import IMAGE, NAMES, _predictions\n"
        "from zegformer import load_predictor\n"
        "p = load_predictor('tiny', 'hf://someone/zegformer-tiny/model.safetensors', "
        "device='cpu')\n"
        f"np.savez({str(tmp_path / 'pulled.npz')!r}, **_predictions(p))\n")
    run = _local_only([str(script)], env)
    assert run.returncode == 0, run.stderr
    pulled = np.load(tmp_path / "pulled.npz")
    expected = _predictions(load_predictor("tiny", checkpoint, device="cpu"))
    for key, value in expected.items():
        np.testing.assert_array_equal(pulled[key], value, err_msg=key)
    assert ("GET", f"/someone/zegformer-tiny/resolve/main/{WEIGHTS_FILE}") in fake_hub.requests


def test_push_errors(converted, fake_hub, tmp_path):
    out, _ = converted
    run = _local_only(["-m", "zegformer.hub", "push", str(out), "someone/x"],
                      _env(tmp_path, fake_hub.url, token=None))
    assert run.returncode == 1 and "no Hugging Face token" in run.stderr
    run = _local_only(["-m", "zegformer.hub", "push", str(out), "someone/x"],
                      _env(tmp_path, fake_hub.url, token="hf_wrong"))
    assert run.returncode == 1 and "upload to someone/x" in run.stderr and "401" in run.stderr
    assert fake_hub.repos == {}
    with pytest.raises(ZegFormerError, match="is not owner/name"):
        from zegformer.hub import push_folder

        push_folder(out, "no-owner")
    with pytest.raises(ZegFormerError, match="has no model.safetensors"):
        push_folder(tmp_path, "someone/x")


def test_hub_help_is_documented():
    run = subprocess.run([sys.executable, "-m", "zegformer.hub", "convert", "--help"],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and "--config-file" in run.stdout
    assert json.dumps("zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval")[1:-1] in run.stdout


def test_local_only_guard_refuses_other_hosts(tmp_path):
    script = tmp_path / "reach_out.py"
    script.write_text("import socket\n"
                      "try:\n"
                      "    socket.create_connection(('93.184.216.34', 80), timeout=1)\n"
                      "except OSError as e:  # refused at the lookup or at the connect\n"
                      "    print('refused:', e)\n"
                      "try:\n"
                      "    socket.getaddrinfo('huggingface.co', 443)\n"
                      "except socket.gaierror as e:\n"
                      "    print('refused:', e)\n")
    run = _local_only([str(script)], dict(os.environ))
    assert run.stdout.count("refused: local_only") == 2, run.stdout + run.stderr
