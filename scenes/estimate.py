"""How long a training run will take on this machine, from a few measured steps (main.py says it
before it trains on real data, with how to shorten the run)."""
import time

import torch

from scenes.models import build_model
from scenes.runtime import prepare_for_steps, runtime
from scenes.splits import SPLITS, csv_rows
from scenes.training import REPORT_PRESETS, make_optimizer, resolve_config
from scenes.transforms import eval_size

TIMED_STEPS = 3  # after one untimed step, which builds the kernels


def seconds_per_image(config, rt):
    """Seconds of one training step per image, at the run's largest crop, on random pixels."""
    size = config["image_size"]
    model = prepare_for_steps(build_model(config["arch"], len(config["class_names"])), rt).train()
    optimizer = make_optimizer(model, config)
    images = torch.randn(config["batch_size"], 3, size, size, device=rt.device).contiguous(
        memory_format=torch.channels_last)
    targets = torch.randint(len(config["class_names"]), (config["batch_size"],), device=rt.device)
    for step in range(TIMED_STEPS + 1):
        if step == 1:
            started = time.perf_counter()
        with rt.autocast():
            loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.item()  # waits for the device
    return (time.perf_counter() - started) / (TIMED_STEPS * config["batch_size"])


def run_seconds(config, rt):
    """(seconds per epoch, images per second) of a run: its training images at the measured rate,
    its evaluated images (validation, test, precise BN) at a third of it, scaled to their size."""
    rows = {split: len(csv_rows(config[f"{split}_csv"])) for split in SPLITS}
    per_image = seconds_per_image(config, rt)
    evaluated = rows["validation"] + rows["test"] + config["precise_bn_images"]
    scale = (eval_size(config) / config["image_size"]) ** 2
    return rows["train"] * per_image + evaluated * per_image * scale / 3, 1 / per_image


def estimate_run(config, overrides, log=print):
    """Say how long the run(s) that ``config`` and ``overrides`` describe will take here, and how to
    shorten them; returns the estimated seconds."""
    names = REPORT_PRESETS if config["preset"] == "all" else [config["preset"]]
    total = 0.0
    for name in names:
        run_config = resolve_config(config, {**overrides, "preset": name})
        rt = runtime(run_config["device"], run_config["precision"])
        epoch_seconds, speed = run_seconds(run_config, rt)
        budget = run_config["time_budget_min"] * 60
        seconds = min(budget, epoch_seconds * run_config["epochs"]) if budget > 0 else epoch_seconds * run_config["epochs"]
        total += seconds
        log(f"estimate for run {run_config['run']}: about {epoch_seconds / 60:.1f} min per epoch on this machine "
            f"({rt.device}, {'bf16' if rt.bf16 else 'fp32'}, {speed:.0f} training images/s measured at "
            f"{run_config['image_size']} px)" + (f", ended by the {budget / 60:g}-minute budget"
                                                 if 0 < budget < epoch_seconds * run_config["epochs"] else
                                                 f", {run_config['epochs']} epochs"))
    log(f"the training step will take about {total / 60:.0f} minutes; shorten it with --time_budget_min=MINUTES "
        "(as many epochs as fit) or --epochs=N.")
    return total
