"""Evaluating saved weights and the comparison table over runs (what accuracy_eval.py runs).

``evaluate_checkpoints(settings, arguments)`` takes accuracy_eval.py's settings and the checkpoints
(files or folders) it names; see that script's docstring for the files it writes.
"""
import os

import pandas as pd

from scenes import cli
from scenes.files import ensure_folder, write_table, write_text
from scenes.runtime import runtime
from scenes.splitting import folder_listing
from scenes.scoring import (COMPARISON_FORMAT, check_all, comparison_table, data_tag, find_checkpoints,
                            markdown_table, run_names, save_scores, score_checkpoint, score_stem, table_row,
                            verify_scores, what_changed)
from scenes.transforms import eval_size


def evaluate_one(name, path, checkpoint, settings, rt, tag):
    """Evaluate one checkpoint, save its scores and confusion matrix, print its metrics; returns its table row."""
    config, metrics, scores = score_checkpoint(checkpoint, path, settings, rt)
    stem = save_scores(path, tag, name, metrics, scores, rt)
    per_class = pd.DataFrame({"AP": metrics["ap"], "accuracy": metrics["class_accuracy"]}).T
    print(f"\n{name} ({path}, epoch {config['epoch']}, {config['arch']} at {eval_size(config)}px): "
          f"{len(scores)} images\n{per_class.round(4).to_string()}\n"
          f"accuracy {metrics['accuracy']:.4f}  mean class accuracy {metrics['mean_class_accuracy']:.4f}  "
          f"mAP {metrics['map']:.4f}\nscores: {stem}_scores.csv  confusion matrix: {stem}_confusion.png")
    return table_row(metrics), len(scores)


def verify_one(name, path, checkpoint, settings, rt, tag):
    """Predict again and compare with the saved scores; returns the largest absolute difference and,
    when it is over the tolerance, what changed (the data, the model, or neither)."""
    _, _, scores = score_checkpoint(checkpoint, path, settings, rt)
    score_file = f"{score_stem(path, tag)}_scores.csv"
    difference = verify_scores(scores, score_file, settings["tolerance"])
    why = None if difference <= settings["tolerance"] else what_changed(score_file, path, scores)
    print(f"{name}: largest absolute score difference {difference:.3g} over {scores.shape[0]} images "
          f"x {scores.shape[1] - 2} classes (tolerance {settings['tolerance']:g}): "
          f"{'ok' if why is None else 'MISMATCH: ' + why}")
    return difference, why


def check_verified(verified, tolerance):
    failed = {name: why for name, (_, why) in verified.items() if why is not None}
    if failed:
        largest = max(verified[name][0] for name in failed)
        reasons = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise cli.UserError(f"the scores of {', '.join(failed)} differ from the saved ones by more than the "
                            f"tolerance {tolerance:g} (largest {largest:.3g}): {reasons}.")
    print(f"verified: all {len(verified)} reloaded model(s) reproduce their saved scores.")


def write_comparison(rows, out_dir, tag, caption):
    """The comparison table (the report's Table 1) as CSV and Markdown in ``out_dir``; returns it."""
    table = comparison_table(rows)
    base = os.path.join(out_dir, f"comparison_{tag}")
    write_table(f"{base}.csv", table, float_format=COMPARISON_FORMAT)
    write_text(f"{base}.md", markdown_table(table, caption))
    print(f"\n{caption}\n{table.round(4).to_string()}\nsaved {base}.csv and {base}.md")
    return table


def folder_settings(settings):
    """The settings that evaluate --folder: its listing as --csv, the folder as the data root."""
    if settings["csv"]:
        raise cli.UserError("give --csv or --folder, not both.")
    listing = folder_listing(settings["folder"], settings["out_dir"])
    print(f"listed the images of {settings['folder']} in {listing}")
    return {**settings, "csv": listing, "data_root": settings["folder"]}


def evaluate_checkpoints(settings, arguments):
    """Evaluate the checkpoints ``arguments`` name (returns the comparison table) or, with
    ``settings["verify"]``, check their saved scores (returns the largest absolute difference per run)."""
    ensure_folder(settings["out_dir"], "out_dir", create=False)
    paths = find_checkpoints(arguments)
    if settings["folder"]:
        settings = folder_settings(settings)
    rt = runtime(settings["device"], settings["precision"])
    if rt.world > 1:
        raise cli.UserError("accuracy_eval.py runs as one process: start it with python, not torchrun.")
    loaded = check_all(paths, settings)
    paths = list(loaded)
    tag = data_tag(settings)
    what = f"--folder {settings['folder']}" if settings["folder"] else f"--csv {settings['csv']}" if settings["csv"] \
        else f"the {settings['split']} split"
    print(f"evaluating {len(paths)} checkpoint(s) on {what} ({rt.device}, {'bf16' if rt.bf16 else 'fp32'})")
    named = list(zip(run_names(paths), paths))
    if settings["verify"]:
        verified = {name: verify_one(name, path, loaded[path], settings, rt, tag) for name, path in named}
        check_verified(verified, settings["tolerance"])
        return {name: difference for name, (difference, _) in verified.items()}
    rows = {}
    for name, path in named:
        rows[name], images = evaluate_one(name, path, loaded[path], settings, rt, tag)
    caption = (f"Average precision (AP) per class, mAP, accuracy and mean per-class accuracy on {what} "
               f"({images} images).")
    return write_comparison(rows, settings["out_dir"], tag, caption)
