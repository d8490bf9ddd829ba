"""Issue 22, groups 1 and 7: a run never continues on other data but resumes on the same split by any
path; best.pth is the best epoch (ties broken by the validation loss) and the demo set is learnt
over its epochs, not in one."""
import csv
import os
import shutil
from types import SimpleNamespace

import pytest
import torch

import main as main_script
import train
from conftest import train_args
from scenes.splitting import make_splits
from scenes import pipeline, training
from scenes.checkpoints import content_ids, load_checkpoint
from scenes.demo import CLASSES, make_demo_dataset
from scenes.splits import read_split, read_split_csv, read_split_info, split_csv, split_digest
from test_robustness import assert_user_error, run_cli, trained  # noqa: F401 (a fixture: a one-epoch run)


def copied_run(trained, dest):
    shutil.copytree(trained.run_dir, dest / "checkpoints" / "base")
    return dest / "checkpoints" / "base"


def folder_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_a_split_made_again_over_other_images_is_not_resumed(trained, tmp_path, capsys):
    root = make_demo_dataset(str(tmp_path / "images"), per_class=4, size=32)
    shutil.copytree(trained.root, root, dirs_exist_ok=True)
    make_demo_dataset(root, per_class=6, size=32)  # images added, then the split made again
    splits_dir = str(tmp_path / "splits")
    make_splits(root, splits_dir, val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    run_dir = copied_run(trained, tmp_path)
    before = folder_bytes(run_dir)
    argv = train_args(splits_dir, tmp_path, "--run=base", "--precision=fp32", "--epochs=2")
    code, err = run_cli(train.main, argv, capsys)
    assert_user_error(code, err, "was trained on another split", "train and validation and test", "--restart=true")
    assert folder_bytes(run_dir) == before
    assert not list((tmp_path / "cache").glob("*.u8"))  # refused before the new split's images were cached
    assert len(load_checkpoint(str(run_dir / "last.pth"))["history"]) == 1


@pytest.mark.parametrize("spelling", ["relative", "absolute", "copy"])
def test_the_same_split_by_another_path_resumes(trained, tmp_path, monkeypatch, spelling):
    if spelling == "copy":
        splits_dir = str(shutil.copytree(trained.splits_dir, tmp_path / "copied_splits"))
    elif spelling == "relative":
        monkeypatch.chdir(os.path.dirname(trained.splits_dir))
        splits_dir = os.path.join(".", os.path.basename(trained.splits_dir))
    else:
        splits_dir = os.path.abspath(trained.splits_dir)
    run_dir = copied_run(trained, tmp_path)
    train.main(train_args(splits_dir, trained.base, "--run=base", "--precision=fp32", "--epochs=2",
                          f"--checkpoints_dir={tmp_path / 'checkpoints'}"))
    assert len(load_checkpoint(str(run_dir / "last.pth"))["history"]) == 2


def test_the_digest_follows_rows_and_content_not_the_folder(trained, tmp_path):
    rows = read_split_csv(split_csv(trained.splits_dir, "train"), trained.root)
    contents = read_split_info(trained.splits_dir)["sha256"]
    copied = shutil.copytree(trained.splits_dir, tmp_path / "copy")
    same = read_split(str(copied), trained.root, CLASSES).digests["train"]
    assert same == split_digest(rows, contents)
    relabelled = [(rows[0][0], (rows[0][1] + 1) % 6)] + rows[1:]
    assert split_digest(relabelled, contents) != split_digest(rows, contents)
    assert split_digest(rows[1:], contents) != split_digest(rows, contents)
    repainted = {**contents, rows[0][0]: "0" * 64}  # another picture under the same name
    assert split_digest(rows, repainted) != split_digest(rows, contents)
    checkpoint = load_checkpoint(str(trained.run_dir / "last.pth"))
    assert checkpoint["config"]["split_sha256"]["train"] == same and checkpoint["format"] == 2
    train_and_val = read_split(str(copied), trained.root, CLASSES).rows
    ids = content_ids(contents[rel] for name in ("train", "validation") for rel, _ in train_and_val[name])
    assert torch.equal(checkpoint["trained_on"], ids)


@pytest.mark.parametrize("val_map, val_loss, better", [
    (0.9, 0.4, False),  # the same mAP, a higher loss: the earlier epoch stays
    (0.9, 0.2, True),  # the same mAP, a lower loss
    (0.95, 0.9, True),  # a higher mAP wins whatever its loss
    (0.8, 0.1, False),
])
def test_best_is_the_higher_map_then_the_lower_loss(val_map, val_loss, better):
    best_so_far = SimpleNamespace(best_metric=0.9, best_loss=0.3)
    assert training.better({"val_map": val_map, "val_loss": val_loss}, best_so_far) is better


def test_main_py_passes_restart_to_its_train_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(pipeline, "train_presets", lambda config, overrides: seen.append(overrides))
    main_script.main(["--steps=split,train", "--restart=true"])
    assert seen[0]["restart"] is True and seen[0]["run"] == "demo"


def test_the_demo_is_learnt_over_its_epochs_and_best_pth_is_its_best_epoch(tmp_path, monkeypatch):
    """The fresh-machine command's split and training, on the generated demo set."""
    monkeypatch.chdir(tmp_path)
    main_script.main(["--steps=split,train"])
    assert os.listdir(tmp_path) == ["demo"]  # everything the demo writes, in one folder to delete
    with open(tmp_path / "demo" / "checkpoints" / "demo" / "metrics.csv", newline="") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    maps = [row["val_map"] for row in rows]
    assert maps[0] < 0.75 and max(maps) > maps[0] + 0.15, maps  # learnt over the epochs, not solved in one
    best = load_checkpoint(str(tmp_path / "demo" / "checkpoints" / "demo" / "best.pth"))
    chosen = max(range(len(rows)), key=lambda i: (maps[i], -rows[i]["val_loss"])) + 1
    assert best["epoch"] == best["best_epoch"] == chosen
