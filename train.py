"""Train a ResNet on the split that main.py made.

    python train.py                                  # the default recipe, resumes if interrupted
    python train.py --preset=sgd_lr0.01 --epochs=10  # one of the report's variants
    python train.py --preset=all                     # the report's four variants, one after another
    torchrun --nproc_per_node=2 train.py             # DistributedDataParallel, same script

Each run writes checkpoints/<run>/: last.pth (every epoch), best.pth (best validation mAP),
metrics.csv, config.json, curves.png (train/validation loss and accuracy) and test_loss.png.
Running the same command again resumes from last.pth; --restart=true starts the run over.
"""
import copy
import csv
import io
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from functools import partial

import torch
import torch.distributed as dist
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

import cli
from checkpoint import RunLock, load_checkpoint, save_checkpoint, write_atomically
from data_handling import SPLITS, check_disjoint, read_split_info
from engine import evaluate, gather_split, keep_freed_memory, prepare_model, recalibrate_batch_norms, runtime
from metrics import classification_metrics
from models import build_model, load_weights
from NatureTypesDataset import IMAGENET_MEAN, IMAGENET_STD, build_loader, eval_size, read_split_csv

# --- settings ---
data_root = ""  # folder of class sub-folders; "" = the one the split was made from
splits_dir = "splits"  # folder with train.csv, validation.csv, test.csv (python main.py makes it)
checkpoints_dir = "checkpoints"  # one sub-folder per run
run = ""  # run folder name; "" = the preset's name
preset = "default"  # default | sgd_lr0.01 | sgd_lr0.001 | adam_lr0.001 | pretrained | all
arch = "resnet18"  # torchvision ResNet: resnet18, resnet34, resnet50, ...
pretrained = False  # start from torchvision's ImageNet weights, final layer replaced
zero_init_residual = False  # from scratch: each residual block's last BatchNorm starts at zero
weights_file = ""  # local ImageNet weights for offline use; "" = torchvision's cache or download
epochs = 30  # passes over the training split
time_budget_min = 0.0  # > 0: plan the epochs to end within this many minutes (under 20: 112 px from 144 px images)
image_size = 128  # pixels (square) of the training crops (at the end of progressive resizing)
progressive_min_size = 96  # > 0: training crops grow from this size to image_size over the first 3/4 of the epochs
eval_image_size = 160  # pixels (square) for validation, test and evaluation; 0 = image_size
batch_size = 64  # images per optimizer step, split among torchrun processes
eval_batch_size = 256  # images per evaluation batch
optimizer = "sgd"  # sgd (Nesterov momentum) | adam | adamw
lr = 0.05  # peak learning rate
momentum = 0.9  # SGD momentum
weight_decay = 5e-4  # L2 penalty on weights (not on norms and biases)
schedule = "cosine"  # cosine (after a linear warm-up) | constant
warmup_epochs = 1.0  # linear warm-up, in epochs
label_smoothing = 0.1  # cross-entropy label smoothing
augment = True  # random resized crops and horizontal flips for training
crop_min_scale = 0.35  # smallest area fraction of a random resized crop
mix_prob = 0.5  # share of batches mixed (MixUp or CutMix, alpha 1, half each) from epoch 2 of runs of 30+ epochs
mix_until = 1.0  # mixing stops after this fraction of the planned epochs (the rest train on unmixed batches)
precise_bn_images = 512  # > 0: before each evaluation, BatchNorm statistics are re-estimated on this many clean training images at the evaluation size
ema_epochs = 0.0  # > 0: evaluate and save an exponential moving average of the weights over about this many epochs
tta_flip = False  # evaluate on each image and its mirror image, logits averaged
loader = "cached"  # cached (decoded once into a uint8 file) | plain (PIL per item)
cache_dir = "cache"  # where the cached loader keeps decoded images
num_workers = 0  # DataLoader worker processes of the plain loader
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # auto (bf16 where the hardware is fast at it) | bf16 | fp32
compile = False  # torch.compile the model
seed = 0  # seeds the weights, the shuffling and the augmentation
restart = False  # start the run over instead of resuming from its last.pth
# --- end of settings ---

# The report's variants (torchvision ResNet-18): its optimizers and learning rates, 10 epochs at 80x80
# as it trained, without its mistakes (evaluated at the training size, ImageNet mean/std).
REPORT = dict(schedule="constant", weight_decay=0.0, label_smoothing=0.0, warmup_epochs=0.0, epochs=10, image_size=80,
              eval_image_size=0, progressive_min_size=0, batch_size=128, mix_prob=0.0, precise_bn_images=0)
PRESETS = {
    "default": {},
    "sgd_lr0.01": dict(REPORT, optimizer="sgd", lr=0.01),
    "sgd_lr0.001": dict(REPORT, optimizer="sgd", lr=0.001),
    "adam_lr0.001": dict(REPORT, optimizer="adam", lr=0.001),
    "pretrained": dict(REPORT, optimizer="sgd", lr=0.001, pretrained=True),
}
REPORT_PRESETS = ["sgd_lr0.01", "sgd_lr0.001", "adam_lr0.001", "pretrained"]
# Settings that may change when a run is resumed; any other change needs --restart=true.
OPERATIONAL = {"data_root", "splits_dir", "checkpoints_dir", "epochs", "time_budget_min", "eval_batch_size",
               "loader", "cache_dir", "num_workers", "device", "precision", "compile", "restart", "weights_file"}
# Settings added after runs were saved without them, with the value that describes those runs.
BEFORE_THEY_EXISTED = {"ema_epochs": 0.0, "mix_prob": 0.0, "zero_init_residual": False, "eval_image_size": 0,
                       "progressive_min_size": 0, "mix_until": 1.0, "precise_bn_images": 0}
METRIC_NAMES = ("loss", "accuracy", "mean_class_accuracy", "map")
RAMP_END = 0.75  # progressive resizing reaches image_size at this fraction of the epochs
RECENT_EPOCHS = 3  # a time budget prices the epochs still to run like the mean of this many just run
MIX_MIN_EPOCHS = 30  # batches are mixed only in runs planned for at least this many epochs (measured: 14-17
# epochs scored lower with mixing, 30 the same, 40-55 higher), and from the second epoch (a budget's plan is
# known then); mix_prob's help above says this number too
# A time budget under SHORT_BUDGET_MIN minutes trains the default recipe on smaller images throughout (cheaper
# epochs, so more of them): measured at 10 minutes, test accuracy 0.8713 against 0.8626 with the crops growing
# to 128 px, while at 30 minutes the growing crops scored 0.9064 and 0.9035 against 0.8918 (the same day);
# time_budget_min's help above says this number too
SHORT_BUDGET_MIN = 20
SHORT_BUDGET = dict(image_size=112, eval_image_size=144, progressive_min_size=0)


def resolve_config(config, overrides):
    """Defaults, then the preset, then the command line; plus what the split says (plain values)."""
    name = overrides.get("preset", config["preset"])
    if name not in PRESETS:
        raise cli.UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or all.")
    config = {**config, **PRESETS[name], **overrides, "preset": name}
    if name == "default" and 0 < config["time_budget_min"] < SHORT_BUDGET_MIN:
        config.update({k: v for k, v in SHORT_BUDGET.items() if k not in overrides})
    config["run"] = config["run"] or name
    info = read_split_info(config["splits_dir"])
    config["data_root"] = config["data_root"] or info["data_root"]
    config["class_names"] = info["class_names"]
    for split in SPLITS:
        config[f"{split}_csv"] = os.path.join(config["splits_dir"], f"{split}.csv")
    config["mean"], config["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
    if config["optimizer"] not in ("sgd", "adam", "adamw"):
        raise cli.UserError(f"--optimizer takes sgd, adam or adamw, not {config['optimizer']!r}.")
    if config["schedule"] not in ("cosine", "constant"):
        raise cli.UserError(f"--schedule takes cosine or constant, not {config['schedule']!r}.")
    if min(config["image_size"], config["eval_image_size"] or 16) < 16 or config["batch_size"] < 1 \
            or config["epochs"] < 1:
        raise cli.UserError("--image_size and --eval_image_size must be at least 16, --batch_size and --epochs "
                            "at least 1.")
    if not (0 <= config["mix_prob"] <= 1 and 0 <= config["mix_until"] <= 1):
        raise cli.UserError("--mix_prob and --mix_until take a fraction from 0 to 1.")
    return config


def make_optimizer(model, config):
    """Weight decay on weights only: norms and biases are not decayed."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"], nesterov=config["momentum"] > 0)
    optimizer_class = torch.optim.Adam if config["optimizer"] == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=config["lr"])


def lr_factor(step, config, steps_per_epoch, plan):
    """Linear warm-up, then cosine decay to zero over the planned epochs (or constant)."""
    warmup = config["warmup_epochs"] * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if config["schedule"] == "constant":
        return 1.0
    total = max(plan["epochs"] * steps_per_epoch, warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def crop_size(epoch, config, epochs):
    """The training crop size of an epoch: ``image_size``, or with progressive resizing a linear ramp
    from ``progressive_min_size`` at the first epoch to ``image_size`` at ``RAMP_END`` of the
    epochs, in steps of 16 pixels."""
    low, high = config["progressive_min_size"], config["image_size"]
    if not 0 < low < high:
        return high
    progress = min(1.0, (epoch - 1) / max(1, round(RAMP_END * epochs) - 1))
    return max(low, min(high, 16 * round((low + progress * (high - low)) / 16)))


def check_resumable(saved, config, path):
    saved = {**BEFORE_THEY_EXISTED, **saved}
    changed = sorted(k for k in set(saved) | set(config) if k not in OPERATIONAL and saved.get(k) != config.get(k))
    if changed:
        shown = ", ".join(f"{k}={saved.get(k)!r} (now {config.get(k)!r})" for k in changed[:4])
        raise cli.UserError(f"{path} was trained with other settings: {shown}; pass the same settings to resume, "
                            "or --restart=true to start the run over.")


def ema_decay(config, steps_per_epoch):
    """The per-step decay of the weights' moving average: a time constant of ``ema_epochs`` epochs."""
    return 1 - 1 / max(1.0, config["ema_epochs"] * steps_per_epoch)


def ema_updater(average_model, model, decay):
    """A function that moves the averaged weights and BatchNorm statistics towards the model's
    by ``1 - decay`` (counters are copied), in one fused call per step."""
    pairs = list(zip(average_model.state_dict().values(), model.state_dict().values()))
    averages, currents = zip(*[(a, c) for a, c in pairs if a.is_floating_point()])
    counters = [(a, c) for a, c in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update():
        torch._foreach_lerp_(averages, currents, 1 - decay)
        for average, current in counters:
            average.copy_(current)
    return update


def mix_share(config, epoch, epochs):
    """The share of this epoch's batches that are mixed: ``mix_prob`` from the second epoch to
    ``mix_until`` of the epochs of a run planned for at least ``MIX_MIN_EPOCHS`` epochs, else none
    (shorter runs scored lower with mixing)."""
    return config["mix_prob"] if 1 < epoch <= config["mix_until"] * epochs and epochs >= MIX_MIN_EPOCHS else 0.0


def batch_mixer(num_classes):
    """``mixer(images, targets, share)``: MixUp or CutMix on a ``share`` of the batches (soft targets),
    else the batch as it is."""
    mix = v2.RandomChoice([v2.MixUp(num_classes=num_classes), v2.CutMix(num_classes=num_classes)])

    def mixer(images, targets, share):
        if share > 0 and torch.rand(()).item() < share:
            images, targets = mix(images, targets)
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets
    return mixer


def train_one_epoch(model, loader, optimizer, scheduler, criterion, rt, epoch, plan, after_step, mixer):
    """One pass over the training split; returns the training logits and targets of this rank.

    ``mixer`` may mix the batch (the logits are still scored against the unmixed targets);
    ``after_step`` runs after each optimizer step (the weights' moving average).
    """
    model.train()
    logits, targets = [], []
    bar = tqdm(loader, desc=f"epoch {epoch}/{plan['epochs']}", leave=False, dynamic_ncols=True,
               disable=not (rt.is_main and sys.stderr.isatty()))
    for step, (images, batch_targets) in enumerate(bar):
        images, soft_targets = mixer(images, batch_targets)
        with rt.autocast():
            output = model(images)
            loss = criterion(output, soft_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        after_step()
        logits.append(output.detach().float().cpu())
        targets.append(batch_targets.cpu())
        if step % 20 == 0:  # .item() syncs, so only now and then
            if not math.isfinite(loss.item()):
                raise cli.UserError(f"the training loss became {loss.item()} in epoch {epoch} (step {step}); "
                                    "the last good checkpoint is kept. Lower --lr or check the images.")
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
    return torch.cat(logits), torch.cat(targets)


def calibration_loader(config, rt, log):
    """Training images unaugmented at the evaluation size, in a new seeded order each epoch: what
    ``precise_bn_images`` re-estimates the BatchNorm statistics from."""
    clean = {**config, "augment": False, "image_size": eval_size(config)}
    return build_loader(clean, "train", True, rt.device, rt.rank, rt.world, log=log)


def write_metrics_csv(history, path):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomically(path, lambda f: f.write(text.getvalue().encode("utf-8")))


def save_curves(history, run_dir):
    """The report's Figure 1 (loss and accuracy, train and validation) and Figure 2 (test loss)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split in ("train", "val"):
            ax.plot(epochs, [row[f"{split}_{metric}"] for row in history], marker="o", label=split)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
        if metric == "loss":  # an early epoch's loss can be orders of magnitude above the rest
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    write_atomically(os.path.join(run_dir, "curves.png"), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(epochs, [row["test_loss"] for row in history], marker="o", color="C2")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="test loss per epoch (not used to choose weights)")
    fig.tight_layout()
    write_atomically(os.path.join(run_dir, "test_loss.png"), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def check_splits(config):
    """Fail before training if a CSV is broken or the splits share a file."""
    paths = {split: [rel for rel, _ in read_split_csv(config[f"{split}_csv"], config["data_root"],
                                                      config["class_names"])] for split in SPLITS}
    check_disjoint(paths)


def resume(last_path, config, model, eval_model, optimizer, scheduler):
    """Load a run's last.pth into the models, optimizer and scheduler; returns (history, best, planned epochs).

    ``model`` is the one trained; ``eval_model`` the one evaluated and saved as ``model`` (the
    weights' moving average when ``ema_epochs`` > 0, else the same model).
    """
    checkpoint = load_checkpoint(last_path)
    check_resumable(checkpoint["config"], config, last_path)
    load_weights(eval_model, checkpoint["model"], last_path, config["arch"])
    if eval_model is not model:
        load_weights(model, checkpoint["train_model"], last_path, config["arch"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    planned = checkpoint["planned_epochs"] if config["time_budget_min"] > 0 else config["epochs"]
    return checkpoint["history"], checkpoint["best_metric"], planned


def epoch_metrics(eval_model, loaders, train_logits, train_targets, rt, config):
    """The metrics of one epoch's row: training (from its own logits), validation and test."""
    rows = len(train_targets) * rt.world  # every rank trains on equally many images, none repeated
    splits = {"train": classification_metrics(gather_split(train_logits, rt.world, rows),
                                              gather_split(train_targets, rt.world, rows), config["class_names"])}
    for short, split in (("val", "validation"), ("test", "test")):
        splits[short] = evaluate(eval_model, loaders[split], rt, config["class_names"], config["tta_flip"])[0]
    return {f"{split}_{k}": round(metrics[k], 6) for split, metrics in splits.items() for k in METRIC_NAMES}


def save_epoch(state, run_dir, improved):
    """best.pth (if improved), metrics.csv and the plots, then last.pth.

    last.pth goes last: a resume starts from it, so a kill before it only repeats this epoch
    (writing the same files again), and a kill after it has lost nothing.
    """
    if improved:
        save_checkpoint(state, os.path.join(run_dir, "best.pth"))
    write_metrics_csv(state["history"], os.path.join(run_dir, "metrics.csv"))
    save_curves(state["history"], run_dir)
    save_checkpoint(state, os.path.join(run_dir, "last.pth"))


def train(config):
    """Train (or resume) one run as the config says; returns its final history row."""
    started = time.perf_counter()
    rt = runtime(config["device"], config["precision"])
    log = print if rt.is_main else (lambda *a, **k: None)
    run_dir = os.path.join(config["checkpoints_dir"], config["run"])
    last_path = os.path.join(run_dir, "last.pth")
    check_splits(config)
    os.makedirs(run_dir, exist_ok=True)
    with (RunLock(run_dir) if rt.is_main else nullcontext()):
        torch.manual_seed(config["seed"])
        model = build_model(config["arch"], len(config["class_names"]), config["pretrained"], config["weights_file"],
                            config["zero_init_residual"])
        loaders = {split: build_loader(config, split, split == "train", rt.device, rt.rank, rt.world, log=log)
                   for split in SPLITS}
        calibration = calibration_loader(config, rt, log) if config["precise_bn_images"] > 0 else None
        model = prepare_model(model, rt)
        if rt.device.type == "cpu":
            keep_freed_memory()
        optimizer = make_optimizer(model, config)
        steps_per_epoch = len(loaders["train"])
        plan = {"epochs": config["epochs"]}
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, config, steps_per_epoch, plan))
        eval_model = copy.deepcopy(model) if config["ema_epochs"] > 0 else model
        decay = ema_decay(config, steps_per_epoch)
        after_step = ema_updater(eval_model, model, decay) if eval_model is not model else (lambda: None)
        history, best_metric, start_epoch = [], -1.0, 1
        if os.path.exists(last_path) and not config["restart"]:
            history, best_metric, plan["epochs"] = resume(last_path, config, model, eval_model, optimizer, scheduler)
            start_epoch = len(history) + 1
            if start_epoch > plan["epochs"]:
                extend = ("--time_budget_min=0 and a larger --epochs" if config["time_budget_min"] > 0
                          else "a larger --epochs")
                log(f"run {config['run']} has already finished its {len(history)} epochs; "
                    f"pass {extend} to extend it or --restart=true to start over.")
                return history[-1]
            log(f"resuming run {config['run']} from {last_path} at epoch {start_epoch}")
        elif rt.is_main:
            write_atomically(os.path.join(run_dir, "config.json"),
                             lambda f: f.write(json.dumps(config, indent=1).encode("utf-8")))
        raw_model = model
        if config["compile"]:
            model = torch.compile(model)
        if rt.world > 1:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if
                                                        rt.device.type == "cuda" else None)
        criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
        mixer = batch_mixer(len(config["class_names"]))
        first = crop_size(1, config, 1)
        sizes = f"{first}-{config['image_size']}" if first < config["image_size"] else first
        length = (f"as many epochs as fit in {config['time_budget_min']:g} minutes" if config["time_budget_min"] > 0
                  else f"{plan['epochs']} epochs")
        until = f" to {config['mix_until']:.0%} of the epochs" if config["mix_until"] < 1 else ""
        mix_note = (f"; MixUp/CutMix on {config['mix_prob']:g} of the batches from epoch 2{until} if {MIX_MIN_EPOCHS}+ "
                    "epochs are planned" if config["mix_prob"] > 0 else "")
        log(f"run {config['run']}: {config['arch']} on {rt.device} ({'bf16' if rt.bf16 else 'fp32'}, "
            f"{rt.world} process{'es' if rt.world > 1 else ''}), {len(loaders['train'].indices) * rt.world} "
            f"training images per epoch at {sizes}px, {length}{mix_note}")
        spent_before = sum(row["seconds"] for row in history)  # of the budget, by the epochs run before a resume
        timings = []  # (crop size, training seconds, other seconds) of this process's epochs
        planned_at = time.perf_counter()  # the last planning: an epoch's other seconds include the save before it
        epoch = start_epoch
        while epoch <= plan["epochs"]:
            epoch_start = time.perf_counter()
            torch.manual_seed(config["seed"] * 1000 + epoch)  # the plain loader's augmentation, the mixing
            loaders["train"].set_epoch(epoch)
            size = crop_size(epoch, config, plan["epochs"])
            loaders["train"].set_crop_size(size)
            mixing = partial(mixer, share=mix_share(config, epoch, plan["epochs"]))
            train_logits, train_targets = train_one_epoch(model, loaders["train"], optimizer, scheduler,
                                                          criterion, rt, epoch, plan, after_step, mixing)
            train_seconds = time.perf_counter() - epoch_start
            if calibration is not None:
                calibration.set_epoch(epoch)
                recalibrate_batch_norms(eval_model, calibration, math.ceil(config["precise_bn_images"] / rt.world), rt)
            if rt.world > 1:  # BatchNorm statistics differ per rank after the last step: all take rank 0's,
                for buffer in [b for m in dict.fromkeys([raw_model, eval_model]) for b in m.buffers()]:
                    dist.broadcast(buffer, 0)  # so the ranks evaluate the model that is saved
            weights_finite = all(torch.isfinite(p).all() for p in raw_model.parameters())
            if not (weights_finite and torch.isfinite(train_logits).all()):
                raise cli.UserError(f"the training loss or the weights became non-finite in epoch {epoch}; the last "
                                    "good checkpoint is kept. Lower --lr or check the images.")
            row = {"epoch": epoch, **epoch_metrics(eval_model, loaders, train_logits, train_targets, rt, config)}
            seconds = time.perf_counter() - epoch_start
            row.update(lr=scheduler.get_last_lr()[0], seconds=round(seconds, 2),
                       train_images_per_second=round(len(train_targets) * rt.world / train_seconds, 1))
            now = time.perf_counter()
            timings.append((size, train_seconds, now - planned_at - train_seconds))
            planned_at = now
            if config["time_budget_min"] > 0:
                plan["epochs"] = planned_epochs(config, spent_before + now - started, epoch,
                                                timings[-RECENT_EPOCHS:], rt)  # the N of the next "epoch k/N"
            history.append(row)
            improved = row["val_map"] > best_metric
            best_metric = max(best_metric, row["val_map"])
            if rt.is_main:
                trained = {"train_model": raw_model.state_dict()} if eval_model is not raw_model else {}
                save_epoch({"model": eval_model.state_dict(), **trained, "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "planned_epochs": plan["epochs"],
                            "best_metric": best_metric, "history": history, "config": config}, run_dir, improved)
            log(f"epoch {epoch}/{plan['epochs']}  {size}px  train loss {row['train_loss']:.4f} "
                f"acc {row['train_accuracy']:.4f}"
                f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} mAP {row['val_map']:.4f}"
                f" | test loss {row['test_loss']:.4f} | lr {row['lr']:.3g} | {seconds:.1f}s, "
                f"{row['train_images_per_second']:.0f} img/s{'  *best*' if improved else ''}")
            epoch += 1
    log(f"run {config['run']} done: best validation mAP {best_metric:.4f}; files in {run_dir}/")
    return history[-1]


def planned_epochs(config, spent, done, recent, rt):
    """How many epochs fit the time budget (the same on every rank), planned again after every epoch.

    ``spent`` seconds of the budget are gone and ``done`` epochs finished. Each later epoch is priced
    like ``recent``, the (crop size, training seconds, other seconds) of the last epochs: its training
    time scaled by its crops' area (progressive resizing), its evaluation and saving the same.
    """
    numbers = torch.tensor([spent, sum(t / s ** 2 for s, t, _ in recent) / len(recent),
                            sum(e for *_, e in recent) / len(recent)], dtype=torch.float64)
    if rt.world > 1:
        dist.all_reduce(numbers, op=dist.ReduceOp.MAX)
    spent, per_pixel, other_seconds = numbers.tolist()
    remaining = config["time_budget_min"] * 60 - spent

    def cost(epochs):  # the seconds of epochs done+1..epochs of a plan of that many
        return sum(per_pixel * crop_size(e, config, epochs) ** 2 + other_seconds for e in range(done + 1, epochs + 1))
    cheapest = per_pixel * crop_size(1, config, 1) ** 2 + other_seconds
    low, high = done, done + max(0, int(remaining // cheapest))
    while low < high:  # the most epochs whose cost fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if cost(middle) <= remaining else (low, middle - 1)
    return low


def main(argv=None):
    config, overrides = cli.parse(__file__, __doc__, argv)
    names = REPORT_PRESETS if config["preset"] == "all" else [config["preset"]]
    for name in names:
        if len(names) > 1:
            overrides = {**overrides, "preset": name, "run": ""}
        train(resolve_config(config, overrides))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    cli.run(main)
