"""Evaluate saved weights: per-class AP, mAP and accuracy, one comparison table, a reproducibility check.

    python accuracy_eval.py checkpoints/sgd_lr0.01/best.pth checkpoints/pretrained/best.pth
    python accuracy_eval.py checkpoints                        # every run's best.pth (else its last.pth)
    python accuracy_eval.py checkpoints --split=validation
    python accuracy_eval.py checkpoints --verify               # predict again, compare with the saved scores
    python accuracy_eval.py run/best.pth --csv=other/test.csv --data_root=other   # any labelled folder

Everything about a model (architecture, class names, image size, mean/std, flip TTA) comes from its
checkpoint. Metrics are computed once over the whole split: per-class average precision
(one-vs-rest on the softmax scores, as scikit-learn's average_precision_score), mAP, per-class
accuracy, mean per-class accuracy and accuracy. Files written:

- next to each checkpoint: <stem>_<split>_scores.csv (per image: path relative to the data root,
  label, one softmax score per class) and <stem>_<split>_confusion.png;
- in --out_dir: comparison_<split>.csv and .md, one row per run, columns = the classes' AP, mAP,
  accuracy and mean class accuracy (the report's Table 1).

With --csv the file names use "<csv folder>-<csv name>" instead of the split name.
--verify writes nothing: it reloads each checkpoint, predicts again and compares with its saved
score file; a score further than --tolerance from the saved one (or a score file that is missing
or lists other images) is an error. Verify with the --device and --precision the scores were made
with: bfloat16 and float32 scores differ by more than the tolerance.
"""
import os

import pandas as pd

from scenes import cli
from scenes.files import ensure_folder, write_table, write_text
from scenes.runtime import runtime
from scenes.scoring import (COMPARISON_FORMAT, check_all, comparison_table, data_tag, find_checkpoints,
                            markdown_table, run_names, save_scores, score_checkpoint, score_stem, table_row,
                            verify_scores)
from scenes.transforms import eval_size

# --- settings ---
split = "test"  # the split to evaluate; ignored with --csv [one of test, validation, train]
splits_dir = "splits"  # folder with train.csv, validation.csv, test.csv (python main.py makes it)
data_root = ""  # folder of class sub-folders; "" = the one the split was made from (the checkpoint's with --csv)
csv = ""  # any CSV in the split format to evaluate instead of the split (paths relative to --data_root)
out_dir = "results"  # where comparison_<split>.csv and .md go
verify = False  # predict again and compare with the saved score files instead of evaluating
tolerance = 1e-4  # largest absolute difference of one softmax score that --verify accepts [>= 0]
batch_size = 256  # images per evaluation batch (the metrics do not depend on it) [>= 1]
loader = "cached"  # cached: decoded once into a uint8 file; plain: PIL per item [one of cached, plain]
cache_dir = "cache"  # where the cached loader keeps decoded images
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # auto: bf16 where the hardware is fast at it [one of auto, bf16, fp32]
# --- end of settings ---


def evaluate_one(name, path, checkpoint, settings, rt, tag):
    """Evaluate one checkpoint, save its scores and confusion matrix, print its metrics; returns its table row."""
    config, metrics, scores = score_checkpoint(checkpoint, path, settings, rt)
    stem = save_scores(path, tag, name, metrics, scores)
    per_class = pd.DataFrame({"AP": metrics["ap"], "accuracy": metrics["class_accuracy"]}).T
    print(f"\n{name} ({path}, epoch {config['epoch']}, {config['arch']} at {eval_size(config)}px): "
          f"{len(scores)} images\n{per_class.round(4).to_string()}\n"
          f"accuracy {metrics['accuracy']:.4f}  mean class accuracy {metrics['mean_class_accuracy']:.4f}  "
          f"mAP {metrics['map']:.4f}\nscores: {stem}_scores.csv  confusion matrix: {stem}_confusion.png")
    return table_row(metrics), len(scores)


def verify_one(name, path, checkpoint, settings, rt, tag):
    """Predict again and compare with the saved scores; returns the largest absolute difference."""
    _, _, scores = score_checkpoint(checkpoint, path, settings, rt)
    difference = verify_scores(scores, f"{score_stem(path, tag)}_scores.csv", settings["tolerance"])
    verdict = "ok" if difference <= settings["tolerance"] else "MISMATCH"
    print(f"{name}: largest absolute score difference {difference:.3g} over {scores.shape[0]} images "
          f"x {scores.shape[1] - 2} classes (tolerance {settings['tolerance']:g}): {verdict}")
    return difference


def check_verified(differences, tolerance):
    failed = [name for name, difference in differences.items() if not difference <= tolerance]
    if failed:
        largest = max(differences[name] for name in failed)
        raise cli.UserError(f"the scores of {', '.join(failed)} differ from the saved ones by more than the "
                            f"tolerance {tolerance:g} (largest {largest:.3g}): the reloaded model does not "
                            "reproduce them (verify with the --device and --precision the scores were saved with).")
    print(f"verified: all {len(differences)} reloaded model(s) reproduce their saved scores.")


def write_comparison(rows, out_dir, tag, caption):
    """The comparison table (the report's Table 1) as CSV and Markdown in ``out_dir``; returns it."""
    table = comparison_table(rows)
    base = os.path.join(out_dir, f"comparison_{tag}")
    write_table(f"{base}.csv", table, float_format=COMPARISON_FORMAT)
    write_text(f"{base}.md", markdown_table(table, caption))
    print(f"\n{caption}\n{table.round(4).to_string()}\nsaved {base}.csv and {base}.md")
    return table


def main(argv=None):
    """Evaluate (returns the comparison table) or, with --verify, check the saved scores (returns the
    largest absolute difference per run)."""
    settings, _, arguments = cli.parse(__file__, __doc__, argv, positional=True)
    ensure_folder(settings["out_dir"], "out_dir", create=False)
    paths = find_checkpoints(arguments)
    rt = runtime(settings["device"], settings["precision"])
    if rt.world > 1:
        raise cli.UserError("accuracy_eval.py runs as one process: start it with python, not torchrun.")
    loaded = check_all(paths, settings)
    tag = data_tag(settings)
    what = f"--csv {settings['csv']}" if settings["csv"] else f"the {settings['split']} split"
    print(f"evaluating {len(paths)} checkpoint(s) on {what} ({rt.device}, {'bf16' if rt.bf16 else 'fp32'})")
    named = list(zip(run_names(paths), paths))
    if settings["verify"]:
        differences = {name: verify_one(name, path, loaded[path], settings, rt, tag) for name, path in named}
        check_verified(differences, settings["tolerance"])
        return differences
    rows = {}
    for name, path in named:
        rows[name], images = evaluate_one(name, path, loaded[path], settings, rt, tag)
    caption = (f"Average precision (AP) per class, mAP, accuracy and mean per-class accuracy on {what} "
               f"({images} images).")
    return write_comparison(rows, settings["out_dir"], tag, caption)


if __name__ == "__main__":
    cli.run(main)
