"""predict.py: the scores accuracy_eval.py saves, on images of every mode and size; unreadable images
named and skipped; flip TTA; finding images; settings refused."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import accuracy_eval
import predict
from conftest import ROOT
from scenes.cli import UserError
from scenes.demo import CLASSES
from scenes.prediction import find_images, read_path_list
from scenes.splits import write_split_csv

# (file under its class folder, PIL mode it is saved in, size): every mode a photo may come in.
ODD_IMAGES = [
    ("buildings/gray.png", "L", (50, 30)),
    ("forest/rgba.png", "RGBA", (40, 40)),
    ("forest/gray_alpha.png", "LA", (33, 47)),
    ("glacier/palette.png", "P", (64, 48)),
    ("mountain/cmyk.jpg", "CMYK", (45, 45)),
    ("sea/tiny.bmp", "RGB", (3, 2)),
    ("street/wide.webp", "RGB", (200, 40)),
    ("street/tall.JPG", "RGB", (30, 90)),
]


def fp32_cpu(checkpoint, *extra):
    return [f"--checkpoint={checkpoint}", "--device=cpu", "--precision=fp32", *extra]


def demo_image(trained, class_name, index=0):
    base, _, _ = trained
    return base / "images" / class_name / f"{index:04d}.jpg"


def make_odd_images(trained, root):
    """The ODD_IMAGES under ``root`` (six class folders), drawn from the demo images; returns
    [(relative path, label)]."""
    rows = []
    for name in CLASSES:
        os.makedirs(root / name, exist_ok=True)
    for rel, mode, size in ODD_IMAGES:
        class_name = rel.split("/")[0]
        image = Image.open(demo_image(trained, class_name)).convert("RGB").resize(size)
        if mode == "P":
            image = image.quantize(colors=16)
        elif mode in ("RGBA", "LA"):
            image = image.convert(mode)
            image.putalpha(Image.linear_gradient("L").resize(size))
        else:
            image = image.convert(mode)
        image.save(root / rel)
        assert Image.open(root / rel).mode == mode and Image.open(root / rel).size == size, rel
        rows.append((rel, CLASSES.index(class_name)))
    return rows


def test_predict_gives_the_scores_accuracy_eval_saves_for_odd_images(trained, tmp_path):
    base, _, checkpoint = trained
    root = tmp_path / "odd"
    rows = make_odd_images(trained, root)
    csv_file = tmp_path / "lists" / "odd.csv"
    os.makedirs(csv_file.parent)
    write_split_csv(str(csv_file), rows, list(CLASSES))
    run_checkpoint = tmp_path / "run" / "best.pth"  # accuracy_eval writes its scores next to it
    os.makedirs(run_checkpoint.parent)
    shutil.copyfile(checkpoint, run_checkpoint)
    accuracy_eval.main([str(run_checkpoint), f"--csv={csv_file}", f"--data_root={root}", "--device=cpu",
                        "--precision=fp32", f"--cache_dir={tmp_path / 'cache'}", f"--out_dir={tmp_path / 'out'}"])
    saved = pd.read_csv(tmp_path / "run" / "best_lists-odd_scores.csv").set_index("path")

    out = tmp_path / "predictions.csv"
    table = predict.main(fp32_cpu(checkpoint, str(root), f"--out={out}", "--batch_size=3"))
    table.index = [os.path.relpath(path, root) for path in table["path"]]
    assert sorted(table.index) == sorted(saved.index) == sorted(rel for rel, _ in rows)
    table = table.loc[saved.index]
    scores = table[list(CLASSES)].to_numpy()
    assert np.abs(scores - saved[list(CLASSES)].to_numpy()).max() < 1e-5
    assert list(table["predicted"]) == [CLASSES[c] for c in saved[list(CLASSES)].to_numpy().argmax(1)]
    assert np.array_equal(table["score"].to_numpy(), scores.max(1))
    written = pd.read_csv(out)
    assert list(written.columns) == ["path", "predicted", "score", *CLASSES]
    assert list(written["path"]) == [os.path.join(root, rel) for rel in sorted(rel for rel, _ in rows)]
    assert np.abs(written.set_index("path")[list(CLASSES)].to_numpy()
                  - table.sort_index()[list(CLASSES)].to_numpy()).max() < 1e-8


def write_broken_images(folder, good):
    """Beside a copy of ``good``: a text file, a JPEG cut in half and an empty PNG; returns their paths."""
    os.makedirs(folder)
    shutil.copyfile(good, folder / "good.jpg")
    data = good.read_bytes()
    (folder / "text.jpg").write_text("not an image")
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    return [str(folder / name) for name in ("cut.jpg", "empty.png", "text.jpg")]


def test_unreadable_images_are_named_and_skipped(trained, tmp_path, capsys):
    _, _, checkpoint = trained
    broken = write_broken_images(tmp_path / "photos", demo_image(trained, "sea"))
    table = predict.main(fp32_cpu(checkpoint, str(tmp_path / "photos"), "--topk=3"))
    out, err = capsys.readouterr()
    assert list(table["path"]) == [str(tmp_path / "photos" / "good.jpg")]
    for path in broken:
        assert f"skipped {path}: cannot decode it" in err
    assert "3 skipped" in err and "images/s" in err
    line, = out.splitlines()  # one line, the good image's three most likely classes
    words = line.split()
    assert words[0] == table["path"][0] and words[1] == table["predicted"][0]
    top = [float(score) for score in words[2::2]]
    assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] == pytest.approx(table["score"][0], abs=1e-4)


def test_no_readable_image_exits_2(trained, tmp_path):
    _, _, checkpoint = trained
    broken = write_broken_images(tmp_path / "photos", demo_image(trained, "sea"))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), *fp32_cpu(checkpoint, *broken)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "none of the 3 image(s) could be decoded" in result.stderr
    assert all(path in result.stderr for path in broken)


def test_flip_tta_averages_the_logits_of_an_image_and_its_mirror(trained, tmp_path):
    _, _, checkpoint = trained
    image = Image.open(demo_image(trained, "glacier"))  # at the evaluation size, so no resize is involved
    image.save(tmp_path / "a.png")
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirror.png")
    plain = predict.main(fp32_cpu(checkpoint, str(tmp_path / "a.png"), str(tmp_path / "mirror.png"),
                                  "--tta_flip=false"))
    flipped = predict.main(fp32_cpu(checkpoint, str(tmp_path / "a.png"), "--tta_flip=true"))
    # softmax scores are exp(logits) / sum, so the mean of the logits is the mean of the log scores
    log_scores = torch.log(torch.tensor(plain[list(CLASSES)].to_numpy()))
    expected = torch.softmax(log_scores.mean(0), 0).numpy()
    assert np.abs(flipped[list(CLASSES)].to_numpy()[0] - expected).max() < 1e-5
    assert np.abs(plain[list(CLASSES)].to_numpy()[0] - expected).max() > 1e-4  # the mirror changes the scores


def test_find_images_searches_folders_globs_and_lists(tmp_path):
    for rel in ("a/1.jpg", "a/2.PNG", "a/notes.txt", "a/.hidden.jpg", "a/.cache/3.jpg", "a/b/4.webp", "c/5.bmp"):
        os.makedirs((tmp_path / rel).parent, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    a, c = tmp_path / "a", tmp_path / "c"
    assert find_images([str(a)]) == [str(a / "1.jpg"), str(a / "2.PNG"), str(a / "b" / "4.webp")]
    # a glob's folders are searched, its files kept when they are images; a file named twice comes once
    assert find_images([str(tmp_path / "*"), str(a / "1.jpg")]) == find_images([str(a), str(c)])
    assert find_images([str(tmp_path / "**" / "*.jpg"), str(a / "notes.txt")]) == [str(a / "1.jpg"),
                                                                                   str(a / "notes.txt")]
    (tmp_path / "list.txt").write_text(f"{c / '5.bmp'}\n\n  {a / 'b'}  \n")
    assert find_images(read_path_list(str(tmp_path / "list.txt"))) == [str(c / "5.bmp"), str(a / "b" / "4.webp")]
    (tmp_path / "empty").mkdir()
    for argument, message in ((tmp_path / "nothing", "neither a file nor a folder"),
                              (tmp_path / "*.png", "matches no images"), (tmp_path / "empty", "holds no images")):
        with pytest.raises(UserError, match=message):
            find_images([str(argument)])


@pytest.mark.parametrize("setting, message", [
    ("--topk=0", r"--topk=0 is outside its range \[>= 1\]"), ("--topk=7", "--topk takes 1 to 6"), ("--batch_size=0", "--batch_size"),
    ("--workers=-1", "--workers"), ("--tta_flip=maybe", "--tta_flip takes one of auto, true, false"),
    ("--list_file=missing.txt", "cannot read the list of paths"),
])
def test_settings_out_of_range_are_refused(trained, tmp_path, setting, message):
    _, _, checkpoint = trained
    with pytest.raises(UserError, match=message):
        predict.main(fp32_cpu(checkpoint, str(demo_image(trained, "sea")), setting))
    with pytest.raises(UserError, match="name the images to label"):
        predict.main(fp32_cpu(checkpoint))
