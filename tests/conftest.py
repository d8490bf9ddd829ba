"""Shared fixtures: small generated image folders and splits in a temporary directory."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scenes.splitting import make_splits  # noqa: E402
from scenes.demo import make_demo_dataset  # noqa: E402
from scenes.runtime import Runtime  # noqa: E402

# Tiny tensors gain nothing from threads, and the tests' subprocesses (torchrun ranks, killed
# training runs) would otherwise oversubscribe a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

CPU = Runtime(torch.device("cpu"), bf16=False)  # float32 on the CPU, one process
REAL_DATA = os.environ.get("INTEL_SCENES", os.path.join(ROOT, "..", "shared", "data", "intel-scenes"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs the CUDA path; skipped where no CUDA GPU is present")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def image_root(tmp_path):
    """Six classes of small synthetic JPEGs (12 per class, 40x40)."""
    return make_demo_dataset(str(tmp_path / "images"), per_class=12, size=40)


@pytest.fixture
def splits(image_root, tmp_path):
    """Splits of ``image_root`` in tmp_path/splits; returns (image_root, splits_dir)."""
    splits_dir = str(tmp_path / "splits")
    make_splits(image_root, splits_dir, val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    return image_root, splits_dir


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny run trained for one epoch at 32 px (evaluated at 40 px), shared by the session:
    (base dir, splits_dir, best.pth). Tests that write next to the checkpoint copy it first.

    Batches of 6 at lr 0.02 give a model whose softmax scores differ from image to image, so AP is
    not decided by ties alone.
    """
    import train
    base = tmp_path_factory.mktemp("trained")
    root = make_demo_dataset(str(base / "images"), per_class=12, size=40)
    splits_dir = str(base / "splits")
    make_splits(root, splits_dir, val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    train.main(train_args(splits_dir, base, "--run=r", "--batch_size=6", "--lr=0.02"))
    return base, splits_dir, str(base / "checkpoints" / "r" / "best.pth")


@pytest.fixture
def real_data():
    if not os.path.isdir(REAL_DATA):
        pytest.skip("the real scene images are not here (set INTEL_SCENES to their folder)")
    return REAL_DATA


def split_image_set(base, per_class=12, val_size=0.25, test_size=0.25):
    """A generated six-class set (40x40) in base/images and its splits in base/splits; returns splits_dir."""
    root = make_demo_dataset(str(base / "images"), per_class=per_class, size=40)
    make_splits(root, str(base / "splits"), val_size=val_size, test_size=test_size, seed=0, log=lambda *a: None)
    return str(base / "splits")


def train_args(splits_dir, tmp_path, *extra):
    """Arguments for a short, small CPU training run inside tmp_path."""
    return [f"--splits_dir={splits_dir}", f"--checkpoints_dir={tmp_path / 'checkpoints'}",
            f"--cache_dir={tmp_path / 'cache'}", "--image_size=32", "--eval_image_size=40", "--batch_size=16",
            "--eval_batch_size=32", "--epochs=1", "--device=cpu", "--lr=0.05", "--warmup_epochs=0", *extra]
