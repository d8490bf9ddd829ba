"""The whole pipeline in one call (what main.py runs): split, train, evaluate, feature maps, report.

Each step calls the package function its script calls, with that script's own defaults (read from
its settings block) and main.py's settings on top. With no real data the generated DEMO set is
used, and every output of it lies under ``demo/`` (images, splits, checkpoints, results), apart
from the real runs and deleted with one ``rm -r demo``.
"""
import os

from scenes import cli
from scenes.comparison import evaluate_checkpoints
from scenes.demo import make_demo_dataset
from scenes.feature_maps import write_feature_maps
from scenes.report import make_report
from scenes.splits import class_folders
from scenes.splitting import make_splits
from scenes.estimate import estimate_run
from scenes.training import REPORT_PRESETS, train_presets

STEPS = ("split", "train", "evaluate", "features", "report")
DEMO_DIR = "demo"
DEMO_FOLDERS = {"splits_dir": "splits", "checkpoints_dir": "checkpoints", "results_dir": "results", "cache_dir": "cache"}
# A few quick epochs on the demo set: enough to see the pipeline work, not a benchmark.
DEMO_TRAIN = dict(epochs=6, image_size=64, eval_image_size=64, batch_size=32, lr=0.05, warmup_epochs=0.0)
TRAIN_KEYS = ("preset", "epochs", "time_budget_min", "device", "restart")  # passed on to train.py's settings


def steps_of(text):
    """The steps a comma-separated text names, checked."""
    steps = [step.strip() for step in text.split(",") if step.strip()]
    unknown = [step for step in steps if step not in STEPS]
    if unknown or not steps:
        raise cli.UserError(f"--steps={text!r} names {'unknown steps ' + ', '.join(unknown) if unknown else 'no step'};"
                            f" choose from {', '.join(STEPS)}, comma-separated.")
    return steps


def choose_data(config, overrides, steps):
    """(data root, demo?) and the folders the steps use: the demo's lie under demo/ unless given."""
    if config["data_root"]:
        return config["data_root"], False
    if class_folders("data"):
        return "data", False
    demo_root = os.path.join(DEMO_DIR, "data")
    if "split" in steps:
        make_demo_dataset(demo_root)
    elif not class_folders(demo_root):
        raise cli.UserError("there are no class folders in data/ and no demo set yet; run python main.py with "
                            "the split step first, or pass --data_root=DIR.")
    for key, folder in DEMO_FOLDERS.items():
        if key not in overrides:
            config[key] = os.path.join(DEMO_DIR, folder)
    print(f"no class folders in data/: using the generated DEMO set in {demo_root}/ (synthetic pictures); every "
          f"output goes under {DEMO_DIR}/. Put the real images in data/ or pass --data_root=DIR.")
    return demo_root, True


def train_step(config, overrides, demo):
    """train.py with main.py's training settings (and the demo's short recipe); returns the run names."""
    given = {key: config[key] for key in TRAIN_KEYS if key in overrides}
    paths = {"splits_dir": config["splits_dir"], "checkpoints_dir": config["checkpoints_dir"],
             "cache_dir": config["cache_dir"], "restart": config["restart"]}
    train_overrides = {**(DEMO_TRAIN if demo else {}), **given, **paths, **({"run": "demo"} if demo else {})}
    train_config = {**cli.script_defaults("train.py"), **train_overrides}
    if not demo:
        estimate_run(train_config, train_overrides)
    train_presets(train_config, train_overrides)


def run_names(config, demo):
    if demo:
        return ["demo"]
    return REPORT_PRESETS if config["preset"] == "all" else [config["preset"]]


def run_pipeline(config, overrides):
    """Run main.py's steps in order."""
    steps = steps_of(config["steps"])
    root, demo = choose_data(config, overrides, steps)
    if "split" in steps:
        make_splits(root, config["splits_dir"], config["val_size"], config["test_size"], config["seed"],
                    corrections=config["corrections"])
    if "train" in steps:
        train_step(config, overrides, demo)
    data = {"data_root": root, "splits_dir": config["splits_dir"], "cache_dir": config["cache_dir"],
            "device": config["device"]}
    best = [os.path.join(config["checkpoints_dir"], name, "best.pth") for name in run_names(config, demo)]
    results = config["results_dir"]
    if "evaluate" in steps:
        evaluate_checkpoints({**cli.script_defaults("accuracy_eval.py"), **data, "out_dir": results}, best)
    if "features" in steps:
        settings = {**cli.script_defaults("feature_map.py"), **data, "checkpoint": best[0], "out_dir": results}
        write_feature_maps(settings, {"checkpoint": best[0]})
    if "report" in steps:
        settings = {**cli.script_defaults("report.py"), **data, "out_dir": os.path.join(results, "report")}
        make_report(settings, [config["checkpoints_dir"]])
