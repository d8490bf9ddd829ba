"""Feature maps: hooks, the non-positive statistics, the files, and the errors."""
import copy
import os
import re

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import feature_map
import train
from scenes import training
from scenes.checkpoints import load_checkpoint, model_from_checkpoint
from scenes.cli import UserError
from conftest import CPU, train_args
from scenes.splitting import make_splits
from scenes.demo import make_demo_dataset
from scenes.runtime import prepare_for_steps, prepare_model
from scenes.features import NonPositiveStats, capture_outputs, check_module_names, stats_table


def all_forward_hooks(model):
    return [hook for module in model.modules() for hook in module._forward_hooks.values()]


def stats_of(model, names, batches):
    """Run the batches through the model with hooks; returns the NonPositiveStats."""
    stats = NonPositiveStats()
    with capture_outputs(model, names) as outputs, torch.inference_mode():
        for images in batches:
            outputs.clear()
            model(images)
            stats.update(outputs, len(images))
    return stats


def fixed_model():
    """conv(w=1, b=-1) -> ReLU -> conv(w=-1, b=1.5), 1x1 kernels on one channel."""
    first, second = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        first.weight.fill_(1.0), first.bias.fill_(-1.0)
        second.weight.fill_(-1.0), second.bias.fill_(1.5)
    return nn.Sequential(first, nn.ReLU(), second).eval()


def test_percentage_equals_hand_count():
    images = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]], [[[5.0, 5.0], [5.0, 0.0]]]])
    # conv 1: [-1, 0, 1, 2] -> 2 of 4 <= 0 (50 %); [4, 4, 4, -1] -> 1 of 4 (25 %): mean 37.5
    # ReLU:   [0, 0, 1, 2]  -> 50 %;               [4, 4, 4, 0]  -> 25 %:          mean 37.5
    # conv 2: [1.5, 1.5, 0.5, -0.5] -> 25 %;       [-2.5, -2.5, -2.5, 1.5] -> 75 %: mean 50
    stats = stats_of(fixed_model(), ["2", "0", "1"], [images])
    rows = stats.rows(["2", "0", "1"])
    assert [row["module"] for row in rows] == ["0", "1", "2"]  # early to late, whatever order given
    assert [row["percent"] for row in rows] == pytest.approx([37.5, 37.5, 50.0])
    assert [row["calls"] for row in rows] == [1, 1, 1]
    assert stats.images == 2


def test_running_mean_over_uneven_batches_equals_all_at_once():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(10, 3, 4, 5, generator=generator).round()  # many exact zeros as well
    model = nn.Sequential(nn.Identity())
    expected = (images <= 0).double().flatten(1).mean(1).mean().item() * 100
    for sizes in ([10], [3, 5, 2], [1] * 10, [7, 3]):
        batches = torch.split(images, sizes)
        assert stats_of(model, ["0"], batches).rows(["0"])[0]["percent"] == pytest.approx(expected, abs=1e-9), sizes


def test_hooks_are_removed_after_the_block_and_after_an_exception():
    model = torchvision.models.resnet18(num_classes=6).eval()
    names = ["layer1.0.conv1", "layer4.1.conv2", "layer1.0.relu"]
    with capture_outputs(model, names) as outputs:
        assert len(all_forward_hooks(model)) == 3
        with torch.inference_mode():
            model(torch.randn(1, 3, 32, 32))
        assert set(outputs) == set(names)
    assert all_forward_hooks(model) == []
    with pytest.raises(RuntimeError, match="inside"):
        with capture_outputs(model, names):
            raise RuntimeError("failure inside the block")
    assert all_forward_hooks(model) == []
    with pytest.raises(UserError):
        with capture_outputs(model, ["layer1.0.conv1", "no.such.module"]):
            pass
    assert all_forward_hooks(model) == []


def test_feature_maps_see_torchvision_model_as_it_is_and_the_steps_compute_the_same():
    """Feature maps (and Grad-CAM, export) get torchvision's model unchanged; the training and
    evaluation steps run the stem's ReLU after its max-pool, with the same names and logits."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6).eval()
    plain, fast = prepare_model(copy.deepcopy(model), CPU), prepare_for_steps(copy.deepcopy(model), CPU)
    assert type(plain) is torchvision.models.ResNet and type(fast) is not torchvision.models.ResNet
    assert [name for name, _ in fast.named_modules()] == [name for name, _ in model.named_modules()]
    names = ["relu", "maxpool", "layer1.0.conv1", "layer4.1.conv2", "fc"]
    images = torch.randn(2, 3, 32, 32)
    captured = []
    for candidate in (model, plain, fast):
        with capture_outputs(candidate, names) as outputs, torch.inference_mode():
            candidate(images)
        captured.append({name: calls[0].clone() for name, calls in outputs.items()})
    built, seen, moved = captured
    for name in names:
        torch.testing.assert_close(seen[name], built[name])  # every module as torchvision computes it
    for name in names[2:]:
        torch.testing.assert_close(moved[name], built[name])
    torch.testing.assert_close(moved["relu"], built["maxpool"])  # relu(maxpool(x)) == maxpool(relu(x))


def test_basic_block_relu_counts_both_calls():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6).eval()
    for module in model.modules():  # BN statistics away from the identity so the signs are not trivial
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(3, 3, 32, 32)
    names = ["layer1.0.relu", "layer1.0.bn1", "layer1.0.bn2", "layer1.0"]
    stats = stats_of(model, names, [images])
    rows = {row["module"]: row for row in stats.rows(names)}
    assert rows["layer1.0.relu"]["calls"] == 2
    assert [rows[name]["calls"] for name in ("layer1.0.bn1", "layer1.0.bn2", "layer1.0")] == [1, 1, 1]
    # ReLU(x) <= 0 exactly where x <= 0: call 1 follows bn1, call 2 is the block's output.
    first, second = rows["layer1.0.relu"]["per_call"]
    assert first == pytest.approx(rows["layer1.0.bn1"]["percent"])
    assert second == pytest.approx(rows["layer1.0"]["percent"])
    assert rows["layer1.0.relu"]["percent"] == pytest.approx((first + second) / 2)  # equal sizes per call
    assert 0 < second < first < 100  # the residual sum leaves fewer values <= 0 here; the calls differ

    # bn1 and bn2 are followed by in-place operations; what was recorded is still their own output.
    block = model.layer1[0]
    with capture_outputs(model, ["layer1.0.bn1", "layer1.0.bn2"]) as outputs, torch.inference_mode():
        model(images)
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        bn1 = block.bn1(block.conv1(x))
        bn2 = block.bn2(block.conv2(torch.relu(bn1)))
    assert torch.allclose(outputs["layer1.0.bn1"][0], bn1) and (bn1 < 0).any()
    assert torch.allclose(outputs["layer1.0.bn2"][0], bn2) and (bn2 < 0).any()

    table = stats_table(stats.rows(names), "header")
    assert re.search(r"\| layer1\.0\.relu +\| +[\d.]+ \| +2 \|", table)
    assert "layer1.0.relu runs 2 times per forward pass" in table


def test_unknown_module_is_a_clear_error():
    model = torchvision.models.resnet18(num_classes=6)
    with pytest.raises(UserError) as error:
        check_module_names(model, ["layer1.0.conv1", "layer1.0.conv3"])
    message = str(error.value)
    assert "'layer1.0.conv3'" in message and "did you mean" in message
    assert "layer1.0.conv1" in message and "layer4.1.conv2" in message and "fc" in message  # valid names listed
    assert "\n" not in message


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch 32px checkpoint on a small generated set; returns (tmp, splits_dir, best.pth)."""
    tmp = tmp_path_factory.mktemp("feature_map")
    root = make_demo_dataset(str(tmp / "images"), per_class=6, size=40)
    splits_dir = str(tmp / "splits")
    make_splits(root, splits_dir, val_size=0.34, test_size=0.5, seed=0, log=lambda *a: None)
    train.main(train_args(splits_dir, tmp, "--run=fm", "--eval_batch_size=64"))
    return tmp, splits_dir, str(tmp / "checkpoints" / "fm" / "best.pth")


def test_files_and_statistics_of_a_checkpoint(trained, tmp_path):
    tmp, splits_dir, best = trained
    rows = feature_map.main([f"--checkpoint={best}", f"--splits_dir={splits_dir}", f"--out_dir={tmp_path}",
                             f"--cache_dir={tmp / 'cache'}", "--device=cpu", "--num_images=3", "--channels=4",
                             "--stat_images=7", "--batch_size=2",
                             "--modules=layer4.1.conv2,layer1.0.relu,layer1.0.conv1"])
    per_image = ["layer1.0.conv1", "layer1.0.relu_call1", "layer1.0.relu_call2", "layer4.1.conv2"]
    assert sorted(os.listdir(tmp_path / "feature_maps")) == sorted(
        f"img{i:03d}_{name}.png" for i in range(3) for name in per_image)
    assert sorted(os.listdir(tmp_path / "feature_maps_visualization")) == ["img000.png", "img001.png", "img002.png"]
    # images at the checkpoint's evaluation size (40 px; it trained on 32 px crops), so layer1.0.conv1
    # has 64 channels of 10x10, enlarged 4x to 40x40 tiles, 8 per row, 1 px between
    with Image.open(tmp_path / "feature_maps" / "img002_layer1.0.conv1.png") as image:
        assert image.size == (8 * 41 - 1, 8 * 41 - 1)

    text = (tmp_path / "non_positive_stats.txt").read_text()
    assert "over the first 7 test images" in text
    table = [line.split("|")[1:4] for line in text.splitlines() if re.match(r"\| layer", line)]
    assert [cells[0].strip() for cells in table] == ["layer1.0.conv1", "layer1.0.relu", "layer4.1.conv2"]
    assert [int(cells[2]) for cells in table] == [1, 2, 1]

    # The same 7 images in one batch, through the checkpoint's own evaluation transforms.
    checkpoint = load_checkpoint(best)
    model = model_from_checkpoint(checkpoint, best)
    config = dict(checkpoint["config"], eval_batch_size=7, cache_dir=str(tmp / "cache"))
    images, _ = next(iter(training.split_loader(config, "test", CPU, log=lambda *a: None)))
    names = ["layer1.0.conv1", "layer1.0.relu", "layer4.1.conv2"]
    expected = stats_of(model, names, [images]).rows(names)
    assert [row["percent"] for row in rows] == pytest.approx([row["percent"] for row in expected], abs=0.01)
    assert [float(cells[1]) for cells in table] == pytest.approx([row["percent"] for row in expected], abs=0.006)


def test_pretrained_model_from_a_weights_file(trained, tmp_path):
    tmp, splits_dir, best = trained
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    common = [f"--splits_dir={splits_dir}", f"--out_dir={tmp_path / 'out'}", f"--cache_dir={tmp / 'cache'}",
              "--device=cpu", "--num_images=1", "--stat_images=2", "--image_size=32"]
    feature_map.main(["--checkpoint=pretrained", f"--weights_file={weights}", "--modules=layer1.0.conv1", *common])
    assert os.listdir(tmp_path / "out" / "feature_maps") == ["img000_layer1.0.conv1.png"]
    text = (tmp_path / "out" / "non_positive_stats.txt").read_text()
    assert "torchvision resnet18 with ImageNet weights (32 px)" in text

    with pytest.raises(UserError, match="only applies to --checkpoint=pretrained"):
        feature_map.main([f"--checkpoint={best}", *common])
    with pytest.raises(UserError, match="no module 'layer9'.*valid names"):
        feature_map.main([f"--checkpoint={best}", "--modules=layer1.0.conv1,layer9", *common[:-1]])
