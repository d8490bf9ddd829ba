"""report.py: every section over real tiny runs, Table 1 against accuracy_eval.py, broken runs,
the mistakes gallery's order, and Grad-CAM on a model that only looks at one half of the image."""
import shutil

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

import accuracy_eval
import report
import train
from conftest import split_image_set, train_args
from scenes import report as report_module
from scenes.checkpoints import load_checkpoint, save_checkpoint
from scenes.cli import UserError
from scenes.files import pyplot
from scenes.gradcam import grad_cam
from scenes.mistakes import confused_pairs, mistakes_table

GOOD = ("sgd_lr0.01", "adam_lr0.001")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs of two presets (base dir, splits_dir, {run: run folder}), trained once."""
    base = tmp_path_factory.mktemp("report")
    splits_dir = split_image_set(base)
    for name, epochs, lr in zip(GOOD, (2, 1), (0.01, 0.001)):  # the presets' own learning rates
        train.main(train_args(splits_dir, base, f"--preset={name}", f"--epochs={epochs}", f"--lr={lr}",
                              "--eval_image_size=0", "--batch_size=6"))
    return base, splits_dir, {name: base / "checkpoints" / name for name in GOOD}


def report_args(base, splits_dir, folder, out_dir, *extra):
    return [str(folder), f"--splits_dir={splits_dir}", f"--cache_dir={base / 'cache'}", f"--out_dir={out_dir}",
            "--device=cpu", *extra]


@pytest.fixture(scope="module")
def made(runs, tmp_path_factory):
    """A report over the two runs plus a broken one, an unfinished one and one without best.pth."""
    base, splits_dir, run_dirs = runs
    folder = tmp_path_factory.mktemp("folder")
    for name, run_dir in run_dirs.items():
        shutil.copytree(run_dir, folder / name)
    shutil.copytree(run_dirs["sgd_lr0.01"], folder / "broken")
    with open(folder / "broken" / "best.pth", "r+b") as f:
        f.truncate(1000)
    (folder / "broken" / "metrics.csv").write_bytes(b"epoch,train_loss\n1,0.5,7,\"unclosed\n")
    shutil.copytree(run_dirs["adam_lr0.001"], folder / "unfinished")  # as if killed after epoch 1 of 3
    last = load_checkpoint(str(folder / "unfinished" / "last.pth"))
    save_checkpoint({**last, "planned_epochs": 3}, str(folder / "unfinished" / "last.pth"))
    (folder / "nobest").mkdir()
    shutil.copyfile(run_dirs["sgd_lr0.01"] / "metrics.csv", folder / "nobest" / "metrics.csv")
    out_dir = folder.parent / "report_out"
    return folder, out_dir, report.main(report_args(base, splits_dir, folder, out_dir))


def test_the_report_has_every_section_and_its_files(made):
    folder, out_dir, result = made
    text = (out_dir / "report.md").read_text()
    for heading in ("## 1 Runs", "## 2 Figure 1", "## 3 Figure 2", "## 4 Table 1", "## 5 Confusion matrices",
                    "## 6 Figure 3 and Table 2", "## 7 Where the best run"):
        assert heading in text, heading
    assert "Not available" not in text
    # The best run is the one of highest validation mAP, whatever its test numbers.
    val_maps = {r.name: r.best_val_map for r in result.records if r.scores is not None}
    assert result.best.name == max(val_maps, key=val_maps.get)
    for name in ["figure1_curves.png", "figure2_test_loss.png", "gallery.png", "mistakes.csv", "table1_test.csv",
                 *(f"confusion_{run}.png" for run in (*GOOD, "unfinished")),
                 *(f"features/feature_maps_visualization/{c}.png" for c in ("buildings", "mountain"))]:
        assert (out_dir / name).is_file(), name
        assert f"]({name})" in text or name.endswith(".csv"), name
    assert "layer4.1.conv2" in text.split("## 6")[1]  # Table 2
    mistakes = pd.read_csv(out_dir / "mistakes.csv")
    scores = result.best.scores
    wrong = (scores[list(result.best.config["class_names"])].to_numpy().argmax(1) != scores["label"]).sum()
    assert len(mistakes) == wrong and (mistakes["label"] != mistakes["prediction"]).all()
    assert list(mistakes["confidence"]) == sorted(mistakes["confidence"], reverse=True)


def test_broken_unfinished_and_absent_runs_are_named(made):
    folder, out_dir, result = made
    runs_section = (out_dir / "report.md").read_text().split("## 2")[0]
    problems = [line for line in runs_section.splitlines() if line.startswith("- **broken**")]
    assert any("broken/metrics.csv does not parse" in line for line in problems)
    assert any("broken/best.pth is truncated or not a checkpoint" in line for line in problems)
    assert "- **unfinished**: unfinished: 1 of 3 epochs." in runs_section
    assert "- **nobest**: no best.pth" in runs_section
    assert ("preset `pretrained`: **absent**: no run folder; `python train.py --preset=pretrained` needs "
            "torchvision's ImageNet weights") in runs_section
    assert "preset `sgd_lr0.01`: run `broken`, `sgd_lr0.01`" in runs_section  # broken's last.pth gives its preset
    assert "preset `adam_lr0.001`: run `adam_lr0.001`, `unfinished`" in runs_section
    rows = {line.split("|")[1].strip(): line for line in runs_section.splitlines() if line.startswith("| ")}
    assert "| 1/3 |" in rows["unfinished"] and "| 2/2 |" in rows["sgd_lr0.01"]
    saved = load_checkpoint(str(folder / "sgd_lr0.01" / "best.pth"))["runtime"]  # fp32, or bf16 where the CPU is fast at it
    assert f"cpu, {saved['precision']}" in rows["sgd_lr0.01"]  # the device and precision the checkpoint was saved under
    assert "| ?/2 |" in rows["broken"] and "best.pth unreadable" in rows["broken"]  # no metrics.csv to count
    assert list(result.table1.index) == ["adam_lr0.001", "sgd_lr0.01", "unfinished"]


def test_figures_1_and_2_have_panels_per_run_with_the_same_labelled_axes(made):
    """Figure 1: per run a loss panel above an accuracy panel; Figure 2: a test-loss panel per run.
    Panels of one kind share their axes; every axis is labelled; epochs are whole numbers."""
    _, _, result = made
    with_metrics = [r.name for r in result.records if r.history is not None]
    assert with_metrics == ["adam_lr0.001", "nobest", "sgd_lr0.01", "unfinished"]
    figure1 = report_module.figure1(result.records)
    loss = [ax for ax in figure1.axes if ax.get_ylabel().startswith("loss")]
    accuracy = [ax for ax in figure1.axes if not ax.get_ylabel().startswith("loss")]
    figure2 = report_module.figure2(result.records)
    for panels, label in ((loss, "loss (cross-entropy)"), (accuracy, "accuracy (share of images)"),
                          (figure2.axes, "test loss (cross-entropy)")):
        assert len(panels) == 4 and {ax.get_ylabel() for ax in panels} == {label}
        assert {ax.get_xlabel() for ax in panels} == {"epoch"}
        assert len({(ax.get_xlim(), ax.get_ylim()) for ax in panels}) == 1
        assert panels[0].get_xlim() == (0.5, 3.5)  # up to the unfinished run's planned epochs
        ticks = [tick for ax in panels for tick in ax.get_xticks() if 0.5 <= tick <= 3.5]
        assert ticks and all(float(tick).is_integer() for tick in ticks)
    assert [ax.get_title().split(" ")[0] for ax in loss] == with_metrics == \
        [ax.get_title().split(" ")[0] for ax in figure2.axes]
    assert accuracy[0].get_ylim() == (0, 1.02)
    styles = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in loss[0].lines + accuracy[0].lines}
    assert len({styles[name] for name in ("train loss", "train accuracy", "validation loss",
                                          "validation accuracy")}) == 4  # four styles a reader can tell apart
    pyplot().close(figure1)
    pyplot().close(figure2)


def test_table1_equals_accuracy_eval_and_a_second_report_reads_the_scores_back(runs, tmp_path, capsys):
    base, splits_dir, run_dirs = runs
    folder = tmp_path / "checkpoints"
    for name, run_dir in run_dirs.items():
        shutil.copytree(run_dir, folder / name)
    first = report.main(report_args(base, splits_dir, folder, tmp_path / "first"))
    assert capsys.readouterr().out.count("evaluating") == 2  # no scores were saved yet
    paths = [str(folder / name / "best.pth") for name in sorted(GOOD)]
    args = [f"--splits_dir={splits_dir}", f"--cache_dir={base / 'cache'}", f"--out_dir={tmp_path / 'eval'}",
            "--device=cpu"]
    compared = accuracy_eval.main(paths + args)
    pd.testing.assert_frame_equal(first.table1, compared, check_exact=True)
    capsys.readouterr()
    again = report.main(report_args(base, splits_dir, folder, tmp_path / "again"))
    assert "evaluating" not in capsys.readouterr().out  # read back from accuracy_eval.py's score files
    for out in ("first", "again"):
        table1 = (tmp_path / out / "table1_test.csv").read_bytes()
        assert table1 == (tmp_path / "eval" / "comparison_test.csv").read_bytes()
    pd.testing.assert_frame_equal(again.table1, compared, check_exact=True)


def test_mistakes_are_listed_most_confident_first():
    classes = ["a", "b", "c"]
    scores = pd.DataFrame({"path": [f"img{i}.jpg" for i in range(6)], "label": [0, 1, 2, 0, 1, 2],
                           "a": [0.9, 0.7, 0.2, 0.1, 0.5, 0.3],
                           "b": [0.05, 0.2, 0.7, 0.3, 0.4, 0.3],
                           "c": [0.05, 0.1, 0.1, 0.6, 0.1, 0.4]})
    # img0 right; img1 b->a 0.7; img2 c->b 0.7 (a tie with img1: split order kept); img3 a->c 0.6;
    # img4 b->a 0.5; img5 right (c 0.4).
    table = mistakes_table(scores, classes)
    assert list(table["path"]) == ["img1.jpg", "img2.jpg", "img3.jpg", "img4.jpg"]
    assert list(table["label"]) == ["b", "c", "a", "b"] and list(table["prediction"]) == ["a", "b", "c", "a"]
    assert list(table["confidence"]) == [0.7, 0.7, 0.6, 0.5]
    assert list(table.columns) == ["path", "label", "prediction", "confidence", *classes]
    assert table.loc[2, "c"] == 0.6
    # The confusion of these predictions: b->a twice, c->b once, a->c once.
    pairs = confused_pairs([[1, 0, 1], [2, 0, 0], [0, 1, 1]], classes, 2)
    assert pairs == [{"true": "b", "predicted": "a", "count": 2, "share": 1.0, "reverse": 0},
                     {"true": "a", "predicted": "c", "count": 1, "share": 0.5, "reverse": 0}]


class KeepHalf(nn.Module):
    """Zeroes one half (by width) of a feature map, so nothing there reaches the prediction."""

    def __init__(self, side):
        super().__init__()
        self.side = side

    def forward(self, x):
        mask = torch.zeros_like(x)
        half = x.shape[-1] // 2
        mask[..., :half] = 1 if self.side == "left" else 0
        mask[..., half:] = 0 if self.side == "left" else 1
        return x * mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_grad_cam_lies_on_the_half_the_prediction_depends_on(side):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6)
    model.layer4 = nn.Sequential(model.layer4, KeepHalf(side))  # still named layer4, masked before pooling
    with torch.no_grad():
        model.fc.weight.abs_()  # every channel speaks for every class, so no heat map is all zero
    model.eval()
    images = torch.randn(3, 3, 128, 128)
    with torch.inference_mode():
        predicted = model(images).argmax(1)
    heat = grad_cam(model, images, predicted)
    assert heat.shape == (3, 128, 128) and heat.min() >= 0
    assert torch.allclose(heat.flatten(1).amax(1), torch.ones(3))  # every map scaled to its peak, none all zero
    left_share = heat[..., :64].sum((1, 2)) / heat.sum((1, 2))
    share = left_share if side == "left" else 1 - left_share
    assert (share > 0.85).all(), share


def test_settings_that_cannot_make_a_report_are_refused(runs, tmp_path):
    base, splits_dir, _ = runs
    folder = base / "checkpoints"
    for extra, message in ((["--gallery=-1"], "--gallery"), (["--stat_images=0"], "--stat_images"),
                           (["--modules=,"], "--modules"), (["--loader=fast"], "--loader")):
        with pytest.raises(UserError, match=message):
            report.main(report_args(base, splits_dir, folder, tmp_path / "out", *extra))
    with pytest.raises(UserError, match="does not exist"):
        report.main(report_args(base, splits_dir, tmp_path / "nowhere", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no run folders"):
        report.main(report_args(base, splits_dir, tmp_path / "empty", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_loss_axes_show_a_short_run_and_cut_only_a_diverged_epoch():
    def record(val_losses):
        history = [{"epoch": i + 1, "train_loss": 2.5, "val_loss": v, "test_loss": v} for i, v in enumerate(val_losses)]
        return report_module.RunRecord("r", "r", history=history, planned=len(history),
                                       config={"class_names": list("abcdef")})
    _, _, top, cut = report_module.curve_limits([record([7.2, 6.2, 4.7, 4.1])])  # all above 2 ln 6 = 3.58
    assert top >= 7.2 and not cut
    _, _, top, cut = report_module.curve_limits([record([1.5, 1e4, 1.2, 1.0])])
    assert 3.5 < top < 10 and cut
