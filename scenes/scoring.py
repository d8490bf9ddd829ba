"""Scores and metrics of saved weights over a whole split: what accuracy_eval.py and report.py share.

Score files (``<stem>_<split>_scores.csv`` next to a checkpoint: per image the path relative to
the data root, the label and one softmax score per class) are written with 9 significant digits,
which round-trips float32 exactly, and compared by ``verify_scores``.
"""
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scenes.checkpoints import check_class_names, load_checkpoint, model_from_checkpoint, slim, verifiable
from scenes.cli import UserError
from scenes.evaluation import evaluate
from scenes.figures import save_confusion
from scenes.files import sub_folders, write_json, write_table
from scenes.loaders import eval_loader
from scenes.metrics import score_metrics, softmax_scores
from scenes.provenance import overlap_problem, split_problem, unverified_note
from scenes.runtime import prepare_for_steps
from scenes.splits import (Split, class_folders, content_digests, file_sha256, read_split, read_split_csv,
                           read_split_info, split_csv, split_digest)

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
    """Names what was evaluated in file names: the split, "folder-<name>" for --folder, or
    "<csv folder>-<csv name>" for --csv (never a split's name, so a split's scores are never replaced)."""
    if settings.get("folder"):
        return f"folder-{os.path.basename(os.path.normpath(settings['folder']))}"
    if not settings["csv"]:
        return settings["split"]
    path = os.path.abspath(settings["csv"])
    return f"{os.path.basename(os.path.dirname(path))}-{os.path.splitext(os.path.basename(path))[0]}"


@dataclass
class Data:
    """The images a command scores: the CSV and root they are read from, their rows, each image's
    sha256 (checked), and the split they belong to when they are a split's (``splits.Split``)."""
    csv_file: str
    root: str
    rows: list
    contents: dict
    split: Split = None


def data_of(checkpoint_config, settings, path):
    """The ``Data`` to evaluate a checkpoint on, checked against its class names."""
    class_names = checkpoint_config["class_names"]
    if settings["csv"]:
        root = settings["data_root"] or checkpoint_config["data_root"]
        if not os.path.isdir(root):
            raise UserError(f"data root {root!r} does not exist; pass --data_root=DIR with the CSV's images.")
        check_class_names(class_names, class_folders(root), path, f"the data root {root!r}")
        return csv_data(settings["csv"], root, tuple(class_names))
    info = read_split_info(settings["splits_dir"])
    check_class_names(class_names, info["class_names"], path, f"the split in {settings['splits_dir']!r}")
    return split_data(settings["splits_dir"], settings["split"], settings["data_root"] or info["data_root"],
                      tuple(class_names))


def csv_data(csv_file, root, class_names):
    rows = read_split_csv(csv_file, root, list(class_names))
    return Data(csv_file, root, rows, content_digests(root, [rel for rel, _ in rows]))


def split_data(splits_dir, split, root, class_names):
    whole = read_split(splits_dir, root, list(class_names), verify=[split])
    rows = whole.rows[split]
    return Data(split_csv(splits_dir, split), root, rows, {rel: whole.info["sha256"][rel] for rel, _ in rows},
                whole)


def problem_of(checkpoint, data, settings):
    """Why a checkpoint may not be scored on ``data`` (see ``scenes.provenance``), or None."""
    if data.split is not None:
        return split_problem(checkpoint, data.split, settings["splits_dir"])
    return overlap_problem(checkpoint, data.contents)


def eval_config(checkpoint_config, settings, path):
    """The checkpoint's config with only where the data is and how it is loaded replaced."""
    data = data_of(checkpoint_config, settings, path)
    return {**checkpoint_config, "data_root": data.root, "eval_csv": data.csv_file, "loader": settings["loader"],
            "cache_dir": settings["cache_dir"], "eval_batch_size": settings["batch_size"]}, data


def check_all(paths, settings, log=print):
    """Load every checkpoint once and check its data before the first evaluation starts; returns
    ``{path: slim(checkpoint)}`` of those that may be scored on it. The others are named on stderr
    with the reason and skipped; none left is a UserError."""
    loaded, skipped = {}, []
    for path in paths:
        checkpoint = slim(load_checkpoint(path))
        _, data = eval_config(checkpoint["config"], settings, path)
        problem = problem_of(checkpoint, data, settings)
        if problem:
            skipped.append(f"{path} is not scored: {problem}")
            continue
        if not verifiable(checkpoint):
            print(unverified_note(path), file=sys.stderr)
        loaded[path] = checkpoint
    if not loaded:
        raise UserError("; ".join(skipped) + ".")
    for reason in skipped:
        print(f"skipped: {reason}.", file=sys.stderr)
    return loaded


def score_checkpoint(checkpoint, path, settings, rt):
    """Evaluate one loaded checkpoint (from ``path``) over the whole split: (config, metrics, scores)."""
    config, data = eval_config(checkpoint["config"], settings, path)
    config["epoch"] = checkpoint["epoch"]
    class_names, samples = config["class_names"], data.rows
    loader = eval_loader(config, config["eval_csv"], rt.device, config["eval_batch_size"])
    model = prepare_for_steps(model_from_checkpoint(checkpoint, path), rt)
    metrics, logits, targets = evaluate(model, loader, rt, class_names, config.get("tta_flip", False))
    scores = pd.DataFrame(softmax_scores(logits).numpy(), columns=class_names)
    scores.insert(0, "path", [rel for rel, _ in samples])
    scores.insert(1, "label", targets.numpy())
    scores.attrs["data_sha256"] = split_digest(data.rows, data.contents)
    return config, metrics, scores


def score_stem(path, tag):
    """Where a checkpoint's score file and confusion matrix go: beside it, named by its stem and the data."""
    return os.path.join(os.path.dirname(path), f"{os.path.splitext(os.path.basename(path))[0]}_{tag}")


def save_scores(path, tag, name, metrics, scores, rt):
    """A checkpoint's score file, what it was made from, and its confusion matrix beside it; returns
    their common stem."""
    stem = score_stem(path, tag)
    write_table(f"{stem}_scores.csv", scores, index=False, float_format=SCORE_FORMAT)
    write_provenance(f"{stem}_scores.csv", path, scores.attrs["data_sha256"], rt)
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


def provenance_file(score_file):
    return score_file[:-len(".csv")] + ".json"


def write_provenance(score_file, checkpoint_path, data_sha256, rt):
    """Beside a score file: what it is about (the checkpoint's and the data's sha256) and where it was made."""
    write_json(provenance_file(score_file), {"scores_sha256": file_sha256(score_file),
                                             "checkpoint_sha256": file_sha256(checkpoint_path),
                                             "data_sha256": data_sha256, "device": str(rt.device),
                                             "precision": "bf16" if rt.bf16 else "fp32"})


def read_provenance(score_file):
    try:
        with open(provenance_file(score_file), encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def scores_problem(saved, class_names):
    """Why a score table cannot be softmax scores of ``class_names``, or None."""
    if list(saved.columns) != ["path", "label", *class_names]:
        return "its columns are not path, label and one per class"
    try:
        array = saved[list(class_names)].to_numpy(np.float64)
    except ValueError:
        return "it holds scores that are not numbers"
    if not np.isfinite(array).all() or (array < 0).any() or (array > 1).any():
        return "it holds scores outside 0..1"
    if not np.allclose(array.sum(axis=1), 1.0, atol=1e-5):
        return "its rows do not sum to 1"
    return None


def saved_scores(path, tag, data_sha256, samples, class_names, log=print):
    """The saved score table of a checkpoint if it can be trusted, else None (to be made again).

    Trusted: written from this checkpoint (its sha256) over this data (``data_sha256``: the rows and
    their images' content), listing ``samples`` ([(relative path, label)]) in their order, with one
    softmax score per class summing to 1 on every row, and unchanged since (its own sha256).
    """
    score_file = f"{score_stem(path, tag)}_scores.csv"
    made_from = read_provenance(score_file)
    if made_from.get("data_sha256") != data_sha256 or made_from.get("checkpoint_sha256") != file_sha256(path):
        return None  # none saved, or saved for other data or weights
    try:
        saved = read_scores(score_file, "")
    except UserError:
        saved = None
    expected = pd.DataFrame({"path": [rel for rel, _ in samples], "label": [label for _, label in samples]})
    problem = "it does not parse" if saved is None else scores_problem(saved, class_names) or \
        ("it lists other images" if not same_images(saved, expected) else
         "it was changed after it was saved" if made_from.get("scores_sha256") != file_sha256(score_file) else None)
    if problem:
        log(f"{score_file} is not as it was saved ({problem}); scoring again.")
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


def what_changed(score_file, checkpoint_path, scores):
    """Why fresh scores may differ from the saved ones: the data, the model, or neither (a sentence)."""
    made_from = read_provenance(score_file)
    if not made_from:
        return f"{provenance_file(score_file)} is missing, so it is not known what the scores were made from"
    changed = [what for what, now, then in (
        ("the images (their content or labels)", scores.attrs["data_sha256"], made_from.get("data_sha256")),
        ("the checkpoint", file_sha256(checkpoint_path), made_from.get("checkpoint_sha256"))) if now != then]
    if changed:
        return f"{' and '.join(changed)} changed since the scores were saved"
    return (f"the data and the checkpoint are the ones scored, so the model does not reproduce them here (saved "
            f"with {made_from.get('device')}, {made_from.get('precision')})")
