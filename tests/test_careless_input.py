"""Issue 27, careless input round two: each rule met through the scripts' command lines (exit status
2, one sentence naming the file or setting, no traceback, every file that was there unchanged by
checksum), plus unit tests of the mechanism behind it.

1 an output never destroys an input; 2 a failed save is one sentence and loses nothing; 3 settings
and data that pass the checks never crash later; 4 paths are followed once; 5 locks and temporary
files clean up after themselves; 6 the smaller ones (Markdown, main.py's steps, presets checked first,
racing splits, the settings reader).
"""
import errno
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import accuracy_eval
import data_handling
import export
import feature_map
import main as main_script
import predict
import report
import train
from conftest import ROOT, train_args
from scenes import cli, files
from scenes.checkpoints import RunLock, save_checkpoint
from scenes.demo import make_demo_dataset
from scenes.mistakes import mistakes_table
from scenes.outputs import check_output_file, check_run_name
from scenes.prediction import find_images, scores_table
from scenes.scoring import comparison_table, markdown_table
from scenes.splits import COLUMN_NAMES, check_class_list
from scenes.splitting import make_splits
from test_robustness import assert_user_error, run_cli, script_env, small_checkpoint


def checksums(folder):
    """{relative path: sha256} of every file under ``folder`` ("folder" for a folder, the target for a link)."""
    folder = Path(folder)

    def state(path):
        if path.is_symlink():
            return f"link to {os.readlink(path)}"
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return {str(p.relative_to(folder)): state(p) for p in sorted(folder.rglob("*"))}


def refused(main, argv, capsys, folder, *words):
    """``main(argv)`` is refused in one sentence holding ``words``, and no file under ``folder`` is
    changed, added or removed."""
    before = checksums(folder)
    code, err = run_cli(main, argv, capsys)
    line = assert_user_error(code, err, *words)
    assert checksums(folder) == before
    return line


def demo_set(base, per_class=4, size=32, **sizes):
    """A generated six-class set in base/images and its split in base/splits; returns (root, splits_dir)."""
    root = make_demo_dataset(str(base / "images"), per_class=per_class, size=size)
    splits_dir = str(base / "splits")
    make_splits(root, splits_dir, **{"val_size": 0.25, "test_size": 0.25, **sizes}, seed=0, log=lambda *a: None)
    return root, splits_dir


# ---------------------------------------------------------------------------------------------
# 1 an output never destroys an input

@pytest.mark.parametrize("target", ["checkpoint", "hard link", "symbolic link", "split file", "list file", "image",
                                    "metrics.csv", "other .pth"])
def test_predict_refuses_an_out_that_is_an_input_or_a_kept_file(target, trained, tmp_path, capsys):
    base, splits_dir, checkpoint = trained
    image = str(base / "images" / "forest" / "0000.jpg")
    list_file = tmp_path / "paths.txt"
    list_file.write_text(f"{image}\n")
    out = {"checkpoint": checkpoint, "split file": os.path.join(splits_dir, "train.csv"),
           "list file": str(list_file), "image": image, "metrics.csv": str(base / "checkpoints" / "r" / "metrics.csv"),
           "other .pth": str(tmp_path / "predictions.pth"), "hard link": str(tmp_path / "scores.csv"),
           "symbolic link": str(tmp_path / "alias.csv")}[target]
    if target == "hard link":
        os.link(checkpoint, out)
    if target == "symbolic link":
        os.symlink(checkpoint, out)
    argv = [f"--checkpoint={checkpoint}", f"--out={out}", f"--list_file={list_file}", "--device=cpu"]
    before = checksums(tmp_path)
    refused(predict.main, argv, capsys, base, f"--out={out}")
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("target", ["checkpoint", "split file", "symbolic link"])
def test_export_refuses_an_out_that_is_an_input_or_a_kept_file(target, trained, tmp_path, capsys):
    base, splits_dir, checkpoint = trained
    out = {"checkpoint": checkpoint, "split file": os.path.join(splits_dir, "test.csv"),
           "symbolic link": str(tmp_path / "model.onnx")}[target]
    if target == "symbolic link":
        os.symlink(checkpoint, out)
    refused(export.main, [f"--checkpoint={checkpoint}", f"--out={out}"], capsys, base, f"--out={out}")


def test_check_output_file_tells_inputs_and_kept_files_from_free_names(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pth").write_bytes(b"weights")
    (run / "best_test_scores.csv").write_text("path,label\n")
    (tmp_path / "photo.jpg").write_bytes(b"jpeg")
    os.link(tmp_path / "photo.jpg", tmp_path / "same.csv")
    inputs = [("an image to label", str(tmp_path / "photo.jpg"))]
    for kept in (run / "best.pth", run / "metrics.csv", run / "best_test_scores.csv", tmp_path / "new.PTH",
                 tmp_path / "same.csv"):
        with pytest.raises(cli.UserError, match="--out="):
            check_output_file(str(kept), "out", inputs)
    for free in (run / "predictions.csv", tmp_path / "predictions.csv", tmp_path / "notes.txt"):
        assert check_output_file(str(free), "out", inputs) == str(free)


@pytest.mark.parametrize("name", [".", "..", "a/b", "../elsewhere", ".hidden", "/tmp/run"])
def test_train_refuses_a_run_name_that_is_not_one_plain_folder(name, trained, tmp_path, capsys):
    base, splits_dir, _ = trained
    argv = train_args(splits_dir, base, f"--run={name}")
    refused(train.main, argv, capsys, base, f"--run={name}", "plain folder name")
    assert check_run_name("sgd_long") == "sgd_long"


def test_train_refuses_a_checkpoints_folder_that_is_a_run(trained, capsys):
    base, splits_dir, _ = trained
    argv = train_args(splits_dir, base, "--run=x", f"--checkpoints_dir={base / 'checkpoints' / 'r'}")
    refused(train.main, argv, capsys, base, "is a run folder itself")
    assert not (base / "checkpoints" / "r" / "x").exists()


def test_outputs_in_the_data_root_are_refused(trained, tmp_path, capsys):
    base, splits_dir, checkpoint = trained
    root = str(base / "images")
    refused(feature_map.main, [f"--checkpoint={checkpoint}", f"--out_dir={root}", "--device=cpu",
                               f"--cache_dir={base / 'cache'}"], capsys, base, f"--out_dir={root}", "data root")
    refused(report.main, [str(base / "checkpoints"), f"--out_dir={root}/forest", f"--splits_dir={splits_dir}",
                          "--device=cpu", f"--cache_dir={base / 'cache'}"], capsys, base, "data root")
    argv = train_args(splits_dir, base, "--run=x", f"--checkpoints_dir={root}/runs")
    refused(train.main, argv, capsys, base, f"--checkpoints_dir={root}/runs", "data root")
    assert sorted(os.listdir(root)) == ["buildings", "forest", "glacier", "mountain", "sea", "street"]


def test_predict_into_a_closed_pipe_writes_its_file_and_ends_quietly(trained, tmp_path):
    """``predict.py ... --out=F | head -1``: the reader is gone before the lines come."""
    base, _, checkpoint = trained
    out = tmp_path / "predictions.csv"
    Path(f"{out}.tmp").write_bytes(b"path,predicted\nhalf")  # left by a predict.py killed while writing
    command = [sys.executable, "predict.py", f"--checkpoint={checkpoint}", str(base / "images"), f"--out={out}",
               "--topk=6", "--device=cpu"]  # lines enough to fill stdout's buffer before the end
    env = {k: v for k, v in script_env().items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as in a shell
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as head does once it has its line
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(pd.read_csv(out)) == 72  # every image of the set
    assert os.listdir(tmp_path) == ["predictions.csv"]


# ---------------------------------------------------------------------------------------------
# 2 a failed save is one sentence and loses nothing

def full_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/full (mounting needs root; skipped elsewhere)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    return folder


def test_torch_save_on_a_real_full_disk_is_one_sentence_and_keeps_the_old_file(tmp_path):
    folder = full_disk(tmp_path)
    try:
        path = str(folder / "last.pth")
        save_checkpoint(small_checkpoint(1), path)
        with pytest.raises(cli.UserError, match="disk is full") as info:  # torch raises a RuntimeError here
            save_checkpoint(small_checkpoint(2, numel=1_000_000), path)
        assert path in str(info.value)
        assert torch.load(path, weights_only=True)["epoch"] == 1
        assert os.listdir(folder) == ["last.pth"]
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_training_onto_a_real_full_disk_is_one_sentence(tmp_path, capsys):
    _, splits_dir = demo_set(tmp_path)
    folder = full_disk(tmp_path)
    try:
        argv = train_args(splits_dir, tmp_path, "--run=r", "--batch_size=4", f"--checkpoints_dir={folder}")
        code, err = run_cli(train.main, argv, capsys)
        assert_user_error(code, err, f"could not save {folder / 'r' / 'best.pth'}: the disk is full")
        assert sorted(os.listdir(folder / "r")) == ["config.json"]  # no lock, no temporary file left
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_library_error_raised_over_an_os_error_is_the_disk_error(tmp_path):
    def torch_like(f):  # torch.save's C++ writer turns the file's OSError into its own RuntimeError
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(cli.UserError, match=f"could not save {path}: the disk is full"):
        files.write_atomically(str(path), torch_like)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]
    with pytest.raises(ZeroDivisionError):  # a bug stays a bug
        files.write_atomically(str(path), lambda f: 1 / 0)


def test_disk_turning_read_only_after_epoch_1_is_one_sentence(tmp_path, capsys, monkeypatch):
    """The run folder's file system becomes read-only after the first epoch's save: the second save
    fails, the lock cannot be removed, and the user still reads the one sentence of the save."""
    _, splits_dir = demo_set(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    if subprocess.run(["mount", "--bind", str(runs), str(runs)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root)")
    from scenes import training
    real_save = training.save_epoch

    def save_then_lose_the_disk(run, epoch, improved):
        real_save(run, epoch, improved)
        if epoch == 1:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(runs)], check=True)

    monkeypatch.setattr(training, "save_epoch", save_then_lose_the_disk)
    try:
        argv = train_args(splits_dir, tmp_path, "--run=r", "--epochs=2", "--batch_size=4",
                          f"--checkpoints_dir={runs}")
        code, err = run_cli(train.main, argv, capsys)
        assert_user_error(code, err, "could not save", str(runs / "r"), "Read-only file system")
    finally:
        subprocess.run(["umount", str(runs)], check=True)
    assert torch.load(runs / "r" / "last.pth", weights_only=True)["epoch"] == 1
    with RunLock(str(runs / "r")):  # the lock left on the read-only disk is free
        pass


def test_lock_clean_up_never_hides_the_first_error(tmp_path, monkeypatch):
    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    with pytest.raises(cli.UserError, match="the first error"):
        with RunLock(str(tmp_path)):
            monkeypatch.setattr(os, "remove", read_only)
            raise cli.UserError("the first error")
    monkeypatch.undo()
    assert (tmp_path / ".lock").exists()
    with RunLock(str(tmp_path)):  # left behind, but free
        pass


# ---------------------------------------------------------------------------------------------
# 3 settings and data that pass the checks never crash later

def test_a_training_split_of_one_image_is_refused_before_a_run_folder(tmp_path, capsys):
    _, splits_dir = demo_set(tmp_path)
    train_csv = Path(splits_dir) / "train.csv"
    train_csv.write_text("".join(train_csv.read_text().splitlines(keepends=True)[:2]))  # the header and one image
    argv = train_args(splits_dir, tmp_path, "--run=r")
    refused(train.main, argv, capsys, tmp_path, "train.csv lists 1 image(s), too few to train on")
    assert not (tmp_path / "checkpoints" / "r").exists()


def test_batch_size_1_is_refused_and_2_trains(tmp_path, capsys):
    _, splits_dir = demo_set(tmp_path, per_class=3, val_size=6, test_size=7)  # 5 training images
    refused(train.main, train_args(splits_dir, tmp_path, "--run=r", "--batch_size=1"), capsys, tmp_path,
            "--batch_size=1", "[>= 2]")
    # batches of two at 32 px, where the last stage holds one value per channel and image: the fifth
    # image, a batch of its own, is left out of training and of precise BN
    train.main(train_args(splits_dir, tmp_path, "--run=r", "--batch_size=2", "--eval_image_size=32",
                          "--precise_bn_images=5"))
    assert torch.load(tmp_path / "checkpoints" / "r" / "last.pth", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("name", ["label", "score", "path", "prediction", "mAP"])
def test_a_class_named_as_a_csv_column_is_refused_at_split_time(name, tmp_path, capsys):
    root = make_demo_dataset(str(tmp_path / "images"), per_class=3, size=16)
    os.rename(os.path.join(root, "forest"), os.path.join(root, name))
    refused(data_handling.main, [f"--data_root={root}", f"--splits_dir={tmp_path / 'splits'}"], capsys, tmp_path,
            f"class named {name!r}", "rename that class folder")
    assert not (tmp_path / "splits").exists()


def test_column_names_cover_every_csv_the_project_writes():
    classes = ["c0", "c1"]
    scores = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": [0, 1], "c0": [0.9, 0.8], "c1": [0.1, 0.2]})
    tables = [scores, scores_table(["a.jpg"], torch.tensor([[0.3, 0.7]]), classes), mistakes_table(scores, classes),
              comparison_table({"run": {"c0": 1.0, "c1": 1.0, "mAP": 1.0, "accuracy": 1.0,
                                        "mean class accuracy": 1.0}}).reset_index()]
    for table in tables:
        assert set(table.columns) - set(classes) <= set(COLUMN_NAMES), table.columns


def test_a_single_class_and_a_class_linked_to_another_are_refused_at_split_time(tmp_path, capsys):
    root = make_demo_dataset(str(tmp_path / "images"), per_class=3, size=16)
    os.symlink("forest", os.path.join(root, "woods"))
    refused(data_handling.main, [f"--data_root={root}", f"--splits_dir={tmp_path / 'splits'}"], capsys, tmp_path,
            "class folders forest and woods", "same folder")
    one = tmp_path / "one"
    shutil.copytree(os.path.join(root, "sea"), one / "sea")
    refused(data_handling.main, [f"--data_root={one}", f"--splits_dir={tmp_path / 'splits'}"], capsys, tmp_path,
            "has 1 class (sea)", "two or more")
    with pytest.raises(cli.UserError, match="class named 'score'"):
        check_class_list(["forest", "score"], "the checkpoint")


def test_refused_arch_or_device_leaves_no_run_folder(trained, capsys):
    base, splits_dir, _ = trained
    refused(train.main, train_args(splits_dir, base, "--run=new", "--arch=resnet7"), capsys, base, "resnet7")
    if not torch.cuda.is_available():
        argv = [a for a in train_args(splits_dir, base, "--run=new") if a != "--device=cpu"] + ["--device=cuda"]
        refused(train.main, argv, capsys, base, "--device=cuda")
    assert not (base / "checkpoints" / "new").exists()


def test_a_list_file_that_is_an_image_is_one_sentence(trained, capsys):
    base, _, checkpoint = trained
    jpeg = str(base / "images" / "sea" / "0000.jpg")
    refused(predict.main, [f"--checkpoint={checkpoint}", f"--list_file={jpeg}", "--device=cpu"], capsys, base,
            jpeg, "not a text file")


def test_a_cache_file_whose_header_was_overwritten_is_built_again(trained, tmp_path, capsys):
    base, splits_dir, _ = trained
    cache = tmp_path / "cache"
    shutil.copytree(base / "checkpoints" / "r", tmp_path / "r")  # the scores are written beside the checkpoint
    argv = [str(tmp_path / "r" / "best.pth"), f"--splits_dir={splits_dir}", f"--cache_dir={cache}", "--device=cpu",
            f"--out_dir={tmp_path / 'results'}"]
    first = accuracy_eval.main(argv)
    (path,) = cache.glob("test-*.u8")
    with open(path, "r+b") as f:
        f.write(b"\x93NUMPY\x01\x00v\x00{'descr': garbage")
    capsys.readouterr()
    second = accuracy_eval.main(argv)
    assert f"{path} is damaged" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, second)


# ---------------------------------------------------------------------------------------------
# 4 paths are followed once

def test_globs_and_folders_with_link_loops_list_each_image_once(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    for rel in ("a.jpg", "sub/b.jpg"):
        (d / rel).write_bytes(b"x")
    os.symlink("..", d / "sub" / "up")  # two loops: with Python's glob, ** would not finish
    os.symlink("../d", d / "loop")
    os.symlink("a.jpg", d / "alias.jpg")  # one image by two names
    start = time.monotonic()
    found = find_images([f"{d}/**/*.jpg", str(d), f"{d}/*/*.jpg"])
    assert time.monotonic() - start < 5
    assert sorted(os.path.realpath(p) for p in found) == [str(d / "a.jpg"), str(d / "sub" / "b.jpg")]
    assert len(found) == 2


def test_predict_on_a_folder_with_link_loops_labels_each_image_once(trained, tmp_path, capsys):
    base, _, checkpoint = trained
    d = tmp_path / "d"
    shutil.copytree(base / "images" / "sea", d / "sea")
    os.symlink("..", d / "sea" / "up")
    os.symlink(".", d / "here")
    table = predict.main([f"--checkpoint={checkpoint}", f"{d}/**/*.jpg", "--device=cpu"])
    assert len(table) == 12 and table["path"].map(os.path.realpath).is_unique


# ---------------------------------------------------------------------------------------------
# 5 locks and temporary files

def test_a_lock_naming_this_processes_pid_is_taken_when_no_one_holds_it(tmp_path):
    """A run killed in a container leaves its PID in the lock; after the restart this process has it."""
    (tmp_path / ".lock").write_text(f"{socket.gethostname()}:{os.getpid()}")
    with RunLock(str(tmp_path)) as lock:
        assert (tmp_path / ".lock").read_text() == lock.owner
    assert not (tmp_path / ".lock").exists()


HOLD_LOCK = "import sys, time; from scenes.checkpoints import RunLock\nwith RunLock(sys.argv[1]):\n" \
            "    print('held', flush=True); time.sleep(60)\n"


def test_a_live_holder_is_respected_also_from_another_pid_namespace(tmp_path):
    """The holder is PID 1 in a namespace of its own where unshare can make one (root), else a plain
    process; either way it is refused while alive and its lock is free once it is gone."""
    command = [sys.executable, "-c", HOLD_LOCK, str(tmp_path)]
    if shutil.which("unshare") and not subprocess.run(["unshare", "--pid", "--fork", "true"]).returncode:
        command = ["unshare", "--pid", "--kill-child", *command]
    holder = subprocess.Popen(command, cwd=ROOT, env=script_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(cli.UserError, match="another training process"):
            RunLock(str(tmp_path)).__enter__()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)  # the namespace's init has gone with it
    with RunLock(str(tmp_path)):  # free once its holder is gone
        pass


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_temporary_files_of_writers_that_are_gone_are_removed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    gone, alive = dead_pid(), os.getppid()
    stale = [cache / f"train-40px-abc-def.u8.{gone}.tmp", tmp_path / f"out.csv.{gone}.tmp"]
    kept = [cache / f"test-40px-abc-def.u8.{alive}.tmp", tmp_path / f"notes.{gone}.tmp"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    files.remove_stale_temporaries("", os.path.join(str(cache), "*.u8"))
    files.write_atomically(str(tmp_path / "out.csv"), lambda f: f.write(b"a,b\n"), shared=True)
    assert [p for p in stale if p.exists()] == [] and all(p.exists() for p in kept)


def test_a_cache_killed_while_written_is_swept_by_the_next_run(trained, tmp_path, capsys):
    base, splits_dir, checkpoint = trained
    cache = tmp_path / "cache"
    cache.mkdir()
    leftover = cache / f"test-40px-0123456789-0123456789ab.u8.{dead_pid()}.tmp"
    leftover.write_bytes(b"\0" * 1000)
    shutil.copytree(base / "checkpoints" / "r", tmp_path / "r")
    argv = [str(tmp_path / "r" / "best.pth"), f"--splits_dir={splits_dir}", f"--cache_dir={cache}", "--device=cpu",
            f"--out_dir={tmp_path / 'results'}"]
    accuracy_eval.main(argv)
    assert not leftover.exists() and not list(cache.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# 6 the smaller ones

def test_a_bar_in_a_class_name_keeps_markdown_tables_whole():
    table = comparison_table({"run|1": {"a|b": 0.5, "c": 1.0, "mAP": 0.75}})
    lines = markdown_table(table, "caption").splitlines()[2:]
    cells = [[cell for cell in line.replace("\\|", "").split("|")[1:-1]] for line in lines]
    assert {len(row) for row in cells} == {4}
    assert "a\\|b" in lines[0] and "run\\|1" in lines[2]


def test_main_refuses_empty_steps_and_a_report_without_data_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(main_script.main, ["--steps=,"], capsys, tmp_path, "--steps=")
    refused(main_script.main, ["--steps=report"], capsys, tmp_path, "no class folders")
    assert os.listdir(tmp_path) == []


def test_preset_all_checks_every_preset_before_the_first_trains(trained, tmp_path, capsys):
    base, splits_dir, _ = trained
    missing = tmp_path / "no-such-weights.pth"
    argv = train_args(splits_dir, base, "--preset=all", f"--weights_file={missing}")
    refused(train.main, argv, capsys, base, str(missing), "does not exist")  # no run folder made, either


RACE = ("import sys; from scenes.splitting import make_splits\n"
        "for _ in range(3): make_splits(sys.argv[1], sys.argv[2], 0.25, 0.25, int(sys.argv[3]), log=lambda *a: None)")


def test_two_splitters_racing_on_one_folder_both_succeed_and_leave_one_whole_split(tmp_path):
    root = make_demo_dataset(str(tmp_path / "images"), per_class=6, size=16)
    splits = tmp_path / "splits"
    racers = [subprocess.Popen([sys.executable, "-c", RACE, root, str(splits), str(seed)], cwd=ROOT, env=script_env(),
                               stderr=subprocess.PIPE, text=True) for seed in (0, 1, 0, 1)]
    for racer in racers:
        err = racer.stderr.read()
        assert racer.wait(timeout=120) == 0, err
    seed = __import__("json").loads((splits / "split_info.json").read_text())["seed"]
    alone = tmp_path / "alone"
    make_splits(root, str(alone), 0.25, 0.25, seed, log=lambda *a: None)
    assert checksums(splits) == checksums(alone)  # one split, whole, none of its files from the other seed


SETTINGS = '''"""A script."""
# --- settings ---
separator = "  # "  # a string that holds the comment mark
pattern = "{x}"  # braces in a comment: {like this} and {NAME} [one of {x}, y]
# --- end of settings ---
'''


def test_the_settings_reader_takes_braces_and_comment_marks_in_strings(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text(SETTINGS)
    assert cli.settings_block(str(script)) == [
        ("separator", "  # ", "a string that holds the comment mark"),
        ("pattern", "{x}", "braces in a comment: {like this} and {NAME} [one of {x}, y]")]
    with pytest.raises(SystemExit):
        cli.parse(str(script), "A script.", ["--help"], help_values={"NAME": 7})
    out = capsys.readouterr().out
    assert "braces in a comment: {like this} and 7" in out and "default '  # '" in out
