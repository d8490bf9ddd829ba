"""Issue 22, groups 4 and 6: every setting has one declared range, checked before any work; output
folders and files, the cache's disk room and a checkpoint's contents are checked before the work.

Each refusal is met through the script's command line: exit status 2, one sentence naming the
setting or file, no traceback, nothing already written changed.
"""
import glob
import os
import shutil
from collections import namedtuple

import pytest
import torch

import NatureTypesDataset
import accuracy_eval
import bench
import data_handling
import export
import feature_map
import main as main_script
import predict
import report
import train
from conftest import ROOT, train_args
from scenes import cli
from test_robustness import assert_user_error, run_cli, trained  # noqa: F401 (trained: a fixture)

SCRIPTS = ["main", "data_handling", "NatureTypesDataset", "train", "accuracy_eval", "feature_map", "bench",
           "report", "predict", "export", "audit"]


# ---------------------------------------------------------------------------------------------
# the range table

@pytest.mark.parametrize("value, spec, inside", [
    (1, ">= 1", True), (0, ">= 1", False), (0.5, "> 0 and <= 1", True), (0, "> 0 and <= 1", False),
    (1.0, "> 0 and <= 1", True), (1.01, "> 0 and <= 1", False), (0, "0 or 16 to 1024", True),
    (8, "0 or 16 to 1024", False), (16, "0 or 16 to 1024", True), (1024, "0 or 16 to 1024", True),
    (1025, "0 or 16 to 1024", False), (0.9, ">= 0 and < 1", True), (1.0, ">= 0 and < 1", False),
    (-1e-9, ">= 0", False), ("plain", "one of cached, plain", True), ("fast", "one of cached, plain", False),
])
def test_a_value_is_inside_its_declared_range_exactly_when_it_meets_every_condition(value, spec, inside):
    assert cli.in_range(value, spec) is inside


def test_the_range_is_read_from_the_end_of_the_comment_only():
    assert cli.declared_range("smallest area fraction [> 0 and <= 1]") == "> 0 and <= 1"
    assert cli.declared_range("a list [a, b] in the middle of a comment") is None
    assert cli.declared_range("no range") is None
    with pytest.raises(ValueError):  # a number range on a word setting is a bug of the script, not the user's
        cli.in_range("cached", ">= 1")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_default_lies_in_its_declared_range(script):
    settings = cli.settings_block(os.path.join(ROOT, f"{script}.py"))
    ranged = [name for name, _, comment in settings if cli.declared_range(comment)]
    assert ranged, f"{script}.py declares no range"
    cli.check_ranges(settings, {name: default for name, default, _ in settings})


# ---------------------------------------------------------------------------------------------
# out of range on the command line

def out_of_range(trained, tmp_path):
    checkpoint, splits_dir = str(trained.run_dir / "best.pth"), trained.splits_dir
    image = glob.glob(os.path.join(trained.root, "sea", "*.jpg"))[0]
    return [
        (train.main, ["--crop_min_scale=-0.1"], "--crop_min_scale=-0.1 is outside its range [> 0 and <= 1]"),
        (train.main, ["--image_size=100000"], "--image_size=100000 is outside its range [16 to 1024]"),
        (train.main, ["--eval_image_size=8"], "--eval_image_size=8 is outside its range [0 or 16 to 1024]"),
        (train.main, ["--lr=nan"], "--lr takes a finite number, not 'nan'"),
        (train.main, ["--label_smoothing=1"], "--label_smoothing=1.0 is outside its range [>= 0 and < 1]"),
        (train.main, ["--optimizer=sgdm"], "--optimizer takes one of sgd, adam, adamw, not 'sgdm'"),
        (train.main, ["--batch_size=0"], "--batch_size=0 is outside its range [>= 2]"),
        (data_handling.main, [f"--data_root={trained.root}", "--val_size=-0.1"], "--val_size=-0.1 is outside"),
        (main_script.main, ["--test_size=inf"], "--test_size takes a finite number"),
        (NatureTypesDataset.main, [f"--splits_dir={splits_dir}", "--num_images=0"], "--num_images=0 is outside"),
        (accuracy_eval.main, [checkpoint, "--batch_size=0"], "--batch_size=0 is outside its range [>= 1]"),
        (accuracy_eval.main, [checkpoint, "--split=tests"], "--split takes one of test, validation, train"),
        (feature_map.main, [f"--checkpoint={checkpoint}", "--channels=0"], "--channels=0 is outside"),
        (report.main, [str(trained.base / "checkpoints"), "--gallery=-1"], "--gallery=-1 is outside"),
        (predict.main, [f"--checkpoint={checkpoint}", image, "--workers=-2"], "--workers=-2 is outside"),
        (predict.main, [f"--checkpoint={checkpoint}", image, "--tta_flip=yes"], "--tta_flip takes one of auto"),
        (export.main, [f"--checkpoint={checkpoint}", f"--out={tmp_path / 'm.onnx'}", "--tolerance=-1"],
         "--tolerance=-1.0 is outside its range [>= 0]"),
        (bench.main, ["--train_steps=0"], "--train_steps=0 is outside its range [>= 1]"),
    ]


def files_under(folder):
    return {path: os.path.getmtime(path) for path in glob.glob(os.path.join(folder, "**"), recursive=True)}


def test_a_setting_outside_its_range_is_refused_before_any_work(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a script would write by default lands here
    before = files_under(str(trained.base))
    for main, argv, sentence in out_of_range(trained, tmp_path):
        code, err = run_cli(main, argv, capsys)
        assert_user_error(code, err, sentence)
    assert files_under(str(trained.base)) == before
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# folders and files a setting names

def a_file(tmp_path, name="a_file"):
    path = tmp_path / name
    path.write_text("not a folder")
    return str(path)


def test_a_file_where_a_folder_is_expected_is_refused_before_any_work(trained, tmp_path, capsys):
    file = a_file(tmp_path)
    checkpoint = str(trained.run_dir / "best.pth")
    cases = [
        (train.main, train_args(trained.splits_dir, tmp_path, f"--checkpoints_dir={file}"), "--checkpoints_dir"),
        (train.main, train_args(trained.splits_dir, tmp_path, f"--cache_dir={file}"), "--cache_dir"),
        (accuracy_eval.main, [checkpoint, f"--out_dir={file}", f"--cache_dir={tmp_path / 'cache'}"], "--out_dir"),
        (feature_map.main, [f"--checkpoint={checkpoint}", f"--out_dir={file}"], "--out_dir"),
        (report.main, [str(trained.base / "checkpoints"), f"--out_dir={file}"], "--out_dir"),
    ]
    for main, argv, setting in cases:
        code, err = run_cli(main, argv, capsys)
        assert_user_error(code, err, f"{setting}={file} is a file, not a folder")
    assert open(file).read() == "not a folder"
    written = [p for p in glob.glob(str(tmp_path / "**"), recursive=True) if os.path.isfile(p)]
    assert written == [file]  # no checkpoint, cache or result was made


def test_a_folder_that_cannot_be_created_is_one_sentence(trained, tmp_path, capsys):
    under_a_file = os.path.join(a_file(tmp_path), "results")
    code, err = run_cli(accuracy_eval.main, [str(trained.run_dir / "best.pth"), f"--out_dir={under_a_file}"], capsys)
    assert_user_error(code, err, f"--out_dir={under_a_file}: the folder cannot be created")


def test_an_output_file_that_is_a_folder_is_refused_before_the_work(trained, tmp_path, capsys):
    checkpoint = str(trained.run_dir / "best.pth")
    image = glob.glob(os.path.join(trained.root, "sea", "*.jpg"))[0]
    folder = tmp_path / "a_folder"
    folder.mkdir()
    for main, argv in ((predict.main, [f"--checkpoint={checkpoint}", image, f"--out={folder}"]),
                       (export.main, [f"--checkpoint={checkpoint}", f"--out={folder}"]),
                       (NatureTypesDataset.main, [f"--splits_dir={trained.splits_dir}", f"--out={folder}"])):
        code, err = run_cli(main, argv, capsys)
        assert_user_error(code, err, f"--out={folder} is a folder")
    assert os.listdir(folder) == []


def test_a_cache_that_would_not_fit_the_disk_is_refused_before_it_is_allocated(trained, tmp_path, capsys,
                                                                              monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    cache = tmp_path / "cache"
    code, err = run_cli(train.main, train_args(trained.splits_dir, tmp_path, f"--cache_dir={cache}"), capsys)
    line = assert_user_error(code, err, "the cache of", "at 40 px needs", f"{cache} has 1e-06 GB free")
    assert "smaller image size" in line
    assert os.listdir(cache) == []  # no sparse file, no temporary file
    assert glob.glob(str(tmp_path / "checkpoints" / "**" / "*.*"), recursive=True) == []


# ---------------------------------------------------------------------------------------------
# a checkpoint's contents

def damaged(trained, tmp_path, change):
    checkpoint = torch.load(trained.run_dir / "best.pth", map_location="cpu", weights_only=True)
    change(checkpoint)
    path = tmp_path / "damaged.pth"
    torch.save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("change, words", [
    (lambda c: c["model"]["fc.weight"].fill_(float("nan")), ["not finite", "fc.weight"]),
    (lambda c: c["model"]["conv1.weight"][0, 0, 0].fill_(float("inf")), ["not finite", "conv1.weight"]),
    (lambda c: c["config"].update(image_size="large"), ["config's image_size is 'large'", "whole number"]),
    (lambda c: c["config"].update(class_names="sea"), ["class_names", "a list of class names"]),
    (lambda c: c["config"].update(std=[0.2, 0.2, 0.0]), ["std", "three positive numbers"]),
    (lambda c: c["config"].pop("mean"), ["not a checkpoint of this project", "mean"]),
    (lambda c: c["model"].update({"fc.bias": [0.0] * 6}), ["model is not a dict of tensors"]),
])
def test_a_damaged_checkpoint_is_refused_by_every_script_that_reads_it(trained, tmp_path, capsys, change, words):
    path = damaged(trained, tmp_path, change)
    image = glob.glob(os.path.join(trained.root, "sea", "*.jpg"))[0]
    for main, argv in ((accuracy_eval.main, [path, f"--out_dir={tmp_path / 'results'}"]),
                       (predict.main, [f"--checkpoint={path}", image]),
                       (export.main, [f"--checkpoint={path}", f"--out={tmp_path / 'm.onnx'}"]),
                       (feature_map.main, [f"--checkpoint={path}", f"--out_dir={tmp_path / 'maps'}"])):
        code, err = run_cli(main, argv, capsys)
        assert_user_error(code, err, path, *words)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "maps" / "feature_maps").exists()
