"""Scores and metrics of saved weights over a whole split: what accuracy_eval.py and report.py share.

Score files (``<stem>_<split>_scores.csv`` next to a checkpoint: per image the path relative to
the data root, the label and one softmax score per class) are written with 9 significant digits,
which round-trips float32 exactly, and compared by ``verify_scores``.
"""
import os

import numpy as np
import pandas as pd

from scenes.checkpoints import check_class_names, load_checkpoint, model_from_checkpoint, slim
from scenes.cli import UserError
from scenes.evaluation import evaluate
from scenes.figures import save_confusion
from scenes.files import sub_folders, write_table
from scenes.loaders import eval_loader
from scenes.metrics import score_metrics, softmax_scores
from scenes.runtime import prepare_model
from scenes.splits import class_folders, read_split_csv, read_split_info, split_csv

SCORE_FORMAT = "%.9g"  # 9 significant digits round-trip float32 exactly
COMPARISON_FORMAT = "%.6f"
TABLE_METRICS = {"map": "mAP", "accuracy": "accuracy", "mean_class_accuracy": "mean class accuracy"}


def find_checkpoints(arguments):
    """Checkpoint files from the command line: files as given; a folder gives its runs' best.pth
    (else last.pth), or its own when it is a run folder itself."""
    if not arguments:
        raise UserError("name one or more checkpoints (.pth) or a checkpoints folder, e.g. "
                        "python accuracy_eval.py checkpoints")
    paths = []
    for argument in arguments:
        if os.path.isfile(argument):
            paths.append(argument)
            continue
        if not os.path.isdir(argument):
            raise UserError(f"checkpoint {argument!r} does not exist.")
        run_dirs = [argument] if any(os.path.isfile(os.path.join(argument, f)) for f in ("best.pth", "last.pth")) \
            else sub_folders(argument)
        found = [next((os.path.join(d, f) for f in ("best.pth", "last.pth") if os.path.isfile(os.path.join(d, f))),
                      None) for d in run_dirs]
        found = [path for path in found if path]
        if not found:
            raise UserError(f"{argument!r} holds no best.pth or last.pth, neither itself nor in its sub-folders.")
        paths += found
    seen = set()  # each file once, at its first mention
    return [path for path in paths if not (os.path.abspath(path) in seen or seen.add(os.path.abspath(path)))]


def run_names(paths):
    """Row names: the run folder, or folder/stem when one folder gives several checkpoints, else the path."""
    def clashes(names):
        return {name for name in names if names.count(name) > 1}

    names = [os.path.basename(os.path.dirname(os.path.abspath(path))) for path in paths]
    names = [f"{name}/{os.path.splitext(os.path.basename(path))[0]}" if name in clashes(names) else name
             for name, path in zip(names, paths)]
    return [path if name in clashes(names) else name for name, path in zip(names, paths)]


def data_tag(settings):
    """Names what was evaluated in file names: the split, or "<csv folder>-<csv name>" for --csv."""
    if not settings["csv"]:
        return settings["split"]
    path = os.path.abspath(settings["csv"])
    return f"{os.path.basename(os.path.dirname(path))}-{os.path.splitext(os.path.basename(path))[0]}"


def data_of(checkpoint_config, settings, path):
    """(csv_file, data_root) to evaluate, checked against the checkpoint's class names."""
    class_names = checkpoint_config["class_names"]
    if settings["csv"]:
        csv_file, root = settings["csv"], settings["data_root"] or checkpoint_config["data_root"]
        if not os.path.isdir(root):
            raise UserError(f"data root {root!r} does not exist; pass --data_root=DIR with the CSV's images.")
        check_class_names(class_names, class_folders(root), path, f"the data root {root!r}")
    else:
        info = read_split_info(settings["splits_dir"])
        check_class_names(class_names, info["class_names"], path, f"the split in {settings['splits_dir']!r}")
        csv_file = split_csv(settings["splits_dir"], settings["split"])
        root = settings["data_root"] or info["data_root"]
    return csv_file, root


def eval_config(checkpoint_config, settings, path):
    """The checkpoint's config with only where the data is and how it is loaded replaced."""
    csv_file, root = data_of(checkpoint_config, settings, path)
    return {**checkpoint_config, "data_root": root, "eval_csv": csv_file, "loader": settings["loader"],
            "cache_dir": settings["cache_dir"], "eval_batch_size": settings["batch_size"]}


def check_all(paths, settings):
    """Load every checkpoint once and check its data before the first evaluation starts; returns
    ``{path: slim(checkpoint)}``."""
    loaded = {}
    for path in paths:
        loaded[path] = slim(load_checkpoint(path))
        config = eval_config(loaded[path]["config"], settings, path)
        read_split_csv(config["eval_csv"], config["data_root"], config["class_names"])
    return loaded


def score_checkpoint(checkpoint, path, settings, rt):
    """Evaluate one loaded checkpoint (from ``path``) over the whole split: (config, metrics, scores)."""
    config = {**eval_config(checkpoint["config"], settings, path), "epoch": checkpoint["epoch"]}
    class_names = config["class_names"]
    samples = read_split_csv(config["eval_csv"], config["data_root"], class_names)
    loader = eval_loader(config, config["eval_csv"], rt.device, config["eval_batch_size"])
    model = prepare_model(model_from_checkpoint(checkpoint, path), rt)
    metrics, logits, targets = evaluate(model, loader, rt, class_names, config.get("tta_flip", False))
    scores = pd.DataFrame(softmax_scores(logits).numpy(), columns=class_names)
    scores.insert(0, "path", [rel for rel, _ in samples])
    scores.insert(1, "label", targets.numpy())
    return config, metrics, scores


def score_stem(path, tag):
    """Where a checkpoint's score file and confusion matrix go: beside it, named by its stem and the data."""
    return os.path.join(os.path.dirname(path), f"{os.path.splitext(os.path.basename(path))[0]}_{tag}")


def save_scores(path, tag, name, metrics, scores):
    """A checkpoint's score file and confusion matrix beside it; returns their common stem."""
    stem = score_stem(path, tag)
    write_table(f"{stem}_scores.csv", scores, index=False, float_format=SCORE_FORMAT)
    save_confusion(metrics["confusion"], list(scores.columns[2:]), f"{stem}_confusion.png",
                   f"{name}: {tag}, accuracy {metrics['accuracy']:.4f}")
    return stem


def table_row(metrics):
    """One run's row of the comparison table (the report's Table 1): AP per class, mAP, accuracies."""
    return {**metrics["ap"], **{label: metrics[key] for key, label in TABLE_METRICS.items()}}


def comparison_table(rows):
    """The comparison table of ``{run: table_row(...)}``, rows = runs."""
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    return table


def markdown_cell(value):
    """A Markdown table cell's text: a ``|`` would end the cell and a line break the row."""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(table, caption):
    header = f"| {table.index.name} | " + " | ".join(map(markdown_cell, table.columns)) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    rows = [f"| {markdown_cell(run)} | " + " | ".join(f"{value:.4f}" for value in row) + " |"
            for run, row in table.iterrows()]
    return "\n".join([caption, "", header, rule, *rows]) + "\n"


def read_scores(path, redo):
    """A score file as a DataFrame; a file that does not parse is a UserError ending with ``redo``."""
    try:
        return pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not a score file ({type(error).__name__}); {redo}.") from None


def scores_array(scores, class_names, path, redo):
    """The class columns of a score table as float32 (N, C), as they were saved."""
    try:
        return scores[list(class_names)].to_numpy(np.float32)
    except ValueError:
        raise UserError(f"{path} holds scores that are not numbers; {redo}.") from None


def metrics_of_scores(scores, class_names, path="the scores"):
    """``score_metrics`` of a score table (saved or fresh): the numbers accuracy_eval.py reports."""
    array = scores_array(scores, class_names, path, "evaluate again")
    return score_metrics(array, scores["label"].to_numpy(), class_names)


def same_images(saved, scores):
    """Whether two score tables list the same images and labels in the same order."""
    return len(saved) == len(scores) and all(
        (saved[column].astype(str).to_numpy() == scores[column].astype(str).to_numpy()).all()
        for column in ("path", "label"))


def saved_scores(path, tag, samples, class_names):
    """The saved score table of a checkpoint if it is up to date, else None.

    Up to date: written after the checkpoint, with the columns of its classes, over ``samples``
    ([(relative path, label)], the data evaluated now) in their order.
    """
    score_file = f"{score_stem(path, tag)}_scores.csv"
    if not os.path.isfile(score_file) or os.path.getmtime(score_file) < os.path.getmtime(path):
        return None
    saved = read_scores(score_file, "delete it to evaluate again")
    expected = pd.DataFrame({"path": [rel for rel, _ in samples], "label": [label for _, label in samples]})
    if list(saved.columns) != ["path", "label", *class_names] or not same_images(saved, expected):
        return None
    return saved


def verify_scores(scores, path, tolerance):
    """Largest absolute difference between fresh scores and the saved ones at ``path``."""
    if not os.path.isfile(path):
        raise UserError(f"there are no saved scores at {path}; evaluate without --verify first to save them.")
    redo = "evaluate without --verify to save new scores"
    saved = read_scores(path, redo)
    class_names = list(scores.columns[2:])
    if list(saved.columns) != list(scores.columns):
        raise UserError(f"{path} has columns {', '.join(map(str, saved.columns))}, not "
                        f"{', '.join(scores.columns)}; {redo}.")
    if not same_images(saved, scores):
        raise UserError(f"{path} lists {len(saved)} images, not the same {len(scores)} images and labels in the "
                        f"same order as the data evaluated now; {redo}.")
    difference = np.abs(scores_array(saved, class_names, path, redo) - scores[class_names].to_numpy(np.float32))
    return float(np.nan if np.isnan(difference).any() else difference.max(initial=0.0))
