"""bench.py's code paths on tiny images (not timed: the numbers are only checked for consistency)."""
import json
import math
import os
import tempfile

import pytest
import torch

import bench
from scenes import cli
from scenes.models import build_model

TINY = ["--sizes=32", "--batch_size=8", "--train_steps=2", "--eval_images=16", "--warmup_steps=1",
        "--device=cpu", "--peak_matmul_size=128"]


def bench_folders():
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("nature-bench-")}


def test_bench_times_both_paths_and_leaves_nothing_behind(image_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory would show here
    before, children_before = bench_folders(), set(bench.child_pids())
    out = tmp_path / "bench.json"
    results = bench.main([f"--data_root={image_root}", f"--cache_dir={tmp_path / 'cache'}", "--num_workers=1",
                          f"--json={out}", *TINY])
    saved = json.loads(out.read_text())
    assert saved["train_speedup"] == pytest.approx(results["train_speedup"])
    size = saved["sizes"]["32"]
    plain, default = size["plain"], size["default"]
    assert saved["train_speedup"] == pytest.approx(default["train"]["images_per_s"] / plain["train"]["images_per_s"])
    assert saved["eval_speedup"] == pytest.approx(default["eval"]["images_per_s"] / plain["eval"]["images_per_s"])
    precision = saved["train_mfu_precision"]  # the default path's, against the peak measured in it
    assert precision == ("bf16" if saved["machine"]["default_bf16"] else "fp32") == default["train"]["precision"]
    peak = saved["machine"]["matmul_peak_tflops"][precision] * 1e12
    expected_mfu = default["train"]["images_per_s"] * size["flops_per_image"]["train"] / peak
    assert saved["train_mfu"] == pytest.approx(expected_mfu)
    assert plain["train"]["precision"] == "fp32"
    # 72 images: the training CSV holds 9 whole batches of 8 (3 steps needed), evaluation one batch of 72
    assert saved["data"] == {**saved["data"], "train_images": 24, "eval_images": 72, "demo": False}
    for path in (plain, default):
        assert path["train"]["images"] == 2 * 8 and path["eval"]["images"] == 72
        assert math.isfinite(path["train"]["final_loss"])
        for phase in ("train", "eval"):
            assert 0 <= path[phase]["data_share"] <= 1 and path[phase]["images_per_s"] > 0
            assert (path[phase]["peak_rss_mb"] is not None) == saved["machine"]["peak_rss_is_per_phase"]
    assert plain["train"]["worker_processes"] == 1 and default["train"]["worker_processes"] == 0
    assert default["cache_build_train_s"] > 0
    assert sorted(os.listdir(tmp_path)) == ["bench.json", "cache", "images"]  # no splits/, checkpoints/
    assert bench_folders() == before, "the temporary bench folder was not removed"
    assert set(bench.child_pids()) <= children_before, "DataLoader workers were left running"

    again = bench.main([f"--data_root={image_root}", f"--cache_dir={tmp_path / 'cache'}", "--num_workers=0",
                        *TINY])
    assert again["sizes"]["32"]["default"]["cache_build_train_s"] == 0.0  # the cache was reused


def test_bench_without_data_generates_a_demo_set_and_measures_only_the_peaks_used(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "REAL_DATA", str(tmp_path / "absent"))
    measured = []
    machine_peak = bench.machine_peak
    monkeypatch.setattr(bench, "machine_peak", lambda device, dtype, n: measured.append(dtype) or
                        machine_peak(device, dtype, n))
    results = bench.main(["--max_images=24", "--num_workers=0", "--sizes=32,24", "--precision=fp32", *TINY[1:]])
    assert measured == [torch.float32] and set(results["machine"]["matmul_peak_tflops"]) == {"fp32"}
    assert {results["sizes"]["32"][path][phase]["precision"] for path in ("plain", "default")
            for phase in ("train", "eval")} == {"fp32"}
    assert results["data"]["demo"] and not os.path.exists(results["data"]["root"])
    assert results["headline_size"] == 32 and set(results["sizes"]) == {"32", "24"}
    assert os.listdir(tmp_path) == []


def test_flops_are_counted_not_assumed():
    train_flops, eval_flops = bench.count_flops(build_model("resnet18", 6), 150)
    assert 5.0e9 < train_flops < 5.3e9  # ResNet-18 training at 150x150 is about 5.14 GFLOP per image
    assert 2.5 < train_flops / eval_flops <= 3  # backward costs about twice the forward


@pytest.mark.parametrize("args, message", [
    (["--sizes=abc"], "--sizes"),
    (["--sizes=8"], "--sizes"),
    (["--train_steps=0"], r"--train_steps=0 is outside its range \[>= 1\]"),
])
def test_bad_settings_are_refused(args, message):
    with pytest.raises(cli.UserError, match=message):
        bench.main(args)


def test_too_few_images_for_a_batch(image_root):
    with pytest.raises(cli.UserError, match="fewer than one batch"):
        bench.main([f"--data_root={image_root}", "--max_images=4", *TINY])
