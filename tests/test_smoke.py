import os

import torch

import train
from checkpoint import load_checkpoint
from conftest import train_args


def test_one_epoch_writes_every_file(splits, tmp_path):
    _, splits_dir = splits
    train.main(train_args(splits_dir, tmp_path, "--run=r"))
    run_dir = tmp_path / "checkpoints" / "r"
    for name in ("last.pth", "best.pth", "metrics.csv", "config.json", "curves.png", "test_loss.png"):
        assert (run_dir / name).is_file(), name
    checkpoint = torch.load(run_dir / "last.pth", weights_only=True)
    assert checkpoint["config"]["image_size"] == 32
    assert checkpoint["config"]["class_names"] == sorted(os.listdir(checkpoint["config"]["data_root"]))
    assert load_checkpoint(str(run_dir / "best.pth"))["epoch"] == 1
