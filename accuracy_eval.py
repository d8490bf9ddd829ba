"""Evaluate saved weights: per-class AP, mAP and accuracy, one comparison table, a reproducibility check.

    python accuracy_eval.py checkpoints/sgd_lr0.01/best.pth checkpoints/pretrained/best.pth
    python accuracy_eval.py checkpoints                        # every run's best.pth (else its last.pth)
    python accuracy_eval.py checkpoints --split=validation
    python accuracy_eval.py checkpoints --verify               # predict again, compare with the saved scores
    python accuracy_eval.py run/best.pth --csv=other/test.csv --data_root=other   # any split-format CSV
    python accuracy_eval.py run/best.pth --folder=seg_test/seg_test               # any labelled folder

Everything about a model (architecture, class names, image size, mean/std, flip TTA) comes from its
checkpoint. Metrics are computed once over the whole split: per-class average precision
(one-vs-rest on the softmax scores, as scikit-learn's average_precision_score), mAP, per-class
accuracy, mean per-class accuracy and accuracy. Files written:

- next to each checkpoint: <stem>_<split>_scores.csv (per image: path relative to the data root,
  label, one softmax score per class) and <stem>_<split>_confusion.png;
- in --out_dir: comparison_<split>.csv and .md, one row per run, columns = the classes' AP, mAP,
  accuracy and mean class accuracy (the report's Table 1).

With --csv the file names use "<csv folder>-<csv name>" instead of the split name; --folder lists the
folder's images as folder-<name>.csv in --out_dir (classes matched to the checkpoint's by name) and
evaluates that CSV, its file names using "folder-<name>". A checkpoint is scored only on its own
split or on images it was not trained on (by content); any other is skipped, named on stderr.
--verify writes nothing: it reloads each checkpoint, predicts again and compares with its saved
score file; a score further than --tolerance from the saved one (or a score file that is missing
or lists other images) is an error. Verify with the --device and --precision the scores were made
with: bfloat16 and float32 scores differ by more than the tolerance.
"""
from scenes import cli
from scenes.comparison import evaluate_checkpoints

# --- settings ---
split = "test"  # the split to evaluate; ignored with --csv [one of test, validation, train]
splits_dir = "splits"  # folder with train.csv, validation.csv, test.csv (python main.py makes it)
data_root = ""  # folder of class sub-folders; "" = the one the split was made from (the checkpoint's with --csv)
csv = ""  # any CSV in the split format to evaluate instead of the split (paths relative to --data_root)
folder = ""  # a folder of class sub-folders to evaluate instead of the split (Kaggle's seg_test/seg_test)
out_dir = "results"  # where comparison_<split>.csv and .md go
verify = False  # predict again and compare with the saved score files instead of evaluating
tolerance = 1e-4  # largest absolute difference of one softmax score that --verify accepts [>= 0]
batch_size = 256  # images per evaluation batch (the metrics do not depend on it) [>= 1]
loader = "cached"  # cached: decoded once into a uint8 file; plain: PIL per item [one of cached, plain]
cache_dir = "cache"  # where the cached loader keeps decoded images
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # auto: bf16 where the hardware is fast at it [one of auto, bf16, fp32]
# --- end of settings ---


def main(argv=None):
    settings, _, arguments = cli.parse(__file__, __doc__, argv, positional=True)
    return evaluate_checkpoints(settings, arguments)


if __name__ == "__main__":
    cli.run(main)
