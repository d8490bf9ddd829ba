"""accuracy_eval.py: metrics by hand, whole-split evaluation, the comparison table and --verify."""
import io
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

import accuracy_eval
from scenes.checkpoints import load_checkpoint
from scenes.cli import UserError
from conftest import ROOT
from scenes.splitting import make_splits
from scenes.demo import CLASSES, make_demo_dataset
from scenes.metrics import classification_metrics

TABLE_COLUMNS = list(CLASSES) + ["mAP", "accuracy", "mean class accuracy"]


def eval_args(base, splits_dir, out_dir, *extra):
    return [f"--splits_dir={splits_dir}", f"--cache_dir={base / 'cache'}", f"--out_dir={out_dir}",
            "--device=cpu", *extra]


def copy_run(checkpoint, run_dir, name="best.pth"):
    os.makedirs(run_dir, exist_ok=True)
    shutil.copyfile(checkpoint, os.path.join(run_dir, name))
    return os.path.join(run_dir, name)


def test_ap_and_map_on_a_hand_made_example():
    # Softmax scores of 6 images over 3 classes (logits = log(scores), so softmax gives them back).
    scores = torch.tensor([[0.60, 0.30, 0.10],   # label 0, predicted 0
                           [0.20, 0.50, 0.30],   # label 0, predicted 1
                           [0.10, 0.70, 0.20],   # label 1, predicted 1
                           [0.45, 0.35, 0.20],   # label 1, predicted 0
                           [0.25, 0.15, 0.60],   # label 2, predicted 2
                           [0.05, 0.05, 0.90]])  # label 2, predicted 2
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    # AP = mean over the positives of the precision at each positive's rank (no ties here):
    # class 0, ranked by score: img0 .60 (P), img3 .45, img4 .25, img1 .20 (P) -> (1/1 + 2/4) / 2 = 0.75
    # class 1: img2 .70 (P), img1 .50, img3 .35 (P)                          -> (1/1 + 2/3) / 2 = 5/6
    # class 2: img5 .90 (P), img4 .60 (P)                                    -> (1/1 + 2/2) / 2 = 1
    # mAP = (0.75 + 5/6 + 1) / 3 = 31/36.
    # Predictions 0,1,1,0,2,2: accuracy 4/6; per class 1/2, 1/2, 2/2, whose mean is 2/3.
    metrics = classification_metrics(scores.log(), targets, ["a", "b", "c"])
    assert metrics["ap"] == pytest.approx({"a": 0.75, "b": 5 / 6, "c": 1.0}, abs=1e-9)
    assert metrics["map"] == pytest.approx(31 / 36, abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["class_accuracy"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 1.0})
    assert metrics["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert metrics["confusion"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    for c, name in enumerate("abc"):
        assert metrics["ap"][name] == pytest.approx(average_precision_score(targets.numpy() == c, scores[:, c]))


def test_metrics_do_not_depend_on_the_batch_size(trained, tmp_path):
    base, splits_dir, checkpoint = trained
    results = {}
    for batch_size in (3, 64):
        run_dir = tmp_path / f"bs{batch_size}" / "r"
        path = copy_run(checkpoint, run_dir)
        table = accuracy_eval.main([path, "--split=validation", f"--batch_size={batch_size}",
                                    *eval_args(base, splits_dir, tmp_path / f"out{batch_size}")])
        results[batch_size] = table, pd.read_csv(run_dir / "best_validation_scores.csv")
    (table3, scores3), (table64, scores64) = results[3], results[64]
    pd.testing.assert_frame_equal(table3, table64, check_exact=True)
    pd.testing.assert_frame_equal(scores3, scores64, check_exact=True)
    assert len(scores3) == 18 and list(table3.columns) == TABLE_COLUMNS
    # The table's APs are those of the saved scores, over the whole split.
    for c, name in enumerate(CLASSES):
        assert table3.loc["r", name] == pytest.approx(average_precision_score(scores3["label"] == c, scores3[name]))
    # Training evaluated the same weights on the validation split with another batch size (32).
    assert table3.loc["r", "mAP"] == pytest.approx(load_checkpoint(checkpoint)["history"][-1]["val_map"], abs=1e-6)


def test_verify_passes_on_saved_scores_and_fails_on_a_changed_one(trained, tmp_path):
    base, splits_dir, checkpoint = trained
    path = copy_run(checkpoint, tmp_path / "r")
    args = [path, *eval_args(base, splits_dir, tmp_path / "out")]
    score_file = tmp_path / "r" / "best_test_scores.csv"
    with pytest.raises(UserError, match="no saved scores"):
        accuracy_eval.main(args + ["--verify"])
    accuracy_eval.main(args)
    saved = score_file.read_bytes()
    assert accuracy_eval.main(args + ["--verify"]) == {"r": pytest.approx(0.0, abs=1e-4)}
    assert score_file.read_bytes() == saved  # verify writes nothing

    def save_changed(row, delta, drop=None):
        scores = pd.read_csv(io.BytesIO(saved))
        scores.loc[row, "forest"] += delta
        scores.drop(index=[] if drop is None else [drop]).to_csv(score_file, index=False, float_format="%.9g")

    save_changed(4, 5e-5)  # within the tolerance of 1e-4
    assert accuracy_eval.main(args + ["--verify"])["r"] == pytest.approx(5e-5, rel=1e-3)
    save_changed(4, 3e-4)
    with pytest.raises(UserError, match="more than the tolerance"):
        accuracy_eval.main(args + ["--verify"])
    save_changed(4, 0.0, drop=7)
    with pytest.raises(UserError, match="not the same 18 images"):
        accuracy_eval.main(args + ["--verify"])


def test_a_checkpoint_of_other_classes_is_refused(trained, tmp_path):
    base, _, checkpoint = trained
    other_root = make_demo_dataset(str(tmp_path / "other"), per_class=4, size=40)
    os.rename(os.path.join(other_root, "street"), os.path.join(other_root, "town"))
    make_splits(other_root, str(tmp_path / "splits"), val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "accuracy_eval.py"), checkpoint,
                             *eval_args(base, tmp_path / "splits", tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "trained on classes" in result.stderr and "town" in result.stderr
    # A CSV whose class names disagree with the checkpoint's, over the right images.
    _, splits_dir, _ = trained
    test_csv = pd.read_csv(os.path.join(splits_dir, "test.csv"))
    test_csv["class_name"] = test_csv["class_name"].replace("sea", "ocean")
    test_csv.to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(UserError, match="ocean"):
        accuracy_eval.main([checkpoint, f"--csv={tmp_path / 'renamed.csv'}",
                            *eval_args(base, splits_dir, tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_comparison_table_over_a_checkpoints_folder(trained, tmp_path):
    base, splits_dir, checkpoint = trained
    folder = tmp_path / "checkpoints"
    copy_run(checkpoint, folder / "a")
    copy_run(checkpoint, folder / "b", "last.pth")  # a run with no best.pth falls back to last.pth
    (folder / "notes").mkdir()  # a folder without checkpoints is passed over
    extra = copy_run(checkpoint, folder / "a", "last.pth")  # named too: two rows from folder a
    table = accuracy_eval.main([str(folder), extra, *eval_args(base, splits_dir, tmp_path / "out")])
    for name in ("a/best_test_scores.csv", "a/best_test_confusion.png", "a/last_test_scores.csv",
                 "b/last_test_scores.csv", "b/last_test_confusion.png"):
        assert (folder / name).is_file(), name
    assert not (folder / "a" / "best_test_scores.csv.tmp").exists()
    saved = pd.read_csv(tmp_path / "out" / "comparison_test.csv", index_col="run")
    assert list(saved.index) == ["a/best", "b", "a/last"] == list(table.index)
    assert list(saved.columns) == TABLE_COLUMNS
    # Same weights in every row, so the same numbers; and they are real metrics, not placeholders.
    assert (saved.nunique() == 1).all() and saved.notna().all().all()
    scores = pd.read_csv(folder / "b" / "last_test_scores.csv")
    assert saved.loc["b", "accuracy"] == pytest.approx(
        (scores[list(CLASSES)].to_numpy().argmax(1) == scores["label"]).mean(), abs=1e-6)
    assert saved.loc["b", "mAP"] == pytest.approx(np.mean([average_precision_score(
        scores["label"] == c, scores[name]) for c, name in enumerate(CLASSES)]), abs=1e-6)
    markdown = (tmp_path / "out" / "comparison_test.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| run"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["run"] + TABLE_COLUMNS
    for run in ("a/best", "b", "a/last"):
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {run} |"))
        assert not math.isnan(float(row.split("|")[-2]))
