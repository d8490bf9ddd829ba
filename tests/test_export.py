"""export.py: an ONNX file that gives PyTorch's scores, describes itself in its metadata, is removed when
it does not match; and the README's onnxruntime example classifies as predict.py does."""
import copy
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

import export
import predict
from conftest import ROOT
from scenes.checkpoints import load_checkpoint, model_from_checkpoint
from scenes.cli import UserError
from scenes.demo import CLASSES
from scenes.transforms import eval_size


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The tiny run exported once for the module, checked on its test split: (path, what main returned)."""
    _, _, checkpoint = trained
    path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    return path, export.main([f"--checkpoint={checkpoint}", f"--out={path}"])


def test_the_onnx_file_matches_pytorch_and_describes_itself(trained, exported):
    _, _, checkpoint = trained
    path, (difference, same_top1, total) = exported
    assert difference < 1e-4 and same_top1 == total == 18  # the whole test split (18 images, fewer than 64)
    config = load_checkpoint(checkpoint)["config"]
    size = eval_size(config)
    props = {prop.key: prop.value for prop in onnx.load(path).metadata_props}  # from the file alone
    assert json.loads(props["class_names"]) == list(CLASSES) == config["class_names"]
    assert int(props["image_size"]) == size == 40
    assert json.loads(props["mean"]) == config["mean"] and json.loads(props["std"]) == config["std"]
    assert "bilinear" in props["resize"] and "no crop" in props["resize"]

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (images,), (logits,) = session.get_inputs(), session.get_outputs()
    assert (images.name, images.type, images.shape[1:]) == ("images", "tensor(float)", [3, size, size])
    assert isinstance(images.shape[0], str) and logits.name == "logits"
    model = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    for batch in (1, 5):  # any batch size, not only the exporter's example of 2
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = torch.softmax(model(x), 1).numpy()
        scores = torch.softmax(torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0]), 1).numpy()
        assert scores.shape == (batch, len(CLASSES)) and np.abs(scores - expected).max() < 1e-4
        assert (scores.argmax(1) == expected.argmax(1)).all()


def test_a_file_that_differs_from_pytorch_is_removed(trained, tmp_path, monkeypatch, capsys):
    base, _, checkpoint = trained
    real_onnx_model = export.onnx_model

    def shifted(model, size, props):  # exports a model whose first class gets a higher logit
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.fc.bias[0] += 1.0
        return real_onnx_model(model, size, props)

    monkeypatch.setattr(export, "onnx_model", shifted)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")
    with pytest.raises(UserError, match="more than --tolerance=0.0001; .* was not written"):
        export.main([f"--checkpoint={checkpoint}", f"--out={out}", f"--images={base / 'images' / 'sea'}",
                     "--count=4"])
    assert "checked on 4 images" in capsys.readouterr().out
    assert out.read_bytes() == b"the previous export" and not os.path.exists(f"{out}.tmp")


def test_bad_settings_and_a_missing_test_split_are_refused_before_writing(trained, tmp_path):
    _, _, checkpoint = trained
    out = tmp_path / "model.onnx"
    for setting, message in (("--count=0", "--count"), ("--batch_size=0", "--batch_size"),
                             ("--tolerance=-1", r"--tolerance=-1.0 is outside its range \[>= 0\]")):
        with pytest.raises(UserError, match=message):
            export.main([f"--checkpoint={checkpoint}", f"--out={out}", setting])
    moved = load_checkpoint(checkpoint)
    moved["config"]["test_csv"] = str(tmp_path / "elsewhere" / "test.csv")  # a checkpoint on another machine
    torch.save(moved, tmp_path / "moved.pth")
    with pytest.raises(UserError, match="--images=FOLDER"):
        export.main([f"--checkpoint={tmp_path / 'moved.pth'}", f"--out={out}"])
    assert not out.exists()


def readme_example():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) == 1, "README.md should hold one python example (the onnxruntime one)"
    return blocks[0]


def test_the_readme_example_classifies_a_photo_as_predict_does(trained, exported, tmp_path):
    path, _ = exported
    _, _, checkpoint = trained
    base, _, _ = trained
    photo = tmp_path / "photo.png"  # not square and with an alpha channel: the example resizes and converts it
    Image.open(base / "images" / "mountain" / "0003.jpg").resize((70, 52)).convert("RGBA").save(photo)
    script = tmp_path / "classify.py"
    script.write_text(readme_example())
    result = subprocess.run([sys.executable, str(script), path, str(photo)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    class_name, score = result.stdout.split()
    table = predict.main([f"--checkpoint={checkpoint}", str(photo), "--device=cpu", "--precision=fp32"])
    assert class_name == table["predicted"][0]
    assert float(score) == pytest.approx(table["score"][0], abs=1e-4)
