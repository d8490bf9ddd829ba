"""The whole pipeline in one command: split, train, evaluate, feature maps, the report.

    python main.py                      # real data in data/ if present, else a generated DEMO set
    python main.py --steps=split        # only build splits/train.csv, validation.csv, test.csv
    python main.py --data_root=/path/to/intel-scenes --steps=split,train
    python main.py --steps=report       # only the report over every run in checkpoints/

With no class folders in data/, a small synthetic six-class demo set is generated in demo_data/
and trained briefly (a few epochs at 64px), so a fresh machine runs everything with no download.
With real data the steps run with train.py's defaults; each step is also its own script. The last
step writes results/report/report.md over every run in checkpoints/ (report.py).
"""
import os

import accuracy_eval
import data_handling
import feature_map
import report
import train
from scenes import cli
from scenes.demo import make_demo_dataset
from scenes.splits import class_folders

# --- settings ---
data_root = ""  # folder of class sub-folders; "" = data/ if it has any, else the generated demo set
splits_dir = "splits"  # where train.csv, validation.csv, test.csv and split_info.json go
val_size = 0.1761183515322297  # validation images: a fraction (< 1) or a count (3000 of 17034) [>= 0]
test_size = 0.11741223435482  # test images: a fraction (< 1) or a count (2000 of 17034) [>= 0]
seed = 0  # seeds the split [>= 0]
steps = "split,train,evaluate,features,report"  # comma-separated steps to run, in this order
restart = False  # the train step starts its run over (needed after the split was made again over other images)
# --- end of settings ---

STEPS = ("split", "train", "evaluate", "features", "report")
SPLIT_KEYS = ("val_size", "test_size", "seed")
# A few quick epochs on the demo set: enough to see the pipeline work, not a benchmark.
DEMO_TRAIN = ["--run=demo", "--epochs=6", "--image_size=64", "--eval_image_size=64", "--batch_size=32",
              "--lr=0.05", "--warmup_epochs=0"]


def main(argv=None):
    config, _ = cli.parse(__file__, __doc__, argv)
    steps = [s.strip() for s in config["steps"].split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise cli.UserError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}.")
    root, demo = config["data_root"], False
    if not root:
        root, demo = ("data", False) if class_folders("data") else (make_demo_dataset(), True)
        if demo:
            print(f"no class folders in data/: using the generated DEMO set in {root}/ (synthetic pictures); "
                  "put the real images in data/ or pass --data_root=DIR")
    splits = ["--splits_dir=" + config["splits_dir"]]
    if "split" in steps:
        data_handling.main([f"--data_root={root}", *splits, *(f"--{key}={config[key]}" for key in SPLIT_KEYS)])
    run_dir = os.path.join("checkpoints", "demo" if demo else "default")
    if "train" in steps:
        train.main(splits + (DEMO_TRAIN if demo else []) + [f"--restart={config['restart']}"])
    if "evaluate" in steps:
        accuracy_eval.main([os.path.join(run_dir, "best.pth"), "--data_root=" + root] + splits)
    if "features" in steps:
        feature_map.main(["--checkpoint=" + os.path.join(run_dir, "best.pth"), "--data_root=" + root] + splits)
    if "report" in steps:
        report.main(["checkpoints", "--data_root=" + root] + splits)


if __name__ == "__main__":
    cli.run(main)
