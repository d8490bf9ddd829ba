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

import numpy as np
import pandas as pd
import torch

import cli
from checkpoint import check_class_names, load_checkpoint, model_from_checkpoint, write_atomically
from data_handling import SPLITS, read_split_info
from engine import evaluate, prepare_model, runtime
from metrics import softmax_scores
from NatureTypesDataset import build_loader, eval_size, read_split_csv

# --- settings ---
split = "test"  # test | validation (| train); ignored with --csv
splits_dir = "splits"  # folder with train.csv, validation.csv, test.csv (python main.py makes it)
data_root = ""  # folder of class sub-folders; "" = the one the split was made from (the checkpoint's with --csv)
csv = ""  # any CSV in the split format to evaluate instead of the split (paths relative to --data_root)
out_dir = "results"  # where comparison_<split>.csv and .md go
verify = False  # predict again and compare with the saved score files instead of evaluating
tolerance = 1e-4  # largest absolute difference of one softmax score that --verify accepts
batch_size = 256  # images per evaluation batch (the metrics do not depend on it)
loader = "cached"  # cached (decoded once into a uint8 file) | plain (PIL per item)
cache_dir = "cache"  # where the cached loader keeps decoded images
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # auto (bf16 where the hardware is fast at it) | bf16 | fp32
# --- end of settings ---

# Why a tolerance of 1e-4 is enough: on one machine, with one device and precision, the scores are
# reproduced exactly. Measured on a CPU with AMX (bf16 autocast): a tiny ResNet-18's softmax scores
# were bit-identical run to run, for eval batch sizes 3, 7 and 64, and for the cached and the plain
# loader. Scores are saved with 9 significant digits, which round-trips float32 exactly.
SCORE_FORMAT = "%.9g"
TABLE_METRICS = {"map": "mAP", "accuracy": "accuracy", "mean_class_accuracy": "mean class accuracy"}


def find_checkpoints(arguments):
    """Checkpoint files from the command line: files as given; a folder gives its runs' best.pth
    (else last.pth), or its own when it is a run folder itself."""
    if not arguments:
        raise cli.UserError("name one or more checkpoints (.pth) or a checkpoints folder, e.g. "
                            "python accuracy_eval.py checkpoints")
    paths = []
    for argument in arguments:
        if os.path.isfile(argument):
            paths.append(argument)
            continue
        if not os.path.isdir(argument):
            raise cli.UserError(f"checkpoint {argument!r} does not exist.")
        run_dirs = [argument] if any(os.path.isfile(os.path.join(argument, f)) for f in ("best.pth", "last.pth")) \
            else sorted(e.path for e in os.scandir(argument) if e.is_dir() and not e.name.startswith("."))
        found = [next((os.path.join(d, f) for f in ("best.pth", "last.pth") if os.path.isfile(os.path.join(d, f))),
                      None) for d in run_dirs]
        found = [path for path in found if path]
        if not found:
            raise cli.UserError(f"{argument!r} holds no best.pth or last.pth, neither itself nor in its sub-folders.")
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
            raise cli.UserError(f"data root {root!r} does not exist; pass --data_root=DIR with the CSV's images.")
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        check_class_names(class_names, folders, path, f"the data root {root!r}")
    else:
        info = read_split_info(settings["splits_dir"])
        check_class_names(class_names, info["class_names"], path, f"the split in {settings['splits_dir']!r}")
        csv_file = os.path.join(settings["splits_dir"], f"{settings['split']}.csv")
        root = settings["data_root"] or info["data_root"]
    return csv_file, root


def eval_config(checkpoint_config, settings, path):
    """The checkpoint's config with only where the data is and how it is loaded replaced."""
    csv_file, root = data_of(checkpoint_config, settings, path)
    return {**checkpoint_config, "data_root": root, "eval_csv": csv_file, "loader": settings["loader"],
            "cache_dir": settings["cache_dir"], "eval_batch_size": settings["batch_size"]}


def check_all(paths, settings):
    """Load every checkpoint and check its data before the first evaluation starts."""
    for path in paths:
        config = eval_config(load_checkpoint(path)["config"], settings, path)
        read_split_csv(config["eval_csv"], config["data_root"], config["class_names"])


def score_checkpoint(path, settings, rt):
    """Evaluate one checkpoint over the whole split: (config, metrics, scores table)."""
    checkpoint = load_checkpoint(path)
    config = {**eval_config(checkpoint["config"], settings, path), "epoch": checkpoint["epoch"]}
    class_names = config["class_names"]
    samples = read_split_csv(config["eval_csv"], config["data_root"], class_names)
    loader = build_loader(config, "eval", False, rt.device, csv_file=config["eval_csv"])
    model = prepare_model(model_from_checkpoint(checkpoint, path), rt)
    del checkpoint  # the optimizer state is not needed
    metrics, logits, targets = evaluate(model, loader, rt, class_names, config.get("tta_flip", False))
    scores = pd.DataFrame(softmax_scores(logits).numpy(), columns=class_names)
    scores.insert(0, "path", [rel for rel, _ in samples])
    scores.insert(1, "label", targets.numpy())
    return config, metrics, scores


def save_confusion(confusion, class_names, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    size = 1.0 + 0.7 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(confusion, cmap="Blues")
    for (row, column), count in np.ndenumerate(confusion):
        ax.text(column, row, str(count), ha="center", va="center",
                color="white" if count > confusion.max() / 2 else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def markdown_table(table, caption):
    header = f"| {table.index.name} | " + " | ".join(table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    rows = [f"| {run} | " + " | ".join(f"{value:.4f}" for value in row) + " |" for run, row in table.iterrows()]
    return "\n".join([caption, "", header, rule, *rows]) + "\n"


def verify_scores(scores, path, tolerance):
    """Largest absolute difference between fresh scores and the saved ones at ``path``."""
    if not os.path.isfile(path):
        raise cli.UserError(f"there are no saved scores at {path}; evaluate without --verify first to save them.")
    redo = "evaluate without --verify to save new scores"
    try:
        saved = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise cli.UserError(f"{path} is not a score file ({type(error).__name__}); {redo}.") from None
    class_names = list(scores.columns[2:])
    if list(saved.columns) != list(scores.columns):
        raise cli.UserError(f"{path} has columns {', '.join(map(str, saved.columns))}, not "
                            f"{', '.join(scores.columns)}; {redo}.")
    same_rows = len(saved) == len(scores) and all(
        (saved[column].astype(str).to_numpy() == scores[column].astype(str).to_numpy()).all()
        for column in ("path", "label"))
    if not same_rows:
        raise cli.UserError(f"{path} lists {len(saved)} images, not the same {len(scores)} images and labels in the "
                            f"same order as the data evaluated now; {redo}.")
    try:
        saved_scores = saved[class_names].to_numpy(np.float32)
    except ValueError:
        raise cli.UserError(f"{path} holds scores that are not numbers; {redo}.") from None
    difference = np.abs(saved_scores - scores[class_names].to_numpy(np.float32))
    return float(np.nan if np.isnan(difference).any() else difference.max(initial=0.0))


def main(argv=None):
    """Evaluate (returns the comparison table) or, with --verify, check the saved scores (returns the
    largest absolute difference per run)."""
    settings, _, arguments = cli.parse(__file__, __doc__, argv, positional=True)
    if settings["split"] not in SPLITS:
        raise cli.UserError(f"--split takes {', '.join(SPLITS)}, not {settings['split']!r}.")
    if settings["batch_size"] < 1 or not settings["tolerance"] >= 0:
        raise cli.UserError("--batch_size must be at least 1 and --tolerance at least 0.")
    paths = find_checkpoints(arguments)
    names = run_names(paths)
    rt = runtime(settings["device"], settings["precision"])
    if rt.world > 1:
        raise cli.UserError("accuracy_eval.py runs as one process: start it with python, not torchrun.")
    check_all(paths, settings)
    tag = data_tag(settings)
    what = f"--csv {settings['csv']}" if settings["csv"] else f"the {settings['split']} split"
    print(f"evaluating {len(paths)} checkpoint(s) on {what} ({rt.device}, {'bf16' if rt.bf16 else 'fp32'})")
    rows, differences = {}, {}
    for name, path in zip(names, paths):
        config, metrics, scores = score_checkpoint(path, settings, rt)
        stem = os.path.join(os.path.dirname(path), f"{os.path.splitext(os.path.basename(path))[0]}_{tag}")
        if settings["verify"]:
            differences[name] = verify_scores(scores, f"{stem}_scores.csv", settings["tolerance"])
            verdict = "ok" if differences[name] <= settings["tolerance"] else "MISMATCH"
            print(f"{name}: largest absolute score difference {differences[name]:.3g} over {scores.shape[0]} images "
                  f"x {scores.shape[1] - 2} classes (tolerance {settings['tolerance']:g}): {verdict}")
            continue
        write_atomically(f"{stem}_scores.csv", lambda f: scores.to_csv(f, index=False, float_format=SCORE_FORMAT))
        save_confusion(metrics["confusion"], config["class_names"], f"{stem}_confusion.png",
                       f"{name}: {tag}, accuracy {metrics['accuracy']:.4f}")
        per_class = pd.DataFrame({"AP": metrics["ap"], "accuracy": metrics["class_accuracy"]}).T
        print(f"\n{name} ({path}, epoch {config['epoch']}, {config['arch']} at {eval_size(config)}px): "
              f"{len(scores)} images\n{per_class.round(4).to_string()}\n"
              f"accuracy {metrics['accuracy']:.4f}  mean class accuracy {metrics['mean_class_accuracy']:.4f}  "
              f"mAP {metrics['map']:.4f}\nscores: {stem}_scores.csv  confusion matrix: {stem}_confusion.png")
        rows[name] = {**metrics["ap"], **{label: metrics[key] for key, label in TABLE_METRICS.items()}}
    if settings["verify"]:
        failed = [name for name, difference in differences.items() if not difference <= settings["tolerance"]]
        if failed:
            largest = max(differences[name] for name in failed)
            raise cli.UserError(f"the scores of {', '.join(failed)} differ from the saved ones by more than the "
                                f"tolerance {settings['tolerance']:g} (largest {largest:.3g}): "
                                "the reloaded model does not reproduce them (verify with the --device and --precision "
                                "the scores were saved with).")
        print(f"verified: all {len(differences)} reloaded model(s) reproduce their saved scores.")
        return differences
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    os.makedirs(settings["out_dir"], exist_ok=True)
    base = os.path.join(settings["out_dir"], f"comparison_{tag}")
    caption = (f"Average precision (AP) per class, mAP, accuracy and mean per-class accuracy on {what} "
               f"({len(scores)} images).")
    write_atomically(f"{base}.csv", lambda f: table.to_csv(f, float_format="%.6f"))
    write_atomically(f"{base}.md", lambda f: f.write(markdown_table(table, caption).encode("utf-8")))
    print(f"\n{caption}\n{table.round(4).to_string()}\nsaved {base}.csv and {base}.md")
    return table


if __name__ == "__main__":
    cli.run(main)
