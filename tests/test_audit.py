"""Issue 28: audit.py finds planted label errors, writes its files, and its corrections round-trip
through data_handling.py; its refusals are one sentence each."""
import hashlib
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import audit
import data_handling
import train
from conftest import train_args
from scenes.corrections import COLUMNS
from scenes.demo import CLASSES
from scenes.splits import SPLITS
from scenes.splitting import make_splits
from test_robustness import assert_user_error, run_cli

# Each class one colour under noise: a tiny network tells them apart after two short epochs, so a
# picture filed under another class stands out as a trained model would make it stand out.
COLOURS = [(200, 60, 60), (40, 150, 40), (230, 230, 250), (120, 90, 60), (40, 90, 210), (110, 110, 110)]
PLANTED = [("forest", "buildings"), ("buildings", "forest"), ("sea", "street"), ("street", "sea")]


def colour_image_set(root, per_class=16, size=32, seed=0):
    """Six classes of one colour each (noisy JPEGs); returns root."""
    rng = np.random.default_rng(seed)
    for name, colour in zip(CLASSES, COLOURS):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i:03d}.jpg"), quality=90)
    return root


def plant_errors(root, per_pair=2):
    """Move ``per_pair`` pictures of each class of ``PLANTED`` into the other's folder; returns the
    planted paths (relative to root) with their true class."""
    planted = {}
    for true, wrong in PLANTED:
        for i in range(per_pair):
            name = f"{true}_{i:03d}.jpg"
            shutil.move(os.path.join(root, true, f"{i:03d}.jpg"), os.path.join(root, wrong, name))
            planted[f"{wrong}/{name}"] = true
    return planted


def audit_args(run, out_dir, *extra):
    return [str(run), f"--out_dir={out_dir}", "--device=cpu", "--precision=fp32", "--gallery=4", *extra]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A colour set with 8 planted label errors, its split, a run of two short epochs and its audit."""
    base = tmp_path_factory.mktemp("audit")
    root = colour_image_set(str(base / "images"))
    planted = plant_errors(root)
    make_splits(root, str(base / "splits"), val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    train.main(train_args(str(base / "splits"), base, "--run=r", "--epochs=2", "--batch_size=8", "--lr=0.02"))
    run, out_dir = base / "checkpoints" / "r", base / "audit"
    audit.main(audit_args(run, out_dir, f"--cache_dir={base / 'cache'}"))
    return SimpleNamespace(base=base, root=root, planted=planted, run=run, out_dir=out_dir,
                           issues=pd.read_csv(out_dir / "label_issues.csv"))


def test_the_planted_label_errors_rank_first(audited):
    issues, planted = audited.issues, audited.planted
    top = list(issues["path"][:len(planted)])
    found = [path for path in planted if path in top]
    assert len(found) >= len(planted) - 1, f"planted {sorted(planted)}, top of label_issues.csv {top}"
    for path in found:  # the true class is the suggested one
        assert issues.set_index("path").loc[path, "suggested"] == planted[path]
    assert set(issues["split"]) <= set(SPLITS) and issues["score"].is_monotonic_increasing


def test_the_audit_writes_its_files_with_their_columns(audited):
    out = audited.out_dir
    assert list(audited.issues.columns[:5]) == ["path", "split", "label", "suggested", "score"]
    assert set(audited.issues["label"]) <= set(CLASSES) and set(audited.issues["suggested"]) <= set(CLASSES)
    assert all(os.path.isfile(os.path.join(audited.root, path)) for path in audited.issues["path"])
    copies, outliers = pd.read_csv(out / "near_copies.csv"), pd.read_csv(out / "outliers.csv")
    assert list(copies.columns) == ["group", "path", "split", "label", "distance", "across_splits", "across_classes"]
    assert list(outliers.columns) == ["path", "split", "label", "score"]
    text = (out / "audit.md").read_text()
    assert "what-if: without the" in text and "**real** (every test image)" in text
    for split in SPLITS:
        if (audited.issues["split"] == split).any():
            assert f"label_issues_{split}.png" in text and (out / f"label_issues_{split}.png").stat().st_size > 0
    suggested = pd.read_csv(out / "corrections_suggested.csv")
    assert tuple(suggested.columns[:3]) == COLUMNS and set(suggested["action"]) == {"relabel"}
    assert list(suggested["path"]) == list(audited.issues["path"][:len(suggested)])


def test_corrections_relabel_and_drop_when_the_split_is_made(audited, tmp_path):
    (relabelled, true), (dropped, _) = list(audited.planted.items())[:2]
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(f"path,action,class,note\n{relabelled},relabel,{true},checked\n{dropped},drop,,\n")
    splits_dir = tmp_path / "splits"
    data_handling.main([f"--data_root={audited.root}", f"--splits_dir={splits_dir}", "--val_size=0.25",
                        "--test_size=0.25", f"--corrections={corrections}"])
    rows = pd.concat([pd.read_csv(splits_dir / f"{split}.csv") for split in SPLITS])
    assert rows.set_index("path").loc[relabelled, "class_name"] == true
    assert dropped not in set(rows["path"]) and len(rows) == 6 * 16 - 1
    info = json.loads((splits_dir / "split_info.json").read_text())
    assert info["corrections_sha256"] == hashlib.sha256(corrections.read_bytes()).hexdigest()
    assert info["corrections"]["relabelled"] == 1 and info["corrections"]["dropped"] == 1
    train.main(train_args(str(splits_dir), tmp_path, "--run=corrected", "--batch_size=8"))  # the run knows it
    config = json.loads((tmp_path / "checkpoints" / "corrected" / "config.json").read_text())
    assert config["corrections_sha256"] == info["corrections_sha256"]


def test_main_py_applies_corrections_in_its_split_step(audited, tmp_path):
    import main as main_script
    (dropped, _), *_ = list(audited.planted.items())
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(f"path,action,class\n{dropped},drop,\n")
    main_script.main([f"--data_root={audited.root}", f"--splits_dir={tmp_path / 'splits'}", "--steps=split",
                      "--val_size=0.25", "--test_size=0.25", f"--corrections={corrections}"])
    info = json.loads((tmp_path / "splits" / "split_info.json").read_text())
    assert info["corrections"]["dropped"] == 1 and dropped not in info["sha256"]


@pytest.mark.parametrize("text, words", [
    ("path,action\n", ["header should begin with path,action,class"]),
    ("path,action,class\nforest/000.jpg,move,sea\n", ["line 2", "'move'; write relabel or drop"]),
    ("path,action,class\nforest/000.jpg,relabel,ocean\n", ["line 2", "'ocean', which is no class"]),
    ("path,action,class\nforest/nothere.jpg,drop,\n", ["1 image(s) that are not in the data root",
                                                      "forest/nothere.jpg"]),
    ("path,action,class\nforest/005.jpg,drop,\nforest/005.jpg,relabel,sea\n", ["twice (lines 2 and 3)"]),
    ("path,action,class\n/etc/passwd,drop,\n", ["not a path relative to the data root"]),
])
def test_a_wrong_corrections_file_is_refused_in_one_sentence(audited, tmp_path, capsys, text, words):
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(text)
    argv = [f"--data_root={audited.root}", f"--splits_dir={tmp_path / 'splits'}", f"--corrections={corrections}"]
    assert_user_error(*run_cli(data_handling.main, argv, capsys), *words)
    assert not (tmp_path / "splits").exists()


def test_the_audit_refuses_what_it_cannot_audit(audited, tmp_path, capsys):
    out, cache = tmp_path / "out", f"--cache_dir={audited.base / 'cache'}"
    remade, changed = tmp_path / "remade", tmp_path / "changed"
    shutil.copytree(audited.root, changed)  # other pictures under the same names
    shutil.copy(changed / "forest" / "003.jpg", changed / "sea" / "003.jpg")
    one_class = tmp_path / "one_class"  # a split of one class, as only a hand-edited split_info.json can be
    shutil.copytree(audited.base / "splits", one_class)
    info = json.loads((one_class / "split_info.json").read_text())
    (one_class / "split_info.json").write_text(json.dumps({**info, "class_names": ["sea"]}))
    make_splits(audited.root, str(remade), val_size=0.25, test_size=0.25, seed=1, log=lambda *a: None)
    cases = [
        (audit_args(tmp_path / "nothing", out), ["does not exist"]),
        (audit_args(audited.run, out, f"--splits_dir={tmp_path / 'gone'}"), ["the split of run r is not in", "missing"]),
        (audit_args(audited.run, out, f"--splits_dir={remade}"), ["run r is not audited: it was trained on another split"]),
        (audit_args(audited.run, out, "--folds=50", cache), ["--folds=50 needs 50 training images per class"]),
        (audit_args(audited.run, os.path.join(audited.root, "audit")), ["lies in the data root"]),
        (audit_args(audited.run, out, f"--data_root={changed}"), ["are not the ones", "sea/003.jpg"]),
        (audit_args(audited.run, out, f"--splits_dir={one_class}"), ["has 1 class (sea); a classifier needs two"]),
        (audit_args(audited.run, out, "--folds=1"), ["--folds=1 is outside its range [>= 2]"]),
        ([], ["name one run folder or checkpoint"]),
    ]
    for argv, words in cases:
        assert_user_error(*run_cli(audit.main, argv, capsys), *words)
    assert not out.exists()


def test_k_trainings_score_each_training_image_with_a_model_that_did_not_see_it(audited, tmp_path, monkeypatch):
    import scenes.training
    seen, real_train = [], scenes.training.train

    def recording_train(config):  # the real training, its split noted
        seen.append({split: set(pd.read_csv(config[f"{split}_csv"])["path"]) for split in SPLITS})
        return real_train(config)

    monkeypatch.setattr(scenes.training, "train", recording_train)
    out = tmp_path / "out"
    audit.main(audit_args(audited.run, out, f"--cache_dir={audited.base / 'cache'}", "--train_probs=trainings",
                          "--folds=2", "--fold_epochs=1"))
    training = set(pd.read_csv(audited.base / "splits" / "train.csv")["path"])
    validation = set(pd.read_csv(audited.base / "splits" / "validation.csv")["path"])
    assert len(seen) == 2 and seen[0]["test"] | seen[1]["test"] == training
    for fold in seen:
        assert not fold["train"] & fold["test"] and fold["train"] | fold["test"] == training
        assert fold["validation"] == validation
    assert "2 short trainings of the run's recipe" in (out / "audit.md").read_text()
    assert (out / "label_issues.csv").is_file() and not list(out.glob("audit-fold-*"))
