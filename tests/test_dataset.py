"""NatureTypesDataset.py: the Dataset, the transforms and the cached loader, on generated folders."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scenes import training
from scenes.cli import UserError
from conftest import CPU, ROOT, train_args
from scenes.splitting import make_splits
from scenes.splits import write_split_csv as write_csv
from NatureTypesDataset import NatureTypesDataset, build_transforms
from scenes.loaders import shard_indices
from scenes.splits import read_split_csv

CLASSES = ["gray", "rgb"]
IDENTITY = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])  # tensors show the pixel values / 255


def loader_config(root, csv_file, cache_dir, **changes):
    """The keys of a run's config that the transforms and loaders read."""
    return {"image_size": 24, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "augment": True,
            "crop_min_scale": 0.35, "seed": 0, "loader": "cached", "cache_dir": str(cache_dir),
            "data_root": str(root), "class_names": CLASSES, "batch_size": 4, "eval_batch_size": 3,
            "num_workers": 0, "validation_csv": str(csv_file), **changes}


@pytest.fixture
def odd_images(tmp_path):
    """One image per awkward mode, plus odd sizes, listed in one CSV: returns (root, csv_file, rows)."""
    root = tmp_path / "images"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8))
    Image.new("L", (150, 150), 128).save(root / "gray" / "l.png")
    palette = Image.new("P", (150, 150), 0)
    palette.putpalette([200, 10, 30] + [0] * 765)
    palette.save(root / "rgb" / "p.png")
    Image.new("RGBA", (150, 150), (10, 220, 40, 0)).save(root / "rgb" / "rgba.png")  # fully transparent
    Image.new("CMYK", (150, 150), (0, 255, 255, 0)).save(root / "rgb" / "cmyk.jpg", "JPEG")  # red in print
    rgb.resize((150, 97)).save(root / "rgb" / "wide.png")
    rgb.save(root / "rgb" / "square.jpg", quality=95)
    rgb.resize((61, 150)).convert("L").save(root / "gray" / "tall.bmp")
    rows = [("gray/l.png", 0), ("gray/tall.bmp", 0), ("rgb/cmyk.jpg", 1), ("rgb/p.png", 1), ("rgb/rgba.png", 1),
            ("rgb/square.jpg", 1), ("rgb/wide.png", 1)]
    csv_file = str(tmp_path / "validation.csv")
    write_csv(csv_file, rows, CLASSES)
    return str(root), csv_file, rows


def test_every_mode_and_size_becomes_a_3_channel_image_of_the_configured_size(odd_images, tmp_path):
    root, csv_file, rows = odd_images
    config = loader_config(root, csv_file, tmp_path / "cache", **IDENTITY)
    for training in (False, True):
        dataset = NatureTypesDataset(csv_file, root, build_transforms(config, train=training))
        assert len(dataset) == len(rows) and dataset.targets == [label for _, label in rows]
        for (rel, label), (image, target) in zip(rows, dataset):
            assert image.shape == (3, 24, 24) and image.dtype == torch.float32, rel
            assert target == label
    dataset = NatureTypesDataset(csv_file, root, build_transforms(config, train=False))
    evaluation = dict(zip([rel for rel, _ in rows], dataset))
    gray = evaluation["gray/l.png"][0]
    assert torch.allclose(gray, torch.full_like(gray, 128 / 255))  # one grey value in all three channels
    pixel = lambda rel: evaluation[rel][0][:, 12, 12] * 255  # noqa: E731
    assert torch.allclose(pixel("rgb/p.png"), torch.tensor([200.0, 10, 30]), atol=0.5)  # the palette's colour
    assert torch.allclose(pixel("rgb/rgba.png"), torch.tensor([255.0, 255, 255]), atol=0.5)  # over white
    red = pixel("rgb/cmyk.jpg")
    assert red[0] > 200 and red[1] < 60 and red[2] < 60  # cyan 0, magenta and yellow full: red


def test_normalisation_uses_the_config(odd_images, tmp_path):
    root, csv_file, _ = odd_images
    config = loader_config(root, csv_file, tmp_path / "cache", mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])
    image, _ = NatureTypesDataset(csv_file, root, build_transforms(config, train=False))[0]  # gray/l.png
    value = 128 / 255
    expected = torch.tensor([(value - 0.5) / 0.5, (value - 0.25) / 0.25, value / 2.0])
    assert torch.allclose(image[:, 5, 5], expected, atol=1e-6)


def collect(loader):
    batches = list(loader)
    return torch.cat([images for images, _ in batches]), torch.cat([targets for _, targets in batches])


@pytest.mark.parametrize("eval_image_size, size", [(0, 24), (32, 32)])
def test_cached_loader_gives_the_plain_evaluation_inputs(odd_images, tmp_path, eval_image_size, size):
    root, csv_file, rows = odd_images
    config = loader_config(root, csv_file, tmp_path / "cache", eval_image_size=eval_image_size)
    plain = training.split_loader({**config, "loader": "plain"}, "validation", CPU, log=lambda *a: None)
    cached = training.split_loader(config, "validation", CPU, log=lambda *a: None)
    plain_images, plain_targets = collect(plain)
    cached_images, cached_targets = collect(cached)
    # the plain path by hand: the Dataset with the evaluation transforms
    dataset = NatureTypesDataset(csv_file, root, build_transforms(config, train=False))
    by_hand = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert cached_images.shape == by_hand.shape == (len(rows), 3, size, size)
    assert torch.equal(plain_images, by_hand)
    assert torch.allclose(cached_images, by_hand, atol=1e-6, rtol=0)
    assert torch.equal(cached_targets, plain_targets)
    assert cached_targets.tolist() == [label for _, label in rows]
    assert len(cached) == len(plain) == 3  # 7 images in batches of 3


def test_cached_training_batches_are_augmented_and_seeded(odd_images, tmp_path):
    root, csv_file, rows = odd_images
    config = loader_config(root, csv_file, tmp_path / "cache", train_csv=csv_file)

    def epoch_images(epoch, seed=0):
        loader = training.split_loader({**config, "seed": seed}, "train", CPU, log=lambda *a: None)
        loader.set_epoch(epoch)
        return collect(loader)

    images, targets = epoch_images(1)
    assert images.shape == (len(rows), 3, 24, 24) and sorted(targets.tolist()) == sorted(l for _, l in rows)
    # with a larger evaluation size the crops are cut from images kept at that size, still 24 px out
    sharper = training.split_loader({**config, "eval_image_size": 40}, "train", CPU, log=lambda *a: None)
    assert sharper.cache.shape[1:] == (40, 40, 3) and next(iter(sharper))[0].shape[-2:] == (24, 24)
    again, again_targets = epoch_images(1)
    assert torch.equal(images, again) and torch.equal(targets, again_targets)
    assert not torch.equal(images, epoch_images(2)[0])
    assert not torch.equal(images, epoch_images(1, seed=1)[0])


def test_shards_cover_evaluation_once_and_training_evenly():
    evaluation = [shard_indices(9, rank, 2, False, 0, 1).tolist() for rank in range(2)]
    assert evaluation == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]
    training = [shard_indices(9, rank, 2, True, 0, 1) for rank in range(2)]
    assert len(training[0]) == len(training[1]) == 4  # equal steps on every rank, nothing repeated
    assert len(set(torch.cat(training).tolist())) == 8
    # a last training batch of one image is left out (BatchNorm cannot train on it); evaluation keeps all
    assert len(shard_indices(17, 0, 1, True, 0, 1, batch_size=16)) == 16
    assert len(shard_indices(18, 0, 1, True, 0, 1, batch_size=16)) == 18
    assert len(shard_indices(17, 0, 1, False, 0, 1, batch_size=16)) == 17


@pytest.mark.parametrize("loader", ["cached", "plain"])
def test_training_batches_never_hold_a_single_image(odd_images, tmp_path, loader):
    root, csv_file, _ = odd_images  # 7 images
    config = loader_config(root, csv_file, tmp_path / "cache", train_csv=csv_file, loader=loader, batch_size=6)
    train_loader = training.split_loader(config, "train", CPU, log=lambda *a: None)
    assert [len(targets) for _, targets in train_loader] == [6] and len(train_loader) == 1
    config["eval_batch_size"] = 6
    assert [len(t) for _, t in training.split_loader(config, "validation", CPU)] == [6, 1]


@pytest.mark.parametrize("loader", ["cached", "plain"])
def test_the_training_crop_size_can_change_between_epochs(odd_images, tmp_path, loader):
    root, csv_file, _ = odd_images
    config = loader_config(root, csv_file, tmp_path / "cache", train_csv=csv_file, loader=loader)
    train_loader = training.split_loader(config, "train", CPU, log=lambda *a: None)
    assert next(iter(train_loader))[0].shape[-2:] == (24, 24)
    train_loader.set_crop_size(16)
    assert next(iter(train_loader))[0].shape[-2:] == (16, 16)


def test_a_second_loader_reuses_the_cache(odd_images, tmp_path):
    root, csv_file, rows = odd_images
    cache_dir = tmp_path / "cache"
    config = loader_config(root, csv_file, cache_dir)
    messages = []
    first = collect(training.split_loader(config, "validation", CPU, log=messages.append))[0]
    assert len(messages) == 1 and messages[0].startswith("caching 7 images")
    (cache_file,) = cache_dir.iterdir()
    assert cache_file.suffix == ".u8"
    stamp = cache_file.stat().st_mtime_ns
    messages.clear()
    second = collect(training.split_loader(config, "validation", CPU, log=messages.append))[0]
    assert messages == [] and cache_file.stat().st_mtime_ns == stamp
    assert list(cache_dir.iterdir()) == [cache_file]
    assert torch.equal(first, second)
    # a copy of the CSV elsewhere shares it; another size or CSV is another cache
    (tmp_path / "elsewhere").mkdir()
    copy = shutil.copy(csv_file, tmp_path / "elsewhere")
    training.split_loader({**config, "validation_csv": copy}, "validation", CPU, log=messages.append)
    assert messages == []
    training.split_loader({**config, "image_size": 16}, "validation", CPU, log=messages.append)
    shorter = str(tmp_path / "shorter.csv")
    write_csv(shorter, rows[:2], CLASSES)
    training.split_loader({**config, "validation_csv": shorter}, "validation", CPU, log=messages.append)
    assert len(messages) == 2 and len(list(cache_dir.iterdir())) == 3
    # a changed image: a new cache replaces the outdated one of the same CSV and size
    Image.new("L", (150, 140), 7).save(os.path.join(root, "gray", "l.png"))  # another size and time
    changed = collect(training.split_loader(config, "validation", CPU, log=messages.append))[0]
    assert len(messages) == 3 and len(list(cache_dir.iterdir())) == 3 and not cache_file.exists()
    assert torch.allclose(changed[0], (7 / 255 - torch.tensor(config["mean"]).view(3, 1, 1))
                          / torch.tensor(config["std"]).view(3, 1, 1), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# A CSV that does not fit the folder: a clear error before any work

def test_missing_file_and_unknown_class_are_named(odd_images, tmp_path):
    root, csv_file, rows = odd_images
    os.remove(os.path.join(root, "rgb", "wide.png"))
    with pytest.raises(UserError, match=r"1 image\(s\) listed in .* are missing .* rgb/wide\.png"):
        read_split_csv(csv_file, root)
    with pytest.raises(UserError, match="rgb/wide.png"):
        training.split_loader(loader_config(root, csv_file, tmp_path / "cache"), "validation", CPU)
    assert not (tmp_path / "cache").exists()  # refused before any decoding
    other = str(tmp_path / "other.csv")
    write_csv(other, [("gray/l.png", 0)], ["snow"])
    with pytest.raises(UserError, match=r"snow \(index 0\)"):
        read_split_csv(other, root)
    (tmp_path / "bad.csv").write_text("file,label\ngray/l.png,0\n")
    with pytest.raises(UserError, match="not a split CSV"):
        read_split_csv(str(tmp_path / "bad.csv"), root)
    with pytest.raises(UserError, match="does not exist"):
        read_split_csv(str(tmp_path / "absent.csv"), root)


def test_train_py_with_a_missing_image_exits_with_one_sentence(image_root, tmp_path):
    splits_dir = str(tmp_path / "splits")
    make_splits(image_root, splits_dir, val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    with open(os.path.join(splits_dir, "test.csv"), encoding="utf-8") as f:
        missing = f.read().splitlines()[1].split(",")[0]
    os.remove(os.path.join(image_root, missing))
    result = subprocess.run([sys.executable, "train.py", *train_args(splits_dir, tmp_path, "--run=r")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and missing in lines[0], result.stderr
    assert not (tmp_path / "checkpoints" / "r" / "last.pth").exists()


def batches_of(loader):
    return torch.cat([images for images, _ in loader])


@pytest.mark.parametrize("damage", ["truncated", "bytes in the middle", "header", "checksums"])
def test_a_damaged_cache_is_built_again_never_used(odd_images, tmp_path, damage):
    root, csv_file, _ = odd_images
    config = loader_config(root, csv_file, tmp_path / "cache")
    expected = batches_of(training.split_loader(config, "validation", CPU, log=lambda *a: None))
    (cache_file,) = (tmp_path / "cache").iterdir()
    size = cache_file.stat().st_size
    with open(cache_file, "r+b") as f:
        if damage == "truncated":
            f.truncate(size - 1)
        else:
            f.seek({"bytes in the middle": size // 2, "header": 0, "checksums": size - 4}[damage])
            f.write(np.random.default_rng(1).integers(0, 256, 64 if damage != "checksums" else 4,
                                                      dtype=np.uint8).tobytes())
    messages = []
    loader = training.split_loader(config, "validation", CPU, log=messages.append)
    assert any("is damaged" in m and "built again" in m for m in messages), messages
    assert torch.equal(batches_of(loader), expected)
    assert cache_file.stat().st_size == size


def test_an_image_replaced_by_another_of_the_same_size_and_time_is_never_served_stale(odd_images, tmp_path):
    root, csv_file, _ = odd_images
    config = loader_config(root, csv_file, tmp_path / "cache")
    before = batches_of(training.split_loader(config, "validation", CPU, log=lambda *a: None))
    path = os.path.join(root, "rgb", "square.jpg")
    stat = os.stat(path)
    Image.fromarray(np.full((150, 150, 3), 7, np.uint8)).save(path, "JPEG")
    with open(path, "r+b") as f:  # the same size and modification time as the picture it replaced
        f.truncate(stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns
    after = batches_of(training.split_loader(config, "validation", CPU, log=lambda *a: None))
    plain = batches_of(training.split_loader({**config, "loader": "plain"}, "validation", CPU))
    assert not torch.equal(after, before) and torch.equal(after, plain)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the outdated cache was replaced


def test_the_preview_shows_every_class_in_turn(splits, tmp_path, monkeypatch):
    import NatureTypesDataset as preview_script
    assert preview_script.every_class_in_turn([0, 0, 0, 1, 2, 2], 5) == [0, 3, 4, 1, 5]
    shown = []
    monkeypatch.setattr(preview_script, "write_figure", lambda path, fig, **kw: shown.append(fig))
    dataset = preview_script.main([f"--splits_dir={splits[1]}", f"--out={tmp_path / 'preview.png'}"])
    titles = [ax.get_title().split("\n") for ax in shown[0].axes if ax.get_title()]
    assert len(titles) == 2 * 12  # twelve images, each as training and as evaluation sees it
    assert {name for name, _ in titles} == set(dataset.class_names)
    assert [what.split(",")[0] for _, what in titles[:6]] == ["training"] * 6
