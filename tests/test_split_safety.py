"""A split is written as one set, no split comes out unusable, and a damaged split is one clear error.

Each fault is made for real, met where the user meets it (the scripts' command lines), and every
refusal is checked to leave the previous split's files byte for byte.
"""
import errno
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import NatureTypesDataset
import data_handling
import train
from conftest import ROOT, train_args
from scenes import splitting
from scenes.cli import UserError
from scenes.demo import make_demo_dataset
from scenes.files import write_together
from scenes.splits import INCOMPLETE, SPLIT_INFO, read_split_csv, read_split_info
from test_robustness import assert_user_error, run_cli, script_env

SPLIT_FILES = ("train.csv", "validation.csv", "test.csv", SPLIT_INFO)


@pytest.fixture
def split(tmp_path):
    """Six generated classes of four images and their split: (root, splits_dir, the split's files)."""
    root = make_demo_dataset(str(tmp_path / "images"), per_class=4, size=16)
    splits_dir = str(tmp_path / "splits")
    splitting.make_splits(root, splits_dir, val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    return root, splits_dir, folder_bytes(splits_dir)


def folder_bytes(folder):
    """{name: bytes} of every file in ``folder`` (temporaries and markers included)."""
    return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}


def split_argv(root, splits_dir, *extra):
    return [f"--data_root={root}", f"--splits_dir={splits_dir}", "--val_size=0.25", "--test_size=0.25", *extra]


def readers(splits_dir, tmp_path):
    """The command lines that read a split before their long work: training and the dataset preview."""
    return {"train": (train.main, train_args(splits_dir, tmp_path)),
            "dataset": (NatureTypesDataset.main, [f"--splits_dir={splits_dir}", "--split=train",
                                                   f"--out={tmp_path / 'preview.png'}"])}


def assert_every_reader_refuses(splits_dir, tmp_path, capsys, *words):
    for main, argv in readers(splits_dir, tmp_path).values():
        assert_user_error(*run_cli(main, argv, capsys), *words)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "preview.png").exists()


def jpeg_bytes(seed):
    buffer = io.BytesIO()
    Image.effect_noise((16, 16), 40 + seed).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# write_together: the old set or the new one

def old_and_new(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    names = ["a.csv", "b.csv", "info.json"]
    write_together({str(folder / n): f"old {n}\n".encode() for n in names}, str(folder / "marker"))
    return folder, {str(folder / n): f"new {n}\n".encode() for n in names}


def test_a_failure_while_staging_leaves_every_previous_file(tmp_path, monkeypatch):
    folder, new = old_and_new(tmp_path)
    before = folder_bytes(folder)
    calls, real_fsync = [], os.fsync

    def fsync_full_on_second_file(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_full_on_second_file)
    with pytest.raises(UserError, match="the disk is full"):
        write_together(new, str(folder / "marker"))
    assert folder_bytes(folder) == before  # no staged file, no marker, nothing renamed


def test_a_failure_among_the_renames_leaves_the_marker(tmp_path, monkeypatch):
    folder, new = old_and_new(tmp_path)
    renames, real_replace = [], os.replace

    def replace_fails_on_second_rename(src, dst):
        if src.endswith(".new"):
            renames.append(dst)
            if len(renames) == 2:
                raise OSError(errno.EIO, "Input/output error", src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_fails_on_second_rename)
    with pytest.raises(UserError, match="torn set"):
        write_together(new, str(folder / "marker"))
    after = folder_bytes(folder)
    assert sorted(after) == ["a.csv", "b.csv", "info.json", "marker"]  # the staged files are gone
    assert after["a.csv"] == b"new a.csv\n" and after["b.csv"] == b"old b.csv\n"


def test_a_complete_write_leaves_no_marker_nor_staged_file(tmp_path):
    folder, new = old_and_new(tmp_path)
    write_together(new, str(folder / "marker"))
    assert folder_bytes(folder) == {os.path.basename(path): data for path, data in sorted(new.items())}


# ---------------------------------------------------------------------------------------------
# a split is written as one unit

def test_a_name_that_is_not_utf8_is_refused_before_anything_is_written(split, capsys):
    root, splits_dir, before = split
    bad = os.path.join(os.fsencode(root), b"forest", b"caf\xe9.jpg")
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, jpeg_bytes(1))
    os.close(fd)
    with Image.open(bad) as image:  # a readable image: only its name is at fault
        image.load()
    code, err = run_cli(data_handling.main, split_argv(root, splits_dir, "--seed=1"), capsys)
    assert_user_error(code, err, "not valid UTF-8", "forest/caf\\xe9.jpg")
    assert folder_bytes(splits_dir) == before


def test_a_split_killed_among_its_renames_is_refused_until_made_again(split, tmp_path, capsys):
    root, splits_dir, before = split
    killer = ("import os, signal, sys; import data_handling; real = os.replace\n"
              "def replace(src, dst):\n"
              "    real(src, dst)\n"
              "    if dst.endswith('validation.csv'): os.kill(os.getpid(), signal.SIGKILL)\n"
              "os.replace = replace\n"
              "data_handling.main(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-c", killer, *split_argv(root, splits_dir, "--seed=1")], cwd=ROOT,
                            env=script_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    after = folder_bytes(splits_dir)
    assert INCOMPLETE in after and after["train.csv"] != before["train.csv"]
    assert after["test.csv"] == before["test.csv"]  # old and new files side by side: a torn set
    assert_every_reader_refuses(splits_dir, tmp_path, capsys, "interrupted", splits_dir)
    data_handling.main(split_argv(root, splits_dir, "--seed=1"))
    assert sorted(folder_bytes(splits_dir)) == sorted(SPLIT_FILES)
    read_split_info(splits_dir)


# ---------------------------------------------------------------------------------------------
# no split may come out unusable

@pytest.mark.parametrize("sizes, empty", [(["--test_size=0"], "test"), (["--val_size=0"], "validation"),
                                          (["--val_size=12", "--test_size=12"], "train"),
                                          (["--val_size=0.5", "--test_size=0.5"], "train")])
def test_sizes_that_leave_a_split_empty_are_refused(split, capsys, sizes, empty):
    root, splits_dir, before = split
    code, err = run_cli(data_handling.main, split_argv(root, splits_dir, *sizes), capsys)
    assert_user_error(code, err, f"the {empty} split", "--val_size=", "--test_size=", "empty")
    assert folder_bytes(splits_dir) == before


@pytest.mark.parametrize("size", ["nan", "inf", "-1"])
def test_a_size_that_is_no_number_of_images_is_refused(split, capsys, size):
    root, splits_dir, before = split
    code, err = run_cli(data_handling.main, split_argv(root, splits_dir, f"--test_size={size}"), capsys)
    assert_user_error(code, err, "--test_size")
    assert folder_bytes(splits_dir) == before
    with pytest.raises(UserError, match=f"test size {float(size)} does not fit"):  # callers of the function
        splitting.resolve_size(float(size), 100, "test")


def test_the_script_refuses_an_empty_split_in_one_line(split):
    root, splits_dir, before = split
    result = subprocess.run([sys.executable, "data_handling.py", *split_argv(root, splits_dir, "--test_size=0")],
                            cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=120)
    assert_user_error(result.returncode, result.stderr, "the test split", "--test_size=0")
    assert folder_bytes(splits_dir) == before


def test_a_class_too_small_for_every_split_is_a_warning_naming_it(tmp_path, capsys):
    root = make_demo_dataset(str(tmp_path / "images"), per_class=4, size=16)
    os.makedirs(os.path.join(root, "tiny"))
    with open(os.path.join(root, "tiny", "only.jpg"), "wb") as f:
        f.write(jpeg_bytes(2))
    info = data_handling.main(split_argv(root, str(tmp_path / "splits")))
    out = capsys.readouterr().out
    warning = next(line for line in out.splitlines() if line.startswith("warning: class"))
    assert "tiny (1 image(s), none in" in warning and "forest" not in warning
    assert sum(info["counts"].values()) == 25


# ---------------------------------------------------------------------------------------------
# a damaged split CSV: one clear error before training or evaluation

def lines_of(splits_dir, split="train"):
    with open(os.path.join(splits_dir, f"{split}.csv"), encoding="utf-8") as f:
        return f.read().splitlines()


def rewrite(splits_dir, lines, split="train"):
    with open(os.path.join(splits_dir, f"{split}.csv"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("damage, words", [
    (lambda lines: lines[:2] + [lines[2].rsplit(",", 1)[0]] + lines[3:], ["train.csv line 3", "2 cell(s)"]),
    (lambda lines: lines[:3] + [lines[3] + ",extra"] + lines[4:], ["train.csv line 4", "4 cell(s)"]),
    (lambda lines: lines[:2] + [lines[2].replace(",", ",x", 1)] + lines[3:], ["train.csv line 3", "not a whole"]),
    (lambda lines: lines[:1], ["train.csv lists no image"]),
    (lambda lines: lines[:2] + ["../images/" + lines[2]] + lines[3:], ["train.csv line 3", "outside the data root"]),
    (lambda lines: lines + ["/etc/hostname,0,buildings"], ["/etc/hostname", "outside the data root"]),
])
def test_a_damaged_csv_is_one_clear_error_before_any_work(split, tmp_path, capsys, damage, words):
    _, splits_dir, _ = split
    rewrite(splits_dir, damage(lines_of(splits_dir)))
    assert_every_reader_refuses(splits_dir, tmp_path, capsys, *words)


def test_a_csv_that_is_not_text_is_one_clear_error(split, tmp_path, capsys):
    _, splits_dir, _ = split
    with open(os.path.join(splits_dir, "train.csv"), "wb") as f:
        f.write(b"path,label,class_name\n" + jpeg_bytes(3))
    assert_every_reader_refuses(splits_dir, tmp_path, capsys, "train.csv cannot be read")


def test_a_path_listed_twice_is_named_and_counted_once(split, capsys):
    root, splits_dir, _ = split
    lines = lines_of(splits_dir)
    rewrite(splits_dir, lines + [lines[1]])
    capsys.readouterr()
    samples = read_split_csv(os.path.join(splits_dir, "train.csv"), root)
    assert len(samples) == len(lines) - 1 and len(set(samples)) == len(samples)
    err = capsys.readouterr().err
    assert "warning:" in err and f"{lines[1].split(',')[0]} (lines 2 and {len(lines) + 1})" in err


def test_a_path_listed_under_two_classes_is_refused(split, tmp_path, capsys):
    root, splits_dir, _ = split
    lines = lines_of(splits_dir)
    rel, label, _ = lines[1].split(",")
    other = [line for line in lines[1:] if line.split(",")[1] != label][0]
    rewrite(splits_dir, lines + [f"{rel},{other.split(',', 1)[1]}"])
    assert_every_reader_refuses(splits_dir, tmp_path, capsys, rel, "line 2", f"line {len(lines) + 1}")


# ---------------------------------------------------------------------------------------------
# a damaged split_info.json, and a splits folder that is not one

@pytest.mark.parametrize("text, words", [("{not json", ["is damaged"]), ("[1, 2]", ["data_root and class_names"]),
                                         ('{"data_root": "d"}', ["lacks a valid class_names"]),
                                         ('{"class_names": ["a"]}', ["lacks a valid data_root"])])
def test_a_damaged_split_info_is_one_clear_error(split, tmp_path, capsys, text, words):
    _, splits_dir, _ = split
    with open(os.path.join(splits_dir, SPLIT_INFO), "w", encoding="utf-8") as f:
        f.write(text)
    assert_every_reader_refuses(splits_dir, tmp_path, capsys, SPLIT_INFO, "make the split again", *words)


def test_a_file_given_as_splits_dir_is_refused_when_writing_and_reading(split, tmp_path, capsys):
    root, _, _ = split
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    code, err = run_cli(data_handling.main, split_argv(root, a_file), capsys)
    assert_user_error(code, err, str(a_file), "is a file")
    assert_every_reader_refuses(str(a_file), tmp_path, capsys, str(a_file), "is a file")
    assert a_file.read_text() == "not a folder"


def test_a_splits_folder_that_cannot_be_made_is_one_clear_error(split, tmp_path, capsys):
    root, _, _ = split
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    code, err = run_cli(data_handling.main, split_argv(root, a_file / "splits"), capsys)
    assert_user_error(code, err, str(a_file / "splits"), "cannot be created")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_splits_folder_that_cannot_be_written_is_one_clear_error(split, capsys):
    root, splits_dir, before = split
    os.chmod(splits_dir, 0o555)
    try:
        code, err = run_cli(data_handling.main, split_argv(root, splits_dir, "--seed=1"), capsys)
    finally:
        os.chmod(splits_dir, 0o755)
    assert_user_error(code, err, "could not save", "untouched")
    assert folder_bytes(splits_dir) == before


@pytest.mark.parametrize("layout", ["splits_dir links into the root", "root reached through a link"])
def test_a_splits_folder_inside_the_data_root_is_refused_through_links(split, tmp_path, capsys, layout):
    root, _, _ = split
    if layout == "splits_dir links into the root":
        splits_dir = tmp_path / "splits_link"
        os.symlink(os.path.join(root, "forest"), splits_dir)
        given_root = root
    else:
        given_root = tmp_path / "root_link"
        os.symlink(root, given_root)
        splits_dir = os.path.join(root, "forest", "splits")
    before = sorted(os.listdir(os.path.join(root, "forest")))
    code, err = run_cli(data_handling.main, split_argv(given_root, splits_dir), capsys)
    assert_user_error(code, err, "inside the dataset root")
    assert sorted(os.listdir(os.path.join(root, "forest"))) == before
