"""Every number is about the data it names: runs, splits, images, caches and score files checked by
content, through the scripts' command lines."""
import hashlib
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import accuracy_eval
import data_handling
import feature_map
import report
import train
from conftest import train_args
from scenes.checkpoints import load_checkpoint, save_checkpoint
from scenes.demo import make_demo_dataset
from scenes.splits import read_split_csv, split_csv
from scenes.splitting import make_splits
from test_robustness import assert_user_error, run_cli

QUIET = dict(log=lambda *a: None)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def folder_digests(folder):
    return {os.path.relpath(os.path.join(d, f), folder): digest(os.path.join(d, f))
            for d, _, files in os.walk(folder) for f in files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real-like run ``real`` on split A of one image set, and a ``demo`` run on another set, both
    in one checkpoints folder, as after ``python main.py`` and a real run."""
    base = tmp_path_factory.mktemp("integrity")
    root = make_demo_dataset(str(base / "images"), per_class=8, size=32)
    make_splits(root, str(base / "splits"), val_size=0.25, test_size=0.25, seed=0, **QUIET)
    train.main(train_args(str(base / "splits"), base, "--run=real", "--precision=fp32"))
    other = make_demo_dataset(str(base / "demo_images"), per_class=8, size=32, seed=5)
    make_splits(other, str(base / "demo_splits"), val_size=0.25, test_size=0.25, seed=0, **QUIET)
    train.main(train_args(str(base / "demo_splits"), base, "--run=demo", "--precision=fp32"))
    return SimpleNamespace(base=base, root=root, splits=str(base / "splits"), checkpoints=base / "checkpoints")


def eval_args(runs, tmp_path, *extra):
    return [f"--splits_dir={runs.splits}", f"--out_dir={tmp_path / 'results'}", f"--cache_dir={tmp_path / 'cache'}",
            "--device=cpu", "--precision=fp32", *extra]


def copied(runs, tmp_path):
    """The two runs copied into tmp_path/checkpoints (tests write score files beside them)."""
    return shutil.copytree(runs.checkpoints, tmp_path / "checkpoints")


def test_the_demo_run_is_skipped_by_the_table_and_the_report(runs, tmp_path, capsys):
    checkpoints = copied(runs, tmp_path)
    table = accuracy_eval.main([str(checkpoints), *eval_args(runs, tmp_path)])
    assert list(table.index) == ["real"]
    assert "skipped: " in capsys.readouterr().err
    made = report.main([str(checkpoints), *eval_args(runs, tmp_path, f"--out_dir={tmp_path / 'report'}",
                                                     "--gallery=2", "--stat_images=4")])
    err = capsys.readouterr().err
    assert "run demo" in err and "trained on another split" in err
    assert [r.name for r in made.records] == ["real"] and made.best.name == "real"
    assert list(made.table1.index) == ["real"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Left out: `demo`" in text and "| demo |" not in text


def test_a_run_is_not_scored_on_a_split_made_again(runs, tmp_path, capsys):
    checkpoints = copied(runs, tmp_path)
    accuracy_eval.main([str(checkpoints / "real"), *eval_args(runs, tmp_path)])
    saved = folder_digests(checkpoints / "real")
    again = str(tmp_path / "again")
    make_splits(runs.root, again, val_size=0.25, test_size=0.25, seed=1, **QUIET)
    for script in (accuracy_eval.main, report.main):
        code, err = run_cli(script, [str(checkpoints / "real"), *eval_args(runs, tmp_path, f"--splits_dir={again}")],
                            capsys)
        assert_user_error(code, err, "trained on the split in" if script is report.main else "is not scored")
    assert folder_digests(checkpoints / "real") == saved  # its own split's scores are untouched


def test_other_pictures_under_the_same_names_are_refused_naming_one(runs, tmp_path, capsys):
    root = shutil.copytree(runs.root, tmp_path / "images")
    (changed, _), *_ = read_split_csv(split_csv(runs.splits, "test"), str(root))
    Image.new("RGB", (32, 32), (250, 0, 0)).save(root / changed, "JPEG")
    code, err = run_cli(train.main, train_args(runs.splits, tmp_path, "--run=r", f"--data_root={root}"), capsys)
    assert_user_error(code, err, changed, "are not the ones")
    assert not (tmp_path / "checkpoints" / "r" / "last.pth").exists()
    checkpoints = copied(runs, tmp_path)
    code, err = run_cli(accuracy_eval.main, [str(checkpoints / "real"), *eval_args(runs, tmp_path,
                                                                                   f"--data_root={root}")], capsys)
    assert_user_error(code, err, changed, "are not the ones")


def test_a_csv_is_scored_only_when_it_shares_no_image_with_training_and_validation(runs, tmp_path, capsys):
    checkpoints = copied(runs, tmp_path)
    fresh = make_demo_dataset(str(tmp_path / "fresh"), per_class=3, size=32, seed=9)
    make_splits(fresh, str(tmp_path / "fresh_splits"), val_size=0.34, test_size=0.34, seed=0, **QUIET)
    other_csv = split_csv(str(tmp_path / "fresh_splits"), "train")
    table = accuracy_eval.main([str(checkpoints / "real"), *eval_args(runs, tmp_path, f"--csv={other_csv}",
                                                                      f"--data_root={fresh}")])
    assert list(table.index) == ["real"]
    train_csv = split_csv(runs.splits, "train")
    code, err = run_cli(accuracy_eval.main, [str(checkpoints / "real"), *eval_args(runs, tmp_path,
                                                                                   f"--csv={train_csv}")], capsys)
    assert_user_error(code, err, "among its training or validation images")


def test_an_edited_score_file_is_scored_again(runs, tmp_path, capsys):
    checkpoints = copied(runs, tmp_path)
    report_args = [str(checkpoints), *eval_args(runs, tmp_path, f"--out_dir={tmp_path / 'report'}", "--gallery=0",
                                                "--stat_images=4")]
    first = report.main(report_args).table1
    score_file = checkpoints / "real" / "best_test_scores.csv"
    scores = pd.read_csv(score_file)
    column = scores.columns[2]
    scores[column] = scores[column] + 0.5  # rows no longer sum to 1
    scores.to_csv(score_file, index=False)
    second = report.main(report_args).table1
    assert "is not as it was saved (its rows do not sum to 1); scoring again" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, second)
    scores = pd.read_csv(score_file)
    assert np.allclose(scores[scores.columns[2:]].sum(axis=1), 1, atol=1e-5)
    swapped = scores.copy()  # rows still sum to 1, but it is not what was saved
    swapped[[scores.columns[2], scores.columns[3]]] = scores[[scores.columns[3], scores.columns[2]]].to_numpy()
    swapped.to_csv(score_file, index=False, float_format="%.9g")
    pd.testing.assert_frame_equal(report.main(report_args).table1, first)
    assert "(it was changed after it was saved); scoring again" in capsys.readouterr().out


def test_verify_says_whether_the_model_or_the_data_changed(runs, tmp_path, capsys):
    checkpoints = copied(runs, tmp_path)
    best = checkpoints / "real" / "best.pth"
    accuracy_eval.main([str(best), *eval_args(runs, tmp_path)])
    checkpoint = load_checkpoint(str(best))
    checkpoint["model"]["fc.bias"][0] += 2.0  # one class more likely everywhere
    save_checkpoint(checkpoint, str(best))
    code, err = run_cli(accuracy_eval.main, [str(best), "--verify", *eval_args(runs, tmp_path)], capsys)
    assert_user_error(code, err, "the checkpoint changed since the scores were saved")
    assert "the images" not in err
    fresh = make_demo_dataset(str(tmp_path / "fresh"), per_class=3, size=32, seed=9)
    make_splits(fresh, str(tmp_path / "fresh_splits"), val_size=0.34, test_size=0.34, seed=0, **QUIET)
    csv_args = [f"--csv={split_csv(str(tmp_path / 'fresh_splits'), 'test')}", f"--data_root={fresh}"]
    accuracy_eval.main([str(best), *eval_args(runs, tmp_path, *csv_args)])
    (path, _), *_ = read_split_csv(split_csv(str(tmp_path / "fresh_splits"), "test"), fresh)
    Image.new("RGB", (32, 32), (0, 0, 250)).save(os.path.join(fresh, path), "JPEG")
    code, err = run_cli(accuracy_eval.main, [str(best), "--verify", *eval_args(runs, tmp_path, *csv_args)], capsys)
    assert_user_error(code, err, "the images (their content or labels) changed since the scores were saved")


def test_a_corrupted_cache_gives_the_numbers_of_an_intact_one(runs, tmp_path, capsys):
    checkpoints = copied(runs, tmp_path)
    first = accuracy_eval.main([str(checkpoints / "real"), *eval_args(runs, tmp_path)])
    (cache_file,) = (tmp_path / "cache").iterdir()
    with open(cache_file, "r+b") as f:
        f.seek(cache_file.stat().st_size // 2)
        f.write(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    second = accuracy_eval.main([str(checkpoints / "real"), *eval_args(runs, tmp_path)])
    assert "is damaged" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, second)


def photo(seed, size=96):
    """A smooth random picture (a photo's low frequencies), so re-encoding it keeps its look."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def test_near_copies_are_kept_in_one_split_and_reported_across_classes(tmp_path, capsys):
    root = tmp_path / "images"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            photo(hash((name, i)) % 1000).save(root / name / f"{i}.png")
    base = photo(424242)
    base.save(root / "a" / "orig.png")
    base.save(root / "a" / "again.jpg", quality=60)  # the same photo re-encoded
    base.resize((80, 80)).save(root / "a" / "smaller.jpg", quality=90)  # and resized
    base.save(root / "b" / "filed_twice.jpg", quality=75)  # and filed under another class
    group = {"a/orig.png", "a/again.jpg", "a/smaller.jpg", "b/filed_twice.jpg"}
    for seed in range(6):
        splits_dir = tmp_path / f"splits{seed}"
        data_handling.main([f"--data_root={root}", f"--splits_dir={splits_dir}", "--val_size=0.25",
                            "--test_size=0.25", f"--seed={seed}"])
        where = {rel: split for split in ("train", "validation", "test")
                 for rel, _ in read_split_csv(split_csv(str(splits_dir), split), str(root))}
        assert len({where[rel] for rel in group}) == 1, where
    out = capsys.readouterr().out
    assert "near-copies (filed under two classes): a/again.jpg ~ a/orig.png ~ a/smaller.jpg ~ b/filed_twice.jpg" in out
    info = json.loads((tmp_path / "splits0" / "split_info.json").read_text())
    assert sorted(info["near_copies"][0]) == sorted(group) and len(info["sha256"]) == 28


def test_the_checkpoint_keeps_its_split_digest_and_refuses_to_resume_on_another(runs, tmp_path, capsys):
    run_dir = tmp_path / "checkpoints" / "real"
    shutil.copytree(runs.checkpoints / "real", run_dir)
    again = str(tmp_path / "again")
    make_splits(runs.root, again, val_size=0.25, test_size=0.25, seed=1, **QUIET)
    before = folder_digests(run_dir)
    code, err = run_cli(train.main, train_args(again, tmp_path, "--run=real", "--precision=fp32", "--epochs=2"),
                        capsys)
    assert_user_error(code, err, "was trained on another split")
    assert folder_digests(run_dir) == before
    saved = torch.load(run_dir / "last.pth", weights_only=True)
    assert saved["format"] == 2 and set(saved["config"]["split_sha256"]) == {"train", "validation", "test"}


def test_an_old_checkpoint_is_evaluated_with_a_note_and_feature_maps_keep_to_the_run_split(runs, tmp_path, capsys):
    checkpoints = copied(runs, tmp_path)
    best = str(checkpoints / "real" / "best.pth")
    old = load_checkpoint(best)
    del old["format"], old["trained_on"]  # as saved before runs knew their images' content
    save_checkpoint(old, best)
    table = accuracy_eval.main([best, *eval_args(runs, tmp_path)])
    assert list(table.index) == ["real"] and "was saved by an older version" in capsys.readouterr().err
    again = str(tmp_path / "again")
    make_splits(runs.root, again, val_size=0.25, test_size=0.25, seed=1, **QUIET)
    demo_best = str(checkpoints / "demo" / "best.pth")
    code, err = run_cli(feature_map.main, [f"--checkpoint={demo_best}", f"--splits_dir={runs.splits}",
                                           f"--out_dir={tmp_path / 'maps'}", "--stat_images=4", "--num_images=1",
                                           f"--cache_dir={tmp_path / 'cache'}"], capsys)
    assert_user_error(code, err, "is not looked into on this split", "trained on another split")
    assert not (tmp_path / "maps").exists()
