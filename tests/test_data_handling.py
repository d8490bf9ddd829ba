"""The split (data_handling.py, main.py --steps=split) and the command-line convention (cli.py).

Small image folders are generated in tmp_path; the real-data test runs only where the scene
images are present.
"""
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from scenes import training
from scenes import cli
import main as main_script
import train as train_script
from conftest import ROOT
from scenes.splitting import (DEFAULT_TEST_SIZE, DEFAULT_VAL_SIZE, SPLITS, check_disjoint, class_quotas, make_splits,
                           resolve_size, scan_dataset)

# Class sizes of the full Intel set (train + test parts of the Kaggle copy): 17,034 images.
FULL_SET_CLASS_COUNTS = [2628, 2745, 3035, 3037, 2784, 2805]


def noise_image(seed, size=(8, 8)):
    """A small random RGB picture; different seeds give different bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def make_folder(root, counts, ext=".png"):
    """``counts`` images per class (dict name -> n) of distinct content; returns root."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n):
            noise_image(1000 * c + i).save(os.path.join(root, name, f"{i:03d}{ext}"))
    return str(root)


def read_rows(splits_dir):
    """{split: [(path, label, class_name)]} from the three CSVs."""
    rows = {}
    for split in SPLITS:
        with open(os.path.join(splits_dir, f"{split}.csv"), newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            assert next(reader) == ["path", "label", "class_name"]
            rows[split] = [(path, int(label), name) for path, label, name in reader]
    return rows


def split_of(rows):
    return {path: split for split, split_rows in rows.items() for path, _, _ in split_rows}


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def quiet(*args, **kwargs):
    pass


def assert_stratified(rows, class_sizes):
    """Every class contributes each split's overall fraction, within one image."""
    total = sum(class_sizes.values())
    for split, split_rows in rows.items():
        per_class = Counter(name for _, _, name in split_rows)
        fraction = len(split_rows) / total
        for name, n in class_sizes.items():
            assert abs(per_class[name] - fraction * n) <= 1, (split, name, per_class[name], fraction * n)


# ---------------------------------------------------------------------------------------------
# Sizes and stratification

def test_full_set_defaults_give_exactly_3000_and_2000():
    total = sum(FULL_SET_CLASS_COUNTS)
    assert total == 17034
    val = resolve_size(DEFAULT_VAL_SIZE, total, "validation")
    test = resolve_size(DEFAULT_TEST_SIZE, total, "test")
    assert (total - val - test, val, test) == (12034, 3000, 2000)
    for count in (val, test):
        quotas = class_quotas(FULL_SET_CLASS_COUNTS, count)
        assert sum(quotas) == count
        for quota, n in zip(quotas, FULL_SET_CLASS_COUNTS):
            assert abs(quota - n * count / total) < 1
    # main.py's settings block (what `python main.py` uses) holds the same fractions
    defaults = cli.defaults(main_script.__file__)
    assert resolve_size(defaults["val_size"], total, "validation") == 3000
    assert resolve_size(defaults["test_size"], total, "test") == 2000


def test_class_quotas_by_hand():
    assert class_quotas([10, 10, 10], 3) == [1, 1, 1]
    assert class_quotas([10, 20, 30], 6) == [1, 2, 3]
    # exact shares 0.5, 1.0, 1.5 -> the largest remainders are 0.5 and 0.5: ties go to the lower index
    assert class_quotas([1, 2, 3], 3) == [1, 1, 1]
    assert sum(class_quotas([7, 11, 13, 17], 9)) == 9


def test_resolve_size_counts_fractions_and_refusals():
    assert resolve_size(0.25, 40, "test") == 10
    assert resolve_size(7, 40, "test") == 7
    assert resolve_size(0, 40, "test") == 0
    with pytest.raises(cli.UserError, match="does not fit"):
        resolve_size(41, 40, "test")
    with pytest.raises(cli.UserError, match="does not fit"):
        resolve_size(-0.1, 40, "test")


def test_split_is_stratified_with_exact_totals(tmp_path):
    class_sizes = {"a": 13, "b": 29, "c": 41, "d": 7}
    root = make_folder(tmp_path / "images", class_sizes)
    total = sum(class_sizes.values())
    for val_size, test_size, expected in [(0.2, 0.1, (18, 9)), (11, 6, (11, 6))]:
        splits_dir = str(tmp_path / f"splits-{val_size}")
        info = make_splits(root, splits_dir, val_size=val_size, test_size=test_size, seed=3, log=quiet)
        rows = read_rows(splits_dir)
        assert (len(rows["validation"]), len(rows["test"])) == expected
        assert len(rows["train"]) == total - sum(expected)
        assert info["counts"] == {split: len(rows[split]) for split in SPLITS}
        assert_stratified(rows, class_sizes)
        # labels are the sorted class index; paths are relative to the root and exist there
        for split_rows in rows.values():
            for path, label, name in split_rows:
                assert label == sorted(class_sizes).index(name)
                assert path.startswith(f"{name}/") and not os.path.isabs(path)
                assert os.path.isfile(os.path.join(root, path))
        assert sum(len(r) for r in rows.values()) == total


# ---------------------------------------------------------------------------------------------
# Disjointness and determinism

def test_check_disjoint_by_path_and_content():
    check_disjoint({"train": ["a/1.jpg", "a/2.jpg"], "validation": ["a/3.jpg"], "test": ["b/1.jpg"]},
                   {"a/1.jpg": "x", "a/2.jpg": "y", "a/3.jpg": "z", "b/1.jpg": "w"})
    with pytest.raises(cli.UserError, match="same path"):
        check_disjoint({"train": ["a/1.jpg"], "validation": [], "test": ["a/1.jpg"]})
    with pytest.raises(cli.UserError, match=r"a/2\.jpg \(validation\) and a/1\.jpg \(train\) have the same content"):
        check_disjoint({"train": ["a/1.jpg"], "validation": ["a/2.jpg"], "test": []},
                       {"a/1.jpg": "same", "a/2.jpg": "same"})
    # the same content twice inside one split is fine (a kept duplicate)
    check_disjoint({"train": ["a/1.jpg", "b/1.jpg"], "validation": [], "test": []},
                   {"a/1.jpg": "same", "b/1.jpg": "same"})


def test_written_splits_are_disjoint_by_path_and_content(splits):
    root, splits_dir = splits
    rows = read_rows(splits_dir)
    paths = [path for split_rows in rows.values() for path, _, _ in split_rows]
    assert len(paths) == len(set(paths)) == 72
    digests = {split: {file_digest(os.path.join(root, p)) for p, _, _ in split_rows}
               for split, split_rows in rows.items()}
    assert not digests["train"] & digests["validation"]
    assert not digests["train"] & digests["test"]
    assert not digests["validation"] & digests["test"]


def test_same_seed_gives_byte_identical_csvs(image_root, tmp_path):
    def csv_bytes(seed, name):
        splits_dir = str(tmp_path / name)
        make_splits(image_root, splits_dir, val_size=0.25, test_size=0.25, seed=seed, log=quiet)
        return {split: (tmp_path / name / f"{split}.csv").read_bytes() for split in SPLITS}

    first = csv_bytes(0, "first")
    assert csv_bytes(0, "second") == first
    assert csv_bytes(1, "other-seed") != first


# ---------------------------------------------------------------------------------------------
# Dirty data: duplicates, unreadable images, hidden files, letter case

def test_duplicates_are_reported_and_kept_in_one_split(tmp_path):
    root = make_folder(tmp_path / "images", {"a": 10, "b": 10, "c": 10})
    shutil.copy(os.path.join(root, "a", "003.png"), os.path.join(root, "a", "copy.png"))  # within a class
    shutil.copy(os.path.join(root, "b", "005.png"), os.path.join(root, "c", "from_b.png"))  # across classes
    expected = [["a/003.png", "a/copy.png"], ["b/005.png", "c/from_b.png"]]
    places = set()
    for seed in range(6):  # large validation and test shares, so a broken grouping would show
        messages = []
        info = make_splits(root, str(tmp_path / f"s{seed}"), val_size=0.35, test_size=0.35, seed=seed,
                           log=messages.append)
        assert sorted(info["duplicates"]) == expected
        log = "\n".join(messages)
        assert "a/003.png = a/copy.png" in log and "within one class" in log
        assert "b/005.png = c/from_b.png" in log and "filed under two classes" in log
        rows = read_rows(str(tmp_path / f"s{seed}"))
        where = split_of(rows)
        assert len(where) == 32  # every copy is kept
        assert_stratified(rows, {"a": 11, "b": 10, "c": 11})  # a copy counts for the class it is filed under
        for group in expected:
            assert where[group[0]] == where[group[1]], (seed, group)
            places.add(where[group[0]])
    assert places - {"train"}, "the duplicate groups never left train: the check above tested little"


def test_unreadable_images_are_named_and_left_out(tmp_path):
    root = make_folder(tmp_path / "images", {"a": 6, "b": 6}, ext=".jpg")
    (tmp_path / "images" / "a" / "x.jpg").write_bytes(b"this is not an image at all" * 10)
    buffer = io.BytesIO()
    noise_image(7, (40, 40)).save(buffer, "JPEG")
    (tmp_path / "images" / "b" / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    messages = []
    info = make_splits(root, str(tmp_path / "splits"), val_size=2, test_size=2, seed=0, log=messages.append)
    assert sorted(info["unreadable"]) == ["a/x.jpg", "b/cut.jpg"]
    log = "\n".join(messages)
    assert "leaving out a/x.jpg" in log and "leaving out b/cut.jpg" in log
    where = split_of(read_rows(str(tmp_path / "splits")))
    assert len(where) == 12 and "a/x.jpg" not in where and "b/cut.jpg" not in where


def test_hidden_files_ignored_and_any_letter_case_accepted(tmp_path):
    root = tmp_path / "images"
    for name in ("a", "b", ".hidden_class"):
        (root / name).mkdir(parents=True)
    noise_image(1).save(root / "a" / "upper.JPG", "JPEG")
    noise_image(2).save(root / "a" / "upper.PNG", "PNG")
    noise_image(3).save(root / "a" / "mixed.JpEg", "JPEG")
    noise_image(4).save(root / "b" / "plain.png")
    noise_image(5).save(root / "b" / ".hidden.png")  # a hidden picture is not a sample
    noise_image(6).save(root / ".hidden_class" / "x.png")  # nor is a hidden folder a class
    (root / "b" / ".DS_Store").write_bytes(b"\0\1\2")
    (root / "b" / "notes.txt").write_text("not an image")
    class_names, samples = scan_dataset(str(root))
    assert class_names == ["a", "b"]
    assert samples == [("a/mixed.JpEg", 0), ("a/upper.JPG", 0), ("a/upper.PNG", 0), ("b/plain.png", 1)]


# ---------------------------------------------------------------------------------------------
# Bad input: one clear sentence and a non-zero exit, no traceback

def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_clean_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("problem", ["missing root", "root is a file", "empty class folder", "no class folders"])
def test_bad_dataset_root_is_one_clear_error(tmp_path, problem):
    root = tmp_path / "root"
    expect = "does not exist"
    if problem == "root is a file":
        root.write_text("not a folder")
        expect = "is a file"
    elif problem == "empty class folder":
        make_folder(root, {"a": 3})
        (root / "empty").mkdir()
        (root / "empty" / "readme.txt").write_text("no pictures here")
        expect = "empty in"  # the folder is named in the sentence
    elif problem == "no class folders":
        root.mkdir()
        expect = "no class sub-folders"
    result = run_script("main.py", "--steps=split", f"--data_root={root}", f"--splits_dir={tmp_path / 'splits'}")
    assert_clean_error(result, str(root), expect)
    assert not (tmp_path / "splits" / "train.csv").exists()


def test_split_from_the_command_line(tmp_path):
    root = make_folder(tmp_path / "images", {"a": 5, "b": 5})
    result = run_script("main.py", "--steps=split", f"--data_root={root}", f"--splits_dir={tmp_path / 'splits'}",
                        "--val_size=2", "--test_size=2")
    assert result.returncode == 0, result.stderr
    rows = read_rows(str(tmp_path / "splits"))
    assert [len(rows[s]) for s in SPLITS] == [6, 2, 2]


# ---------------------------------------------------------------------------------------------
# The command line (cli.py): --help, unknown keys, wrong types

def test_help_lists_every_setting(capsys):
    for script in (train_script, main_script):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--help"])
        assert exit_info.value.code == 0
        shown = capsys.readouterr().out
        settings = cli.settings_block(script.__file__)
        assert len(settings) >= 6
        for name, default, _ in settings:
            assert f"--{name}=" in shown and repr(default) in shown, name
        assert "{" not in shown  # every threshold named in a help text is filled in from its constant
        if script is train_script:  # ... from the constants the code uses
            assert f"runs of {training.MIX_MIN_EPOCHS}+ epochs" in shown
            assert f"(under {training.SHORT_BUDGET_MIN}: 112 px" in shown
    assert len(cli.settings_block(train_script.__file__)) > 30


def test_help_from_the_command_line():
    result = run_script("main.py", "--help")
    assert result.returncode == 0
    for name, _, _ in cli.settings_block(main_script.__file__):
        assert f"--{name}=" in result.stdout


def test_overrides_take_the_type_of_the_default():
    config, overrides = cli.parse(train_script.__file__, "", ["--epochs=3", "--lr=1e-3", "--augment=false",
                                                             "--compile", "--run=x", "--epochs=4"])
    assert overrides == {"epochs": 4, "lr": 0.001, "augment": False, "compile": True, "run": "x"}
    assert type(config["epochs"]) is int and type(config["lr"]) is float
    defaults = {name: default for name, default, _ in cli.settings_block(train_script.__file__)}
    assert config == {**defaults, **overrides}


@pytest.mark.parametrize("argv, message", [
    (["--epoch=3"], "unknown setting --epoch"),
    (["--epochs=three"], "--epochs takes int"),
    (["--epochs=1.5"], "--epochs takes int"),
    (["--lr=fast"], "--lr takes float"),
    (["--augment=maybe"], "--augment takes true or false"),
    (["--epochs"], "--epochs needs a value"),
    (["epochs=3"], "unexpected argument"),
])
def test_bad_settings_are_refused(argv, message):
    with pytest.raises(cli.UserError, match=re.escape(message)):
        cli.parse(train_script.__file__, "", argv)


def test_unknown_setting_from_the_command_line(tmp_path):
    assert_clean_error(run_script("main.py", "--stpes=split"), "--stpes")


# ---------------------------------------------------------------------------------------------
# The real images (skipped where they are absent)

def test_real_data_split(real_data, tmp_path):
    messages = []
    info = make_splits(real_data, str(tmp_path / "splits"), seed=0, log=messages.append)
    rows = read_rows(str(tmp_path / "splits"))
    _, samples = scan_dataset(real_data)
    assert len(samples) == 8741
    assert sum(len(r) for r in rows.values()) + len(info["unreadable"]) == 8741
    assert len(info["duplicates"]) == 7
    assert ["buildings/5069.jpg", "street/2764.jpg"] in info["duplicates"]
    assert "buildings/5069.jpg = street/2764.jpg" in "\n".join(messages)
    where = split_of(rows)
    for group in info["duplicates"]:
        assert len({where[path] for path in group}) == 1, group
    # the default fractions (3000/17034, 2000/17034) of this 8,741-image part, stratified
    assert len(rows["validation"]) == round(8741 * DEFAULT_VAL_SIZE)
    assert len(rows["test"]) == round(8741 * DEFAULT_TEST_SIZE)
    class_sizes = Counter(path.split("/")[0] for path, _ in samples)
    assert_stratified(rows, class_sizes)
