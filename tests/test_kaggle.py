"""The Kaggle download as it arrives (seg_train/seg_train/<class>, seg_test/seg_test/<class>,
seg_pred/seg_pred/*.jpg): --data_root anywhere in it, and a checkpoint evaluated on a labelled folder."""
import shutil

import pandas as pd
import pytest

import accuracy_eval
import data_handling
import train
from conftest import train_args
from scenes.demo import CLASSES, make_demo_dataset
from scenes.splits import write_split_csv
from scenes.splitting import scan_dataset
from test_robustness import assert_user_error, run_cli


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A small archive laid out as Kaggle's, with a run trained on its seg_train/seg_train."""
    base = tmp_path_factory.mktemp("kaggle")
    archive = base / "archive"
    make_demo_dataset(str(archive / "seg_train" / "seg_train"), per_class=8, size=32, seed=0)
    make_demo_dataset(str(archive / "seg_test" / "seg_test"), per_class=3, size=32, seed=7)
    (archive / "seg_pred" / "seg_pred").mkdir(parents=True)
    shutil.copy(archive / "seg_test" / "seg_test" / "sea" / "0000.jpg", archive / "seg_pred" / "seg_pred" / "1.jpg")
    train_root = str(archive / "seg_train" / "seg_train")
    data_handling.main([f"--data_root={train_root}", f"--splits_dir={base / 'splits'}", "--val_size=0.25",
                        "--test_size=0.25"])
    train.main(train_args(str(base / "splits"), base, "--run=r", "--precision=fp32"))
    return base


@pytest.mark.parametrize("where", ["", "seg_train", "seg_test"])
def test_data_root_anywhere_in_the_download_names_the_class_folders(archive, tmp_path, capsys, where):
    root = archive / "archive" / where if where else archive / "archive"
    code, err = run_cli(data_handling.main, [f"--data_root={root}", f"--splits_dir={tmp_path / 's'}"], capsys)
    nested = "seg_test/seg_test" if where == "seg_test" else "seg_train/seg_train"
    line = assert_user_error(code, err, f"{nested} holds class folders", "--data_root=")
    assert line.split("--data_root=")[1].split(";")[0].rstrip(".").endswith(nested)
    if not where:  # the archive itself: the test folder is named as what accuracy_eval.py --folder takes
        assert "--folder=" in line and "seg_test/seg_test" in line
    assert not (tmp_path / "s").exists()


def test_a_labelled_folder_gives_the_numbers_of_a_csv_listing_the_same_images(archive, tmp_path, capsys):
    folder = archive / "archive" / "seg_test" / "seg_test"
    common = [str(archive / "checkpoints" / "r"), f"--out_dir={tmp_path / 'results'}", "--device=cpu",
              "--precision=fp32", f"--cache_dir={tmp_path / 'cache'}"]
    by_folder = accuracy_eval.main([*common, f"--folder={folder}"])
    class_names, rows = scan_dataset(str(folder))
    assert class_names == list(CLASSES)
    listing = tmp_path / "by_hand" / "seg_test.csv"
    listing.parent.mkdir()
    write_split_csv(str(listing), rows, class_names)
    by_csv = accuracy_eval.main([*common, f"--csv={listing}", f"--data_root={folder}"])
    pd.testing.assert_frame_equal(by_folder, by_csv)
    assert (archive / "checkpoints" / "r" / "best_folder-seg_test_scores.csv").exists()
    assert not (archive / "checkpoints" / "r" / "best_test_scores.csv").exists()  # the split's name stays its own
    assert (tmp_path / "results" / "folder-seg_test.csv").exists()
    code, err = run_cli(accuracy_eval.main, [*common, f"--folder={archive / 'archive' / 'seg_train' / 'seg_train'}"],
                        capsys)
    assert_user_error(code, err, "among its training or validation images")
