"""The CUDA path, where a CUDA GPU is present (every test here is marked ``gpu`` and skipped elsewhere):
two short training epochs in bf16 and channels-last, evaluation, predict.py, export.py and bench.py.

    python -m pytest -q -m gpu tests/test_gpu.py
"""
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import accuracy_eval
import bench
import export
import predict
import train
from conftest import split_image_set, train_args
from scenes import training
from scenes.checkpoints import load_checkpoint

pytestmark = pytest.mark.gpu


def on_the_gpu(args):
    return [a for a in args if not a.startswith("--device=")] + ["--device=cuda"]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """Two epochs on the GPU in bf16: (base folder, splits_dir, run folder, the model as the step ran it)."""
    base = tmp_path_factory.mktemp("gpu")
    splits_dir = split_image_set(base)
    models, prepare = [], training.prepare_for_steps
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "prepare_for_steps", lambda model, rt: models.append(prepare(model, rt)) or models[-1])
        train.main(on_the_gpu(train_args(splits_dir, base, "--run=g", "--epochs=2", "--precision=bf16",
                                         "--batch_size=8")))
    return base, splits_dir, base / "checkpoints" / "g", models[0]


def test_two_short_epochs_train_on_the_gpu_in_bf16_and_channels_last(gpu_run):
    _, _, run_dir, model = gpu_run
    checkpoint = load_checkpoint(str(run_dir / "last.pth"))
    gpu = torch.cuda.current_device()
    assert checkpoint["runtime"] == {"device": f"cuda:{gpu}", "precision": "bf16", "processes": 1}
    assert len(checkpoint["history"]) == 2 and checkpoint["plan"]["epochs"] == 2
    assert all(math.isfinite(row[key]) for row in checkpoint["history"] for key in ("train_loss", "val_loss"))
    assert next(model.parameters()).device == torch.device("cuda", gpu)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(t.device.type == "cpu" for t in checkpoint["model"].values())  # loads anywhere


def test_evaluation_on_the_gpu_gives_the_cpu_scores(gpu_run, tmp_path):
    base, splits_dir, run_dir, _ = gpu_run
    scores = {}
    for device, precision in (("cuda", "fp32"), ("cpu", "fp32"), ("cuda", "auto")):
        run = tmp_path / f"{device}-{precision}" / "g"
        os.makedirs(run)
        shutil.copyfile(run_dir / "best.pth", run / "best.pth")
        accuracy_eval.main([str(run / "best.pth"), f"--splits_dir={splits_dir}", f"--cache_dir={base / 'cache'}",
                            f"--out_dir={tmp_path / 'out'}", f"--device={device}", f"--precision={precision}"])
        scores[device, precision] = pd.read_csv(run / "best_test_scores.csv")
    gpu, cpu, bf16 = (scores[key].drop(columns=["path", "label"]).to_numpy() for key in scores)
    assert np.abs(gpu - cpu).max() < 1e-2  # TF32 convolutions on the GPU, float32 on the CPU
    assert np.abs(bf16 - cpu).max() < 5e-2 and np.isfinite(bf16).all()


def test_predict_labels_images_on_the_gpu(gpu_run):
    base, _, run_dir, _ = gpu_run
    table = predict.main([f"--checkpoint={run_dir / 'best.pth'}", str(base / "images"), "--device=cuda"])
    assert len(table) == 72
    classes = load_checkpoint(str(run_dir / "best.pth"))["config"]["class_names"]
    assert np.allclose(table[classes].sum(axis=1), 1, atol=1e-3)


def test_a_run_trained_on_the_gpu_exports_to_onnx(gpu_run, tmp_path):
    _, _, run_dir, _ = gpu_run
    difference, same_top1, total = export.main([f"--checkpoint={run_dir / 'best.pth'}",
                                                f"--out={tmp_path / 'model.onnx'}"])
    assert difference < 1e-4 and same_top1 == total == 18


def test_bench_on_the_gpu(gpu_run, tmp_path):
    base, _, _, _ = gpu_run
    results = bench.main([f"--data_root={base / 'images'}", "--sizes=32", "--batch_size=8", "--train_steps=2",
                          "--eval_images=16", "--warmup_steps=1", "--device=cuda", "--peak_matmul_size=1024",
                          "--num_workers=0", f"--cache_dir={tmp_path / 'cache'}"])
    assert results["machine"]["device"].startswith("cuda")
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert results["train_mfu_precision"] == precision and precision in results["machine"]["matmul_peak_tflops"]
    default = results["sizes"]["32"]["default"]
    assert 0 < results["train_mfu"] < 1 and default["train"]["cuda_peak_allocated_mb"] > 0
