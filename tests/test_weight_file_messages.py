"""Wrong weight files get a message that fits the file: random bytes are "not a PyTorch
checkpoint" (no advice to trust a pickle), cut-short files are "cut short", web pages and Git LFS
pointers are named, unknown keys are listed, and only real pickles with Python objects mention
trust_pickle. Through read_state_dict and through load_predictor (what the app and CLIs call)."""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch

from zegformer import WeightsError, build_model, load_predictor
from zegformer.loading.checkpoint import read_state_dict, sniff_weights_file


@pytest.fixture(scope="module")
def tiny_state():
    return {k: v.clone() for k, v in build_model("tiny").state_dict().items()}


def _zip_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _legacy_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _message(path) -> str:
    with pytest.raises(WeightsError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = _write(tmp_path, "garbage.pth", np.random.default_rng(0).bytes(4096))
    message = _message(path)
    assert "is not a PyTorch checkpoint" in message and "cannot be read" in message
    assert "trust_pickle" not in message and "safely" not in message


def test_empty_file(tmp_path):
    assert "is empty (0 bytes)" in _message(_write(tmp_path, "empty.pth", b""))


def test_web_page_saved_as_weights(tmp_path):
    page = b"<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title>"
    assert "is a web page" in _message(_write(tmp_path, "model.pth", page))


def test_git_lfs_pointer(tmp_path):
    pointer = (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 +
               b"\nsize 123456789\n")
    assert "Git LFS pointer" in _message(_write(tmp_path, "model.pth", pointer))


def test_cut_short_zip_checkpoint(tmp_path, tiny_state):
    data = _zip_bytes({"model": tiny_state})
    message = _message(_write(tmp_path, "half.pth", data[: len(data) // 2]))
    assert "cut short" in message and "trust_pickle" not in message


def test_cut_short_legacy_checkpoint(tmp_path, tiny_state):
    data = _legacy_bytes({"model": tiny_state})
    message = _message(_write(tmp_path, "half.pth", data[: len(data) // 2]))
    assert "cut short or damaged" in message and "trust_pickle" not in message


def test_damaged_zip_checkpoint(tmp_path, tiny_state):
    data = bytearray(_zip_bytes({"model": tiny_state}))
    data[40:4000] = bytes(3960)  # the archive's end is intact, its start is not
    message = _message(_write(tmp_path, "damaged.pth", bytes(data)))
    assert "cannot be read" in message and "trust_pickle" not in message


def test_python_objects_need_trust_pickle(tmp_path):
    data = _zip_bytes({"model": {"a": torch.ones(1)}, "extra": os.stat_result(range(10))})
    message = _message(_write(tmp_path, "objects.pth", data))
    assert "holds Python objects besides tensors (os.stat_result)" in message
    assert "trust_pickle=True" in message


def test_pkl_that_is_no_pickle(tmp_path):
    message = _message(_write(tmp_path, "R-101.pkl", b"\x00\x01garbage" * 50))
    assert "not a detectron2 .pkl checkpoint" in message and "trust_pickle" not in message


def test_cut_short_pkl(tmp_path):
    data = pickle.dumps({"model": {"stem.conv1.weight": np.ones(1000, np.float32)}}, protocol=4)
    message = _message(_write(tmp_path, "R-101.pkl", data[: len(data) // 2]))
    assert "cut short or damaged" in message and "trust_pickle" not in message


def test_broken_safetensors(tmp_path, tiny_state):
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tiny_state.items()})
    message = _message(_write(tmp_path, "model.safetensors", data[: len(data) // 3]))
    assert "is not a readable safetensors file" in message
    message = _message(_write(tmp_path, "other.safetensors", b"not safetensors at all"))
    assert "is not a readable safetensors file" in message


def test_sniffing_tells_formats_apart(tiny_state):
    from safetensors.torch import save

    assert sniff_weights_file(_zip_bytes({"a": torch.ones(1)})) == "zip"
    assert sniff_weights_file(_legacy_bytes({"a": torch.ones(1)})) == "pickle"
    assert sniff_weights_file(save({"a": torch.ones(1)})) == "safetensors"
    assert sniff_weights_file(b"\x13\x37" * 20) == "unknown"


# ---------------------------------------------------------------- through load_predictor


def test_load_predictor_names_unknown_keys(tmp_path):
    path = tmp_path / "sam.pth"
    torch.save({"model": {"image_encoder.patch_embed.proj.weight": torch.zeros(2),
                          "mask_decoder.iou_token.weight": torch.zeros(2)}}, path)
    with pytest.raises(WeightsError, match=r"is not a ZegFormer checkpoint.*image_encoder"):
        load_predictor("tiny", path, device="cpu")


def test_load_predictor_garbage_and_wrong_shapes(tmp_path, tiny_state):
    garbage = _write(tmp_path, "garbage.pth", np.random.default_rng(1).bytes(2048))
    with pytest.raises(WeightsError, match="is not a PyTorch checkpoint") as info:
        load_predictor("tiny", garbage, device="cpu")
    assert "trust_pickle" not in str(info.value)
    wrong = dict(tiny_state)
    key = next(k for k in wrong if k.endswith("query_embed.weight"))
    wrong[key] = torch.zeros(3, wrong[key].shape[1])  # 3 queries instead of 10
    path = tmp_path / "other_config.pth"
    torch.save({"model": wrong}, path)
    with pytest.raises(WeightsError, match="shape mismatches.*another config"):
        load_predictor("tiny", path, device="cpu")
