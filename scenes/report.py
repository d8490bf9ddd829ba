"""The course report over the runs of a checkpoints folder (what report.py runs): reading the runs,
scoring them, and report.md's sections with their figures. See report.py for what it holds."""
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from scenes import cli
from scenes.checkpoints import load_checkpoint, model_from_checkpoint, slim, verifiable
from scenes.features import capture_outputs, count_non_positive, image_maps, save_feature_maps, stats_table
from scenes.figures import curves_grid, gallery_figure, save_confusion, test_loss_grid
from scenes.files import ensure_folder, sub_folders, write_figure, write_table, write_text
from scenes.gradcam import LAYER, grad_cam, gradcam_model
from scenes.images import load_image
from scenes.loaders import eval_loader
from scenes.mistakes import confused_pairs, mistakes_table
from scenes.outputs import check_output_folder
from scenes.plan import crop_size
from scenes.runtime import Runtime, prepare_model, runtime
from scenes.scoring import (COMPARISON_FORMAT, comparison_table, eval_config, markdown_cell, markdown_table,
                            metrics_of_scores, save_scores, saved_scores, score_checkpoint, score_stem, table_row)
from scenes.splits import read_split, read_split_info, split_csv, split_digest
from scenes.transforms import build_transforms, eval_size, picture
from scenes.training import REPORT_PRESETS

RUN_FILES = ("best.pth", "last.pth", "metrics.csv", "config.json")  # a folder with none of them is no run
CURVE_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "seconds")
ABSENT = {"pretrained": "`python train.py --preset=pretrained` needs torchvision's ImageNet weights, see README"}
TAG = "test"  # the split of Table 1 and everything after it


@dataclass
class RunRecord:
    """What the report knows of one run folder; ``problems`` holds a sentence for each missing or
    broken piece."""
    name: str
    dir: str
    config: dict = None
    history: list = None  # metrics.csv as one dict per epoch
    best: str = None  # best.pth, when it loads
    weights: dict = None  # best.pth's model, config and epoch, loaded once
    best_epoch: int = None
    best_val_map: float = None
    planned: int = None
    saved_under: dict = None  # the checkpoint's runtime: device, precision
    scores: pd.DataFrame = None  # the test scores of best.pth
    metrics: dict = None
    scored: str = ""  # where the scores came from
    problems: list = field(default_factory=list)

    @property
    def done(self):
        return len(self.history) if self.history is not None else None


@dataclass
class Report:
    """What ``main`` made: the records, Table 1, the best run, report.md's path and its sections."""
    records: list
    table1: pd.DataFrame
    best: RunRecord
    path: str
    sections: list


def check_settings(config, positionals):
    """Refuse settings that cannot make a report; returns the checkpoints folder."""
    if len(positionals) > 1:
        raise cli.UserError(f"name one checkpoints folder, not {len(positionals)}: {' '.join(positionals)}.")
    if not names_of(config["modules"]):
        raise cli.UserError("--modules names no module; give comma-separated names such as layer1.0.conv1.")
    folder = positionals[0] if positionals else "checkpoints"
    if not os.path.isdir(folder):
        raise cli.UserError(f"checkpoints folder {folder!r} does not exist; train first (python train.py) or "
                            "name the folder, as python report.py CHECKPOINTS_DIR.")
    return folder


def names_of(text):
    return [name.strip() for name in text.split(",") if name.strip()]


# ---------------------------------------------------------------------------------------------
# Reading the runs

def run_dirs(folder):
    """The run folders of a checkpoints folder (or the folder itself when it is one run)."""
    if any(os.path.exists(os.path.join(folder, name)) for name in RUN_FILES):
        return [folder]
    found = [path for path in sub_folders(folder)
             if any(os.path.exists(os.path.join(path, name)) for name in RUN_FILES)]
    if not found:
        raise cli.UserError(f"{folder!r} holds no run folders (none with best.pth, last.pth or metrics.csv); "
                            "train first (python train.py).")
    return found


def read_metrics(path):
    """metrics.csv as one dict per epoch, or a UserError that says why it cannot be read."""
    if not os.path.isfile(path):
        raise cli.UserError("no metrics.csv")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise cli.UserError(f"{path} does not parse ({type(error).__name__})") from None
    missing = [column for column in CURVE_COLUMNS if column not in table.columns]
    numeric = table[[c for c in CURVE_COLUMNS if c in table.columns]].apply(pd.to_numeric, errors="coerce")
    if missing or numeric.isna().any().any() or table.empty:
        what = f"lacks {', '.join(missing)}" if missing else \
            "has no rows" if table.empty else "has values that are not numbers"
        raise cli.UserError(f"{path} {what}")
    return table.to_dict("records")


def checkpoint_or_problem(record, path):
    """A run's checkpoint, or None with the reason it does not load among the run's problems."""
    try:
        return load_checkpoint(path)
    except cli.UserError as error:
        record.problems.append(str(error))
        return None


def read_checkpoints(record):
    """Config, best epoch and plan from best.pth (the latest state from last.pth when it loads)."""
    best_path, last_path = (os.path.join(record.dir, name) for name in ("best.pth", "last.pth"))
    best = checkpoint_or_problem(record, best_path) if os.path.isfile(best_path) else None
    if best is not None:
        record.best, record.best_epoch, record.best_val_map = best_path, best["epoch"], best.get("best_metric")
        record.weights = slim(best)
    elif not os.path.isfile(best_path):
        record.problems.append("no best.pth: nothing to evaluate")
    latest = checkpoint_or_problem(record, last_path) if os.path.isfile(last_path) else None
    latest = latest or best
    if latest is not None:
        record.config, record.saved_under = latest["config"], latest.get("runtime")
        record.planned = latest.get("planned_epochs", record.config.get("epochs"))


def read_run(run_dir):
    """One run folder as a RunRecord; every piece that cannot be read becomes a problem, not an error."""
    record = RunRecord(os.path.basename(os.path.abspath(run_dir)), run_dir)
    try:
        record.history = read_metrics(os.path.join(run_dir, "metrics.csv"))
    except cli.UserError as error:
        record.problems.append(str(error))
    read_checkpoints(record)
    if record.config is None and os.path.isfile(os.path.join(run_dir, "config.json")):
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            try:
                record.config = json.load(f)
            except ValueError:
                record.problems.append(f"{run_dir}/config.json is not JSON")
    if record.done is not None and record.planned and record.done < record.planned:
        record.problems.append(f"unfinished: {record.done} of {record.planned} epochs")
    return record


# ---------------------------------------------------------------------------------------------
# Scores: read back, evaluated only when missing

def eval_settings(config, info):
    """The settings scenes.scoring evaluates with: the test split of --splits_dir."""
    return {"csv": "", "split": TAG, "splits_dir": config["splits_dir"], "data_root": config["data_root"],
            "loader": config["loader"], "cache_dir": config["cache_dir"], "batch_size": config["batch_size"],
            "root": config["data_root"] or info["data_root"]}


def score_run(record, settings, info, rt):
    """The best.pth's test scores and metrics: read back when saved and up to date, else evaluated
    and saved beside it (as accuracy_eval.py saves them)."""
    class_names = record.config["class_names"]
    _, data = eval_config(record.weights["config"], settings, record.best)
    scores = saved_scores(record.best, TAG, split_digest(data.rows, data.contents), data.rows, class_names)
    record.scored = f"read from {score_stem(record.best, TAG)}_scores.csv"
    if scores is None:
        print(f"evaluating {record.name} ({record.best}) on the {TAG} split ...")
        _, metrics, scores = score_checkpoint(record.weights, record.best, settings, rt)
        save_scores(record.best, TAG, record.name, metrics, scores, rt)
        record.scored = f"evaluated now ({rt.device}, {'bf16' if rt.bf16 else 'fp32'}), saved beside best.pth"
    record.scores, record.metrics = scores, metrics_of_scores(scores, class_names, record.best)


def runs_of_this_split(records, settings, info):
    """(the runs trained on the split in --splits_dir, the others with the reason): a report never
    puts runs of two splits (the demo beside real runs) side by side. A run that does not record
    its split's content stays, with a note."""
    try:
        split = read_split(settings["splits_dir"], settings["root"], info["class_names"], verify=[TAG])
    except cli.UserError as error:
        for record in records:
            record.problems.append(f"no test scores: {error}")
        return records, []
    kept, left_out = [], []
    for record in records:
        digests = (record.config or {}).get("split_sha256")
        if record.weights is not None and not verifiable(record.weights):
            record.problems.append("saved by an older version that did not record its images' content: its data "
                                   "cannot be checked")
            digests = None
        if isinstance(digests, dict) and digests != split.digests:
            left_out.append(record)
        else:
            kept.append(record)
    if not kept:
        raise cli.UserError(f"no run in the folder was trained on the split in {settings['splits_dir']!r} "
                            f"({', '.join(r.name for r in left_out)} on others); pass the --splits_dir they were "
                            "trained on.")
    for record in left_out:
        print(f"skipped: run {record.name} ({record.dir}) was trained on another split than the one in "
              f"{settings['splits_dir']!r}; it is left out of the report.", file=sys.stderr)
    return kept, left_out


def left_out_lines(left_out, settings):
    if not left_out:
        return ""
    names = ", ".join(f"`{r.name}`" for r in left_out)
    return (f"\nLeft out: {names}, trained on another split than the one in `{settings['splits_dir']}` (its "
            "numbers would be about other data, so they stand beside no run of this split).\n")


def score_runs(records, settings, info, rt):
    for record in records:
        if record.best is None or record.config is None:
            continue
        try:
            score_run(record, settings, info, rt)
        except cli.UserError as error:
            record.problems.append(f"no test scores: {error}")


def best_run(records):
    """The run with the highest validation mAP among those with test scores (never chosen by test)."""
    scored = [r for r in records if r.scores is not None and r.best_val_map is not None]
    return max(scored, key=lambda r: r.best_val_map, default=None)


# ---------------------------------------------------------------------------------------------
# Sections

def data_line(info, settings):
    counts = info.get("counts", {})
    sizes = " / ".join(f"{split} {counts[split]}" for split in ("train", "validation", "test") if split in counts)
    return (f"Data: `{os.path.basename(os.path.normpath(settings['root']))}` ({len(info['class_names'])} classes: "
            f"{', '.join(info['class_names'])}); split sizes {sizes} images (`{settings['splits_dir']}`).")


def sizes_of(config):
    first = crop_size(1, {"progressive_min_size": 0, **config}, 1)
    train_sizes = f"{first}-{config['image_size']}" if first < config["image_size"] else str(config["image_size"])
    return train_sizes, str(eval_size(config))


def run_row(record):
    """One row of the runs table (cells as text)."""
    config, history = record.config or {}, record.history
    epochs = f"{record.done if history is not None else '?'}/{record.planned or '?'}"
    train_sizes, eval_sizes = sizes_of(config) if "image_size" in config else ("?", "?")
    minutes = f"{sum(row['seconds'] for row in history) / 60:.1f}" if history is not None else "?"
    saved_under = record.saved_under or {}
    device = f"{saved_under['device']}, {saved_under['precision']}" if saved_under else "not recorded"
    val_map = f" (val mAP {record.best_val_map:.4f})" if record.best_val_map is not None else ""
    best = f"{record.best_epoch}{val_map}" if record.best else \
        "best.pth unreadable" if os.path.isfile(os.path.join(record.dir, "best.pth")) else "no best.pth"
    arch = config.get("arch", "?") + (" (ImageNet)" if config.get("pretrained") else "")
    optimizer = f"{config['optimizer']}, lr {config['lr']:g}" if "optimizer" in config else "?"
    return [record.name, config.get("preset", "?"), arch, optimizer, epochs, train_sizes, eval_sizes, minutes,
            device, best]


def runs_section(records, info, settings):
    header = ["run", "preset", "architecture", "optimizer, lr", "epochs done/planned", "train crops px", "eval px",
              "training min", "device, precision", "best epoch"]
    lines = ["## 1 Runs", "", markdown_rows(header, [run_row(r) for r in records]), ""]
    presets = {}
    for r in records:
        presets.setdefault((r.config or {}).get("preset", r.name), []).append(f"`{r.name}`")
    for name in REPORT_PRESETS:
        state = f"run {', '.join(presets[name])}" if name in presets else \
            f"**absent**: no run folder; {ABSENT.get(name, f'`python train.py --preset={name}` trains it')}"
        lines.append(f"- preset `{name}`: {state}")
    problems = [f"- **{r.name}**: {problem.rstrip('.')}." for r in records for problem in r.problems]
    lines += ["", *problems, ""] if problems else [""]
    lines.append(data_line(info, settings) if info else "Data: no split information (see the notes above).")
    return "\n".join(lines) + "\n"


def image_link(alt, path):
    """A Markdown image; a path with spaces or parentheses (from a class or run name) takes the <...> form."""
    target = f"<{path}>" if any(c in path for c in " ()") else path
    return f"![{alt.replace('[', '(').replace(']', ')')}]({target})"


def markdown_rows(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in rows])


def curve_limits(records):
    """Shared axes of Figures 1 and 2: the most epochs planned or done, and a loss range."""
    with_history = [r for r in records if r.history is not None]
    epochs = max(max(r.planned or 0, r.done) for r in with_history)
    classes = max(len((r.config or {}).get("class_names", [])) for r in with_history) or 2
    values = [row[f"{split}_loss"] for r in with_history for row in r.history
              for split in ("train", "val", "test")]
    # A diverged epoch would flatten every other curve: losses are cut at twice a uniform guess's, or
    # at twice their median when most of them lie higher (a short run's early epochs).
    top = min(max(1.0, *values), max(2 * math.log(classes), 2 * float(np.median(values)))) * 1.05
    return with_history, epochs, top, max(values) > top


def figure1(records):
    """The figure of section 2 (a loss and an accuracy panel per run with metrics), not yet written."""
    with_history, epochs, top, _ = curve_limits(records)
    runs = [(panel_title(r), r.history, r.best_epoch) for r in with_history]
    return curves_grid(runs, epochs, top)


def figure2(records):
    with_history, epochs, top, _ = curve_limits(records)
    return test_loss_grid([(panel_title(r), r.history) for r in with_history], epochs, top)


def panel_title(record):
    unfinished = record.planned and record.done < record.planned
    return record.name + (f" (unfinished: {record.done}/{record.planned})" if unfinished else "")


def figure_section(heading, text, make, records, out_dir, file_name):
    if not any(r.history is not None for r in records):
        raise cli.UserError("no run has a readable metrics.csv")
    write_figure(os.path.join(out_dir, file_name), make(records), bbox_inches="tight")
    missing = [r.name for r in records if r.history is None]
    _, _, top, cut = curve_limits(records)
    note = f" No panel for {', '.join(missing)} (no readable metrics.csv)." if missing else ""
    note += f" Losses above {top:.2f} (diverged epochs) lie above the axes." if cut else ""
    return f"{heading}\n\n{text}{note}\n\n![{heading.split(' ', 2)[2]}]({file_name})\n"


def table1_of(records):
    """Table 1: accuracy_eval.py's comparison table over the runs with test scores (None if none has)."""
    scored = {r.name: table_row(r.metrics) for r in records if r.metrics is not None}
    return comparison_table(scored) if scored else None


def table1_section(records, table, out_dir):
    if table is None:
        raise cli.UserError("no run has test scores")
    scored = [r for r in records if r.metrics is not None]
    write_table(os.path.join(out_dir, f"table1_{TAG}.csv"), table, float_format=COMPARISON_FORMAT)
    caption = (f"Average precision (AP) per class, mAP, accuracy and mean per-class accuracy on the {TAG} split "
               f"({len(scored[0].scores)} images), as accuracy_eval.py computes them (also `table1_{TAG}.csv`).")
    sources = "\n".join(f"- {r.name}: scores {r.scored}." for r in scored)
    missing = [r.name for r in records if r.metrics is None]
    note = f"\n\nNo row for {', '.join(missing)} (see section 1)." if missing else ""
    return f"## 4 Table 1\n\n{markdown_table(table, caption)}\n{sources}{note}\n"


def confusion_section(records, out_dir):
    lines = ["## 5 Confusion matrices", "", f"Rows = true class, coloured by the share of its {TAG} images; "
             "each cell holds the count and that share.", ""]
    for r in records:
        if r.metrics is None:
            lines += [f"- {r.name}: no test scores (see section 1).", ""]
            continue
        name = f"confusion_{r.name}.png"
        save_confusion(r.metrics["confusion"], r.config["class_names"], os.path.join(out_dir, name),
                       f"{r.name}: {TAG}, accuracy {r.metrics['accuracy']:.4f}")
        lines += [image_link(r.name, name), ""]
    return "\n".join(lines)


def feature_images(best, names):
    """The first test image of each named class: [(class, relative path)]; classes without one are left out."""
    class_names = best.config["class_names"]
    labels = best.scores["label"].to_numpy()
    return [(name, best.scores["path"][int(np.argmax(labels == class_names.index(name)))])
            for name in names if name in class_names and (labels == class_names.index(name)).any()]


def eval_inputs(config, root, paths):
    """Images as the model's evaluation sees them (its size, mean/std), as one batch."""
    transform = build_transforms(config, train=False)
    return torch.stack([transform(load_image(os.path.join(root, rel))) for rel in paths])


def features_section(best, config, settings, out_dir, rt):
    """Figure 3 (feature maps of one image per class) and Table 2 (non-positive shares) of the best run."""
    model = prepare_model(model_from_checkpoint(best.weights, best.best), Runtime(rt.device, bf16=False))
    modules, chosen = names_of(config["modules"]), feature_images(best, names_of(config["feature_classes"]))
    data = {**best.config, "data_root": settings["root"], "loader": config["loader"],
            "cache_dir": config["cache_dir"]}
    lines = [f"## 6 Figure 3 and Table 2 (best run: {best.name})", "",
             f"The best run by validation mAP ({best.best_val_map:.4f}; the test split never chooses it)."]
    for folder in ("feature_maps", "feature_maps_visualization"):
        os.makedirs(os.path.join(out_dir, "features", folder), exist_ok=True)
    if chosen:
        images = eval_inputs(data, settings["root"], [rel for _, rel in chosen]).to(rt.device)
        with capture_outputs(model, modules) as outputs, torch.inference_mode():
            model(images)
        for i, (name, rel) in enumerate(chosen):
            save_feature_maps(image_maps(outputs, i), name, images[i], data["mean"], data["std"],
                              f"{best.name}: {TAG} image {rel} ({name})", os.path.join(out_dir, "features"),
                              config["channels"])
            lines += ["", f"Figure 3 ({name}, `{rel}`): rows = modules, columns = channels.", "",
                      image_link(f"Figure 3: {name}", f"features/feature_maps_visualization/{name}.png")]
    else:
        lines += ["", f"No {TAG} image of {config['feature_classes']} for Figure 3."]
    batches = eval_loader(data, split_csv(settings["splits_dir"], TAG), rt.device, config["batch_size"], log=print)
    stats = count_non_positive(model, batches, modules, config["stat_images"], Runtime(rt.device, bf16=False))
    header = (f"Table 2: average percentage of non-positive (<= 0) values per module over the first "
              f"{stats.images} {TAG} images (fp32).")
    return "\n".join(lines + ["", stats_table(stats.rows(modules), header)])


def pairs_lines(best, count):
    rows = [[p["true"], p["predicted"], p["count"], f"{p['share']:.1%}", p["reverse"]]
            for p in confused_pairs(best.metrics["confusion"], best.config["class_names"], count)]
    if not rows:
        return ["No test image is misclassified."]
    return [f"The most confused classes ({TAG} split):", "",
            markdown_rows(["true class", "predicted as", "images", "share of the true class", "the other way"],
                          rows)]


def gallery_items(best, mistakes, config, settings, rt):
    """(picture, Grad-CAM heat map of the predicted class, caption) of the first mistakes."""
    shown = mistakes.head(config["gallery"])
    class_names = best.config["class_names"]
    model = gradcam_model(best.weights, best.best, rt.device)
    images = eval_inputs(best.config, settings["root"], list(shown["path"])).to(rt.device)
    targets = torch.tensor([class_names.index(name) for name in shown["prediction"]])
    heat = grad_cam(model, images, targets)
    return [(picture(image, best.config["mean"], best.config["std"]), heat_map.numpy(),
             f"{row.path}\nlabel {row.label}\npredicted {row.prediction} {row.confidence:.3f}")
            for image, heat_map, row in zip(images, heat, shown.itertuples())]


def mistakes_section(best, config, settings, out_dir, rt):
    """Section 7: confused pairs, the gallery with Grad-CAM, mistakes.csv."""
    mistakes = mistakes_table(best.scores, best.config["class_names"])
    write_table(os.path.join(out_dir, "mistakes.csv"), mistakes, index=False, float_format="%.6f")
    lines = [f"## 7 Where the best run ({best.name}) goes wrong", "", *pairs_lines(best, config["pairs"]), "",
             f"All {len(mistakes)} misclassified {TAG} images, most confident first, with every class's score: "
             "[mistakes.csv](mistakes.csv)."]
    if config["gallery"] and len(mistakes):
        items = gallery_items(best, mistakes, config, settings, rt)
        title = (f"{best.name}: the {len(items)} most confident {TAG} mistakes; heat map = Grad-CAM ({LAYER}) "
                 "of the prediction")
        write_figure(os.path.join(out_dir, "gallery.png"), gallery_figure(items, title), dpi=150,
                     bbox_inches="tight")
        lines += ["", f"The {len(items)} mistakes made with the highest confidence: each image, and beside it "
                  f"the Grad-CAM heat map (captum's LayerGradCam on {LAYER}) of the predicted class over it.", "",
                  "![gallery](gallery.png)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The report

FIGURES = (
    ("## 2 Figure 1", "Training and validation loss and accuracy per epoch; the dotted line is the epoch of the "
     "saved weights (best validation mAP). Panels of one kind share their axes.", figure1, "figure1_curves.png"),
    ("## 3 Figure 2", "Test loss per epoch, recorded during training for this plot; it never chose the weights.",
     figure2, "figure2_test_loss.png"),
)


def section(heading, build, *args):
    """``build(*args)``, a section's text, or its heading and the sentence that says why it could not be made."""
    try:
        return build(*args)
    except cli.UserError as error:
        return f"{heading}\n\nNot available: {error}\n"


def split_info(settings):
    try:
        return read_split_info(settings["splits_dir"]), None
    except cli.UserError as error:
        return None, str(error)


def build_sections(records, config, settings, info, out_dir, rt):
    """Every section's Markdown, in order; returns (sections, Table 1, best run)."""
    sections = [runs_section(records, info, settings)]
    sections += [section(heading, figure_section, heading, text, make, records, out_dir, file_name)
                 for heading, text, make, file_name in FIGURES]
    table1 = table1_of(records)
    sections.append(section("## 4 Table 1", table1_section, records, table1, out_dir))
    sections.append(section("## 5 Confusion matrices", confusion_section, records, out_dir))
    best = best_run(records)
    for heading, build in (("## 6 Figure 3 and Table 2", features_section),
                           ("## 7 Where the best run goes wrong", mistakes_section)):
        sections.append(section(heading, build, best, config, settings, out_dir, rt) if best
                        else f"{heading}\n\nNot available: no run has test scores.\n")
    return sections, table1, best


def make_report(config, positionals):
    """report.md and its figures for report.py's settings (``config``) and the checkpoints folder it
    names (``positionals``); returns the Report."""
    folder = check_settings(config, positionals)
    ensure_folder(config["out_dir"], "out_dir", create=False)
    rt = runtime(config["device"], config["precision"])
    if rt.world > 1:
        raise cli.UserError("report.py runs as one process: start it with python, not torchrun.")
    records = [read_run(run_dir) for run_dir in run_dirs(folder)]
    info, no_split = split_info(config)
    settings = eval_settings(config, info or {"data_root": ""})
    check_output_folder(config["out_dir"], "out_dir", settings["root"])
    left_out = []
    if info:
        records, left_out = runs_of_this_split(records, settings, info)
        score_runs(records, settings, info, rt)
    else:
        for record in records:
            record.problems.append(f"no test scores: {no_split}")
    out_dir = config["out_dir"]
    sections, table1, best = build_sections(records, config, settings, info, out_dir, rt)
    sections[0] += left_out_lines(left_out, settings)
    title = (f"# Report on `{os.path.abspath(folder)}`\n\n"
             "Made by `python report.py`; its figures and tables lie beside this file.\n")
    path = os.path.join(out_dir, "report.md")
    write_text(path, "\n".join([title, *sections]))
    print(f"wrote {path} ({len(records)} run(s); best by validation mAP: {best.name if best else 'none'})")
    return Report(records, table1, best, path, sections)
