"""train.py end to end on a tiny generated set: files, checkpoints, resume, torchrun, pretrained weights.

Every run is one or two epochs of ResNet-18 at 32 px on 36 images (17 train, 9 validation,
10 test: odd sizes, so the distributed padding and a last training batch of one image matter).
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import urllib.error

import pytest
import torch
import torchvision
from PIL import Image

from scenes import training
from scenes import cli
from scenes import loaders
import train
from scenes.checkpoints import load_checkpoint, load_weights, model_from_checkpoint, save_checkpoint
from scenes.cli import UserError
from conftest import CPU, ROOT, train_args
from scenes.splitting import make_splits
from scenes.demo import make_demo_dataset
from scenes.evaluation import evaluate, recalibrate_batch_norms
from scenes.runtime import Runtime
from scenes.models import build_model
from scenes import plan
from scenes.loaders import CachedLoader

RUN_FILES = ("last.pth", "best.pth", "metrics.csv", "config.json", "curves.png", "test_loss.png")
METRIC_COLUMNS = [f"{split}_{metric}" for split in ("train", "val", "test")
                  for metric in ("loss", "accuracy", "mean_class_accuracy", "map")] + ["lr", "seconds"]
RESNET18_FILE = os.path.basename(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(image_root, splits_dir) shared by the module: runs resume only with the same split CSVs."""
    base = tmp_path_factory.mktemp("data")
    root = make_demo_dataset(str(base / "images"), per_class=6, size=32)
    make_splits(root, str(base / "splits"), val_size=9, test_size=10, seed=0, log=lambda *a: None)
    return root, str(base / "splits")


def stop_at_epoch(monkeypatch, stop_epoch):
    """Make train.py stop as if killed when ``stop_epoch`` starts (after the previous epoch's save)."""
    original = training.train_one_epoch

    def interrupted(run, epoch):
        if epoch == stop_epoch:
            raise KeyboardInterrupt
        return original(run, epoch)

    monkeypatch.setattr(training, "train_one_epoch", interrupted)


@pytest.fixture(scope="module")
def interrupted_run(data, tmp_path_factory):
    """A run of --epochs=2 killed when epoch 2 starts: its folder holds epoch 1. Copy before changing it."""
    base = tmp_path_factory.mktemp("interrupted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        stop_at_epoch(monkeypatch, 2)
        with pytest.raises(KeyboardInterrupt):
            train.main(train_args(data[1], base, "--run=r", "--epochs=2"))
    return base / "checkpoints" / "r"


def copy_run(run_dir, tmp_path, name="r"):
    target = tmp_path / "checkpoints" / name
    shutil.copytree(run_dir, target)
    return target


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "train_images_per_second")} for row in rows]


def assert_same_tensors(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


# ---------------------------------------------------------------------------------------------
# What a run writes

def test_a_run_writes_every_file_and_a_self_describing_checkpoint(interrupted_run, data):
    root, splits_dir = data
    for name in RUN_FILES:
        assert (interrupted_run / name).is_file(), name
    for name in ("curves.png", "test_loss.png"):
        with Image.open(interrupted_run / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    rows = read_metrics(interrupted_run)
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert set(METRIC_COLUMNS) <= set(rows[0])
    for column in METRIC_COLUMNS:
        assert float(rows[0][column]) >= 0, column
    checkpoint = torch.load(interrupted_run / "last.pth", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "best_metric", "history", "config"} <= set(checkpoint)
    assert checkpoint["epoch"] == 1 and len(checkpoint["history"]) == 1
    config = checkpoint["config"]
    assert config["arch"] == "resnet18" and config["image_size"] == 32 and config["seed"] == 0
    assert config["class_names"] == sorted(os.listdir(root))
    assert config["mean"] == [0.485, 0.456, 0.406] and config["std"] == [0.229, 0.224, 0.225]
    for split in ("train", "validation", "test"):
        assert config[f"{split}_csv"] == os.path.join(splits_dir, f"{split}.csv")
    assert os.path.samefile(config["data_root"], root)
    with open(interrupted_run / "config.json", encoding="utf-8") as f:
        assert json.load(f) == config
    assert load_checkpoint(str(interrupted_run / "best.pth"))["epoch"] == 1
    model = model_from_checkpoint(checkpoint, str(interrupted_run / "last.pth"))
    assert model.fc.out_features == 6
    assert not (interrupted_run / ".lock").exists()  # the lock goes even when the run is killed


# ---------------------------------------------------------------------------------------------
# Resume, finished runs, restart, refused changes

def test_resume_gives_the_uninterrupted_result(interrupted_run, data, tmp_path, monkeypatch, capsys):
    _, splits_dir = data
    resumed = copy_run(interrupted_run, tmp_path, "r")
    args = train_args(splits_dir, tmp_path, "--epochs=2")
    train.main(args + ["--run=r"])  # the same command again
    assert "resuming run r" in capsys.readouterr().out
    train.main(args + ["--run=straight"])
    straight = tmp_path / "checkpoints" / "straight"
    a = torch.load(straight / "last.pth", weights_only=True)
    b = torch.load(resumed / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert_same_tensors(a["model"], b["model"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for key in a["optimizer"]["state"]:
        assert_same_tensors(a["optimizer"]["state"][key], b["optimizer"]["state"][key])
    assert a["scheduler"] == b["scheduler"]
    assert len(read_metrics(resumed)) == 2
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(straight))

    # a finished run, run again unchanged, says so and touches nothing
    before = {name: (resumed / name).read_bytes() for name in RUN_FILES}
    train.main(args + ["--run=r"])
    assert "already finished" in capsys.readouterr().out
    assert {name: (resumed / name).read_bytes() for name in RUN_FILES} == before

    # --restart=true starts over: killed again at epoch 2, it holds a fresh epoch 1
    stop_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train.main(args + ["--run=straight", "--restart=true"])
    restarted = torch.load(straight / "last.pth", weights_only=True)
    assert restarted["epoch"] == 1 and len(read_metrics(straight)) == 1
    assert_same_tensors(restarted["model"], torch.load(interrupted_run / "last.pth", weights_only=True)["model"])


def test_resume_with_a_moving_average_and_mixing_gives_the_uninterrupted_result(data, tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "MIX_MIN_EPOCHS", 2)  # epoch 2, after the resume, mixes
    args = train_args(data[1], tmp_path, "--epochs=2", "--ema_epochs=2", "--mix_prob=0.7")
    with monkeypatch.context() as patched:
        stop_at_epoch(patched, 2)
        with pytest.raises(KeyboardInterrupt):
            train.main(args + ["--run=r"])
    train.main(args + ["--run=r"])
    train.main(args + ["--run=straight"])
    a = torch.load(tmp_path / "checkpoints" / "straight" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "checkpoints" / "r" / "last.pth", weights_only=True)
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["train_model"], b["train_model"])
    assert without_timing(a["history"]) == without_timing(b["history"])
    train.main(args + ["--run=unmixed", "--mix_prob=0"])  # and epoch 2 did mix
    unmixed = torch.load(tmp_path / "checkpoints" / "unmixed" / "last.pth", weights_only=True)
    assert not torch.equal(a["train_model"]["fc.weight"], unmixed["train_model"]["fc.weight"])
    # what is saved as the model (and evaluated) is the average, not the trained weights
    assert not torch.equal(a["model"]["fc.weight"], a["train_model"]["fc.weight"])
    model = model_from_checkpoint(a, "last.pth")  # evaluation and feature maps load the average
    assert torch.equal(model.state_dict()["fc.weight"], a["model"]["fc.weight"])


def test_a_checkpoint_of_the_format_before_content_digests_is_never_resumed(interrupted_run, data, tmp_path):
    run_dir = copy_run(interrupted_run, tmp_path)
    checkpoint = torch.load(run_dir / "last.pth", weights_only=True)
    del checkpoint["format"], checkpoint["trained_on"]  # as saved before runs knew their images' content
    torch.save(checkpoint, run_dir / "last.pth")
    before = (run_dir / "last.pth").read_bytes()
    args = train_args(data[1], tmp_path, "--run=r", "--epochs=2")
    with pytest.raises(UserError, match=r"older version .* not resumed; pass --restart=true"):
        train.main(args)
    assert (run_dir / "last.pth").read_bytes() == before
    train.main(args + ["--restart=true"])
    assert torch.load(run_dir / "last.pth", weights_only=True)["format"] == 2


def test_the_moving_average_moves_by_one_minus_decay():
    average, model = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        average.weight.fill_(1.0)
        model.weight.fill_(3.0)
        model.running_mean.fill_(2.0)
    model.num_batches_tracked += 5
    training.ema_updater(average, model, 0.75)()
    assert torch.allclose(average.weight, torch.full((3,), 1.5))  # 0.75 * 1 + 0.25 * 3
    assert torch.allclose(average.running_mean, torch.full((3,), 0.5))
    assert average.num_batches_tracked.item() == 5  # counters are copied, not averaged
    assert training.ema_decay({"ema_epochs": 2.0}, 50) == pytest.approx(0.99)


def test_precise_bn_averages_the_statistics_of_the_first_images_and_trains_nothing():
    norm = torch.nn.BatchNorm2d(1)
    model = torch.nn.Sequential(norm).eval()
    norm.running_mean.fill_(50.0)
    batches = [[0.0, 2.0], [4.0, 8.0], [100.0, 300.0]]
    loader = [(torch.tensor(b).view(2, 1, 1, 1), torch.zeros(2)) for b in batches]
    recalibrate_batch_norms(model, loader, 4, Runtime(torch.device("cpu"), bf16=False))
    assert norm.running_mean.item() == pytest.approx(3.5)  # (1 + 6) / 2: the third batch is not read
    assert norm.running_var.item() == pytest.approx(5.0)  # unbiased variances 2 and 8
    assert norm.momentum == 0.1 and not model.training  # as they were
    assert torch.equal(norm.weight, torch.ones(1)) and torch.equal(norm.bias, torch.zeros(1))


def test_precise_bn_gives_evaluation_the_statistics_of_clean_training_images_and_changes_no_weight(data, tmp_path):
    args = train_args(data[1], tmp_path, "--precision=fp32")
    train.main(args + ["--run=kept", "--precise_bn_images=0"])
    train.main(args + ["--run=precise", "--precise_bn_images=16"])
    kept, precise = (torch.load(tmp_path / "checkpoints" / run / "last.pth", weights_only=True)["model"]
                     for run in ("kept", "precise"))
    for name in kept:
        if "running" in name:
            assert not torch.allclose(kept[name], precise[name]), name
        elif "num_batches_tracked" not in name:
            assert torch.equal(kept[name], precise[name]), name  # training is the same
    # the first BatchNorm's mean: that of the stem's output on the 16 unaugmented training images at 40 px
    config = load_checkpoint(str(tmp_path / "checkpoints" / "precise" / "last.pth"))["config"]
    loader = training.split_loader(config, "train", Runtime(torch.device("cpu"), bf16=False), log=lambda *a: None, clean=True)
    loader.set_epoch(1)
    [(images, _)] = list(loader)  # one batch of 16: the 17th image is dropped, as in training
    assert images.shape == (16, 3, 40, 40)
    model = build_model("resnet18", len(config["class_names"]))
    model.load_state_dict(precise)
    with torch.no_grad():
        stem = model.conv1(images)
    assert torch.allclose(precise["bn1.running_mean"], stem.mean(dim=(0, 2, 3)), atol=1e-5)


def mix_share(config, epoch, epochs):
    config = {"time_budget_min": 0.0, "epochs": epochs, "warmup_epochs": 0.0, **config}
    return plan.EpochPlan(config, 1, 0.0).mix_share(epoch)


def test_batches_are_mixed_from_the_second_epoch_to_mix_until_of_long_runs_only():
    config = {"mix_prob": 0.5, "mix_until": 1.0}
    assert mix_share(config, 2, plan.MIX_MIN_EPOCHS) == 0.5
    assert mix_share(config, 30, 100) == 0.5
    assert mix_share(config, 1, 100) == 0.0  # the warm-up epoch (a time budget has no plan yet)
    assert mix_share(config, 2, plan.MIX_MIN_EPOCHS - 1) == 0.0  # short runs scored lower with mixing
    assert mix_share({"mix_prob": 0.0, "mix_until": 1.0}, 5, 100) == 0.0
    assert mix_share(config, 100, 100) == 0.5
    until = {**config, "mix_until": 0.8}
    assert mix_share(until, 40, 50) == 0.5 and mix_share(until, 41, 50) == 0.0  # the last 10 unmixed


def test_batch_mixing_gives_soft_targets_of_two_images_at_most():
    torch.manual_seed(0)
    images, targets = torch.rand(8, 3, 16, 16), torch.arange(8) % 6
    mixer = training.batch_mixer(6)
    mixed, soft = mixer(images.clone(), targets, 1.0)
    assert soft.shape == (8, 6) and torch.allclose(soft.sum(1), torch.ones(8))
    assert ((soft > 0).sum(1) <= 2).all() and not torch.equal(mixed, images)
    assert mixed.is_contiguous(memory_format=torch.channels_last)
    same, hard = mixer(images, targets, 0.0)
    assert same is images and hard is targets


@pytest.mark.parametrize("change, message", [
    ("--lr=0.01", r"lr=0\.05 \(now 0\.01\)"),
    ("--arch=resnet34", r"arch='resnet18' \(now 'resnet34'\)"),
    ("--seed=1", r"seed=0 \(now 1\)"),
])
def test_resume_with_other_settings_is_refused(interrupted_run, data, tmp_path, change, message):
    run_dir = copy_run(interrupted_run, tmp_path)
    before = (run_dir / "last.pth").read_bytes()
    with pytest.raises(UserError, match=message) as error:
        train.main(train_args(data[1], tmp_path, "--run=r", "--epochs=2", change))
    assert "--restart=true" in str(error.value)
    assert (run_dir / "last.pth").read_bytes() == before
    assert not (run_dir / ".lock").exists()


# ---------------------------------------------------------------------------------------------
# Faults: non-finite loss, checkpoints of another architecture

def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(interrupted_run, data, tmp_path, monkeypatch):
    run_dir = copy_run(interrupted_run, tmp_path)
    before = {name: (run_dir / name).read_bytes() for name in ("last.pth", "best.pth", "metrics.csv")}
    original = training.train_one_epoch

    def diverging(run, epoch):
        for group in run.optimizer.param_groups:  # one step with an infinite learning rate wrecks the weights
            group["lr"] = float("inf")
        return original(run, epoch)

    monkeypatch.setattr(training, "train_one_epoch", diverging)
    with pytest.raises(UserError, match="last good checkpoint is kept"):
        train.main(train_args(data[1], tmp_path, "--run=r", "--epochs=2"))
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert not (run_dir / ".lock").exists()


def test_weights_of_another_architecture_are_refused_clearly(interrupted_run):
    resnet34 = torchvision.models.resnet34(num_classes=6).state_dict()
    with pytest.raises(UserError, match=r"other\.pth do not fit a resnet18 with 6 classes"):
        load_weights(build_model("resnet18", 6), resnet34, "other.pth", "resnet18")
    checkpoint = torch.load(interrupted_run / "last.pth", weights_only=True)
    with pytest.raises(UserError, match="another architecture or class list"):
        model_from_checkpoint({**checkpoint, "model": resnet34}, "other.pth")
    with pytest.raises(UserError, match="do not fit a resnet18 with 5 classes"):
        model_from_checkpoint({**checkpoint, "config": {**checkpoint["config"],
                                                        "class_names": checkpoint["config"]["class_names"][:5]}},
                              "fewer.pth")


# ---------------------------------------------------------------------------------------------
# Pretrained weights: torchvision's cache, a local file, neither

def no_download(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def random_resnet18_file(path, seed):
    torch.manual_seed(seed)
    state = torchvision.models.resnet18().state_dict()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    return state


def assert_started_from(run_dir, reference):
    """With lr 0 every weight but the new final layer (and BatchNorm's running statistics) is the file's."""
    model = torch.load(run_dir / "last.pth", weights_only=True)["model"]
    for name, value in reference.items():
        if name.startswith("fc."):
            assert model[name].shape[0] == 6, name
        elif not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(model[name], value), name
    assert not torch.equal(model["bn1.running_mean"], reference["bn1.running_mean"])  # it did train


def test_pretrained_preset_uses_the_file_in_the_torch_cache(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    no_download(monkeypatch)
    reference = random_resnet18_file(str(tmp_path / "torch" / "hub" / "checkpoints" / RESNET18_FILE), seed=5)
    train.main(train_args(data[1], tmp_path, "--preset=pretrained", "--epochs=1", "--lr=0"))
    assert_started_from(tmp_path / "checkpoints" / "pretrained", reference)
    assert torch.load(tmp_path / "checkpoints" / "pretrained" / "last.pth", weights_only=True)["config"]["pretrained"]


def test_weights_file_setting(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    no_download(monkeypatch)
    path = str(tmp_path / "my-weights.pth")
    reference = random_resnet18_file(path, seed=6)
    train.main(train_args(data[1], tmp_path, "--run=w", "--pretrained=true", f"--weights_file={path}", "--lr=0"))
    assert_started_from(tmp_path / "checkpoints" / "w", reference)
    with pytest.raises(UserError, match="does not exist"):
        build_model("resnet18", 6, pretrained=True, weights_file=str(tmp_path / "absent.pth"))
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(UserError, match="resnet34.pth"):
        build_model("resnet18", 6, pretrained=True, weights_file=str(tmp_path / "resnet34.pth"))


def test_no_pretrained_weights_and_no_network_says_where_to_put_them(data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    no_download(monkeypatch)
    expected = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints", RESNET18_FILE)
    with pytest.raises(UserError) as error:
        train.main(train_args(data[1], tmp_path, "--preset=pretrained"))
    message = str(error.value)
    assert expected in message and "--weights_file" in message
    assert not (tmp_path / "checkpoints" / "pretrained" / "last.pth").exists()


# ---------------------------------------------------------------------------------------------
# Two processes with torchrun (gloo on the CPU)

def test_torchrun_two_processes_match_a_single_process_evaluation(data, tmp_path):
    _, splits_dir = data
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # no --run=NAME here: torchrun's own parser takes it for its --run-path and stops (see the report)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               *train_args(splits_dir, tmp_path, "--precision=fp32")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("run default: resnet18 on cpu (fp32, 2 processes)") == 1  # rank 0 logs alone
    run_dir = tmp_path / "checkpoints" / "default"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]
    (row,) = read_metrics(run_dir)

    checkpoint = load_checkpoint(str(run_dir / "last.pth"))
    model = model_from_checkpoint(checkpoint, str(run_dir / "last.pth"))
    rt = Runtime(torch.device("cpu"), bf16=False)
    for short, split in (("val", "validation"), ("test", "test")):
        loader = training.split_loader(checkpoint["config"], split, CPU, log=lambda *a: None)
        assert isinstance(loader, CachedLoader) and loader.world == 1
        metrics, logits, targets = evaluate(model, loader, rt, checkpoint["config"]["class_names"])
        assert len(targets) == {"val": 9, "test": 10}[short]
        assert float(row[f"{short}_loss"]) == pytest.approx(metrics["loss"], rel=1e-6, abs=1e-6), short
        for name in ("accuracy", "mean_class_accuracy", "map"):
            assert float(row[f"{short}_{name}"]) == round(metrics[name], 6), (short, name)


# ---------------------------------------------------------------------------------------------
# Time budget

def test_a_time_budget_plans_the_epochs_that_fit(data, tmp_path):
    """A budget shorter than one epoch stops after the first; the plan is saved for a resume."""
    train.main(train_args(data[1], tmp_path, "--run=b", "--epochs=5", "--time_budget_min=0.0001"))
    run_dir = tmp_path / "checkpoints" / "b"
    assert len(read_metrics(run_dir)) == 1
    assert load_checkpoint(str(run_dir / "last.pth"))["planned_epochs"] == 1


def test_a_time_budget_is_planned_again_after_every_epoch_and_counts_the_epochs_before_a_resume(
        data, tmp_path, monkeypatch, capsys):
    calls = []  # (seconds spent, epochs done) at each planning
    monkeypatch.setattr(plan, "planned_epochs",
                        lambda config, spent, done, recent, rt, *ramp: calls.append((spent, done)) or 3)
    original = training.train_one_epoch
    stop_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train.main(train_args(data[1], tmp_path, "--run=b", "--time_budget_min=60"))
    last = str(tmp_path / "checkpoints" / "b" / "last.pth")
    checkpoint = load_checkpoint(last)
    assert checkpoint["planned_epochs"] == 3
    checkpoint["history"][0]["seconds"] = 1000.0  # as if epoch 1 had taken 1000 s
    save_checkpoint(checkpoint, last)
    monkeypatch.setattr(training, "train_one_epoch", original)
    train.main(train_args(data[1], tmp_path, "--run=b", "--time_budget_min=60"))
    # planned after its first steps and after each epoch but the last (a finished decay is not extended)
    assert [done for _, done in calls] == [0, 1, 2]
    assert calls[0][0] < calls[1][0] < 1000 <= calls[2][0]
    assert len(read_metrics(tmp_path / "checkpoints" / "b")) == 3
    capsys.readouterr()
    train.main(train_args(data[1], tmp_path, "--run=b", "--time_budget_min=60"))  # finished: says how to extend it
    assert "pass --time_budget_min=0 and a larger --epochs to extend it" in capsys.readouterr().out
    train.main(train_args(data[1], tmp_path, "--run=b", "--time_budget_min=0", "--epochs=4"))
    assert len(read_metrics(tmp_path / "checkpoints" / "b")) == 4


def test_planned_epochs_divide_the_remaining_budget_by_the_recent_epochs_time():
    rt = Runtime(torch.device("cpu"), bf16=False)
    config = {"time_budget_min": 5.0, "image_size": 112, "progressive_min_size": 0}
    # 45 s spent, one epoch done: it trained 25 s and evaluated 5 s
    assert plan.planned_epochs(config, 45.0, 1, [(112, 25.0, 5.0)], rt) == 9  # 1 + (300 - 45) // 30
    assert plan.planned_epochs({**config, "time_budget_min": 0.5}, 45.0, 1, [(112, 25.0, 5.0)], rt) == 1  # never fewer
    # later in the run, epochs that slowed down to 40 s + 5 s: 300 - 210 s leave room for 2 more after epoch 5
    assert plan.planned_epochs(config, 210.0, 5, [(112, 35.0, 5.0), (112, 40.0, 5.0), (112, 45.0, 5.0)], rt) == 7
    assert plan.planned_epochs(config, 299.0, 7, [(112, 40.0, 5.0)], rt) == 7  # no time left: stop where it is


def test_a_short_time_budget_trains_the_default_recipe_on_smaller_images_unless_told_otherwise(data):
    defaults = cli.defaults(train.__file__)

    def sizes(**overrides):
        config = training.resolve_config(defaults, {"splits_dir": data[1], **overrides})
        return config["image_size"], config["eval_image_size"], config["progressive_min_size"]
    growing = (defaults["image_size"], defaults["eval_image_size"], defaults["progressive_min_size"])
    assert growing[2] > 0 and sizes() == growing == sizes(time_budget_min=training.SHORT_BUDGET_MIN)
    assert sizes(time_budget_min=10.0) == (112, 144, 0)
    assert sizes(time_budget_min=10.0, image_size=96) == (96, 144, 0)  # what the command line says stays
    assert sizes(time_budget_min=10.0, preset="sgd_lr0.01") == (80, 0, 0)  # the report's presets keep theirs


def test_progressive_crops_grow_in_steps_of_16_to_the_image_size_at_three_quarters_of_the_epochs():
    config = {"image_size": 128, "progressive_min_size": 64}
    sizes = [plan.crop_size(epoch, config, 20) for epoch in range(1, 21)]
    assert sizes[:2] == [64, 64] and sizes[12:] == [112] + [128] * 7  # 128 (rounded) by epoch 15 of 20
    assert sizes == sorted(sizes) and all(size % 16 == 0 for size in sizes) and len(set(sizes)) == 5
    assert {plan.crop_size(e, {**config, "progressive_min_size": 0}, 20) for e in range(1, 21)} == {128}
    assert plan.crop_size(1, {**config, "progressive_min_size": 160}, 20) == 128  # not below: off


def test_a_progressive_run_trains_on_growing_crops(data, tmp_path, capsys, monkeypatch):
    seen = []  # the sizes of the training batches
    random_resized_crop_flip = loaders.random_resized_crop_flip
    monkeypatch.setattr(loaders, "random_resized_crop_flip",
                        lambda *args: seen.append(args[-1]) or random_resized_crop_flip(*args))
    train.main(train_args(data[1], tmp_path, "--run=p", "--epochs=4", "--progressive_min_size=16"))
    logged = [line.split()[2] for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert logged == ["16px", "32px", "32px", "32px"]  # 4 epochs ramp over 3: 16, 24 (rounds to 32), 32, 32
    steps = len(seen) // 4
    assert seen == [16] * steps + [32] * (3 * steps)
    assert len(read_metrics(tmp_path / "checkpoints" / "p")) == 4


def test_planned_epochs_count_the_larger_crops_of_later_epochs():
    rt = Runtime(torch.device("cpu"), bf16=False)
    config = {"time_budget_min": 5.0, "image_size": 32, "progressive_min_size": 16}
    # 255 s left after the first epoch, which trained 10 s at 16 px, so 40 s at 32 px.
    # 8 epochs ramp over 6: 16, 16, 16, 32, 32, 32, 32, 32 px; epochs 2-8 cost 2 * 10 + 5 * 40 = 220 s.
    # 9 epochs ramp over 7: 16, 16, 16, 32, ... (24 px rounds to 32): 2 * 10 + 6 * 40 = 260 s, too long.
    assert plan.planned_epochs(config, 45.0, 1, [(16, 10.0, 0.0)], rt) == 8
    # After epoch 5, 135 s are left. Priced by the last epoch (32 px in 30 s, not 40), 4 more fit; priced by
    # the mean of the last two, scaled to 32 px ((40 + 30) / 2 = 35 s), 3 more.
    assert plan.planned_epochs(config, 165.0, 5, [(32, 30.0, 0.0)], rt) == 9
    assert plan.planned_epochs(config, 165.0, 5, [(16, 10.0, 0.0), (32, 30.0, 0.0)], rt) == 8


def test_main_py_estimates_a_real_run_from_measured_steps(data, tmp_path):
    from scenes.estimate import estimate_run
    config = {**cli.script_defaults("train.py"), "splits_dir": data[1]}
    overrides = {"splits_dir": data[1], "image_size": 32, "eval_image_size": 40, "batch_size": 8,
                 "progressive_min_size": 0, "precise_bn_images": 0, "epochs": 3, "device": "cpu"}
    said = []
    seconds = estimate_run(config, overrides, log=said.append)
    assert seconds > 0 and "min per epoch on this machine" in said[0] and ", 3 epochs" in said[0]
    assert "--time_budget_min=MINUTES" in said[-1]
    budget = estimate_run(config, {**overrides, "epochs": 10**6, "time_budget_min": 0.5}, log=said.append)
    assert budget == 30 and "ended by the 0.5-minute budget" in said[-2]
