"""The predictions folder's run file (`_run.json`) records the class names, model, config and
mode, and the evaluation refuses to reuse predictions made with anything else, saying what
differs."""
from __future__ import annotations

import json

import pytest

from zegformer.evaluation import synthetic
from zegformer.evaluation.cli import main
from zegformer.evaluation.runner import RUN_FILE, run_differences, run_ident, EvalOptions

NAMES = list(synthetic.FOLDER_CLASSES)  # sky, grass, cat, dog, frisbee, cow


def _classes_file(path, names, unseen=("frisbee", "cow")):
    path.write_text(json.dumps({"classes": names, "unseen": list(unseen)}), encoding="utf-8")
    return str(path)


@pytest.fixture
def first_run(tmp_path):
    """One image evaluated with random weights: predictions and a run file in tmp/run."""
    synthetic.write_dataset(tmp_path / "data", "folder", 2)
    args = ["--dataset", "folder", "--root", str(tmp_path / "data"), "--output",
            str(tmp_path / "run"), "--random-weights", "--no-progress", "--no-plots"]
    assert main(args + ["--max-images", "1"]) == 0
    return tmp_path, args


def test_run_file_names_the_classes_model_and_mode(first_run):
    tmp, _ = first_run
    saved = json.loads((tmp / "run/predictions" / RUN_FILE).read_text())
    assert saved["classes"] == NAMES
    assert saved["mode"] == "decoupled" and saved["dataset"] == "folder"
    assert saved["model"] == "random weights (untrained)" and saved["config"] is None
    assert "n_classes" not in saved


def test_refuses_another_class_list_with_the_same_count(first_run, capsys):
    tmp, args = first_run
    renamed = ["sky", "lawn"] + NAMES[2:]  # class 1: grass -> lawn, still 6 classes
    capsys.readouterr()
    assert main(args + ["--classes", _classes_file(tmp / "renamed.json", renamed)]) == 1
    err = capsys.readouterr().err
    assert "holds predictions of another run" in err
    assert "class 1 is 'lawn' here but 'grass' in the saved predictions" in err
    assert err.count("\n") == 1  # one line


def test_refuses_the_same_classes_in_another_order(first_run, capsys):
    tmp, args = first_run
    swapped = ["grass", "sky"] + NAMES[2:]
    capsys.readouterr()
    assert main(args + ["--classes", _classes_file(tmp / "swapped.json", swapped)]) == 1
    assert ("class 0 is 'grass' here but 'sky' in the saved predictions "
            "(and 1 more classes differ)") in capsys.readouterr().err


def test_refuses_another_mode_and_says_so(first_run, capsys):
    _, args = first_run
    capsys.readouterr()
    assert main(args + ["--mode", "pixel"]) == 1
    assert "mode is 'pixel' here but 'decoupled' in the saved predictions" in \
        capsys.readouterr().err


def test_same_classes_resume(first_run):
    tmp, args = first_run
    same = _classes_file(tmp / "same.json", NAMES)
    assert main(args + ["--classes", same]) == 0
    summary = json.loads((tmp / "run/small_target/summary.json").read_text())
    assert summary["meta"]["reused_predictions"] == 1 and summary["meta"]["n_images"] == 2


def test_refuses_a_run_file_that_only_counted_classes(first_run, capsys):
    tmp, args = first_run
    run_file = tmp / "run/predictions" / RUN_FILE
    run_file.write_text(json.dumps({"model": "random weights (untrained)", "opts": [],
                                    "mode": "decoupled", "dataset": "folder", "n_classes": 6}))
    capsys.readouterr()
    assert main(args) == 1
    assert "recorded only the number of classes (6)" in capsys.readouterr().err


def test_from_predictions_refuses_another_class_list(first_run, capsys):
    tmp, args = first_run
    assert main(args) == 0  # both images predicted
    renamed = ["sky", "lawn"] + NAMES[2:]
    base = ["--dataset", "folder", "--root", str(tmp / "data"), "--output", str(tmp / "again"),
            "--from-predictions", str(tmp / "run/predictions"), "--no-progress", "--no-plots"]
    capsys.readouterr()
    assert main(base + ["--classes", _classes_file(tmp / "renamed.json", renamed)]) == 1
    assert "class 1 is 'lawn' here but 'grass' in the saved predictions" in \
        capsys.readouterr().err
    assert main(base) == 0


def test_differences_are_listed_one_by_one():
    opts = EvalOptions(dataset="folder", root="r", output="o", mode="pixel",
                       config_file="a.yaml", opts=["MODEL.WEIGHTS", "w2.pth"])
    here = run_ident("a.yaml", opts, ["sky", "cat"])
    saved = dict(here, opts=["MODEL.WEIGHTS", "w1.pth"], classes=["sky", "cat", "dog"])
    diff = run_differences(here, saved)
    assert diff == ["opts is ['MODEL.WEIGHTS', 'w2.pth'] here but ['MODEL.WEIGHTS', 'w1.pth'] "
                    "in the saved predictions",
                    "this run has 2 classes but the saved predictions 3"]
    assert run_differences(here, dict(here)) == []
