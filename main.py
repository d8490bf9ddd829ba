"""The whole pipeline in one command: split, train, evaluate, feature maps.

    python main.py                      # real data in data/ if present, else a generated DEMO set
    python main.py --steps=split        # only build splits/train.csv, validation.csv, test.csv
    python main.py --data_root=/path/to/intel-scenes --steps=split,train

With no class folders in data/, a small synthetic six-class demo set is generated in demo_data/
and trained briefly (a few epochs at 64px), so a fresh machine runs everything with no download.
With real data the steps run with train.py's defaults; each step is also its own script.
"""
import os

import cli
import data_handling
from demo_data import make_demo_dataset

# --- settings ---
data_root = ""  # folder of class sub-folders; "" = data/ if it has any, else the generated demo set
splits_dir = "splits"  # where train.csv, validation.csv, test.csv and split_info.json go
val_size = 0.1761183515322297  # validation images: a fraction (< 1) or a count (3000 of 17034)
test_size = 0.11741223435482  # test images: a fraction (< 1) or a count (2000 of 17034)
seed = 0  # seeds the split
steps = "split,train,evaluate,features"  # comma-separated steps to run, in this order
# --- end of settings ---

STEPS = ("split", "train", "evaluate", "features")
# A few quick epochs on the demo set: enough to see the pipeline work, not a benchmark.
DEMO_TRAIN = ["--run=demo", "--epochs=6", "--image_size=64", "--eval_image_size=64", "--batch_size=32",
              "--lr=0.05", "--warmup_epochs=0"]


def has_class_folders(root):
    return os.path.isdir(root) and any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(root))


def main(argv=None):
    config, _ = cli.parse(__file__, __doc__, argv)
    steps = [s.strip() for s in config["steps"].split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise cli.UserError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}.")
    root, demo = config["data_root"], False
    if not root:
        root, demo = ("data", False) if has_class_folders("data") else (make_demo_dataset(), True)
        if demo:
            print(f"no class folders in data/: using the generated DEMO set in {root}/ (synthetic pictures); "
                  "put the real images in data/ or pass --data_root=DIR")
    splits = ["--splits_dir=" + config["splits_dir"]]
    if "split" in steps:
        data_handling.make_splits(root, config["splits_dir"], config["val_size"], config["test_size"], config["seed"])
    run_args = splits + (DEMO_TRAIN if demo else [])
    run_dir = os.path.join("checkpoints", "demo" if demo else "default")
    if "train" in steps:
        import train
        train.main(run_args)
    if "evaluate" in steps:
        import accuracy_eval
        accuracy_eval.main([os.path.join(run_dir, "best.pth"), "--data_root=" + root] + splits)
    if "features" in steps:
        import feature_map
        feature_map.main(["--checkpoint=" + os.path.join(run_dir, "best.pth"), "--data_root=" + root] + splits)


if __name__ == "__main__":
    cli.run(main)
