"""Training a run: presets, the optimizer, the epoch loop, saving and resuming (what train.py runs).

``train(config)`` trains (or resumes) one run from a frozen config of plain values (train.py's
settings resolved by ``resolve_config``: defaults, then the preset, then the command line, then
what the split says); ``train_presets`` trains one preset or the report's four in turn.

The default recipe under a budget of less than ``SHORT_BUDGET_MIN`` minutes trains at the
``SHORT_BUDGET`` sizes throughout, and its log says so: kept beside the one schedule of
``scenes.plan`` because the smaller sizes buy a short budget more epochs, which scored higher at 10
minutes (RESULTS.md), a trade the schedule does not make.
"""
import copy
import csv
import io
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from scenes import cli
from scenes.checkpoints import FORMAT, RunLock, content_ids, load_checkpoint, save_checkpoint, verifiable
from scenes.evaluation import evaluate, gather_split, recalibrate_batch_norms
from scenes.figures import save_curves
from scenes.files import ensure_folder, work_folder, write_json, write_text
from scenes.loaders import build_loader, source_of
from scenes.metrics import classification_metrics
from scenes.models import build_model, check_arch, imagenet_weights, load_weights
from scenes.outputs import check_output_folder, check_run_name, is_run_folder
from scenes.plan import MIX_MIN_EPOCHS, EpochPlan, crop_size
from scenes.runtime import Runtime, prepare_for_steps, runtime
from scenes.splits import SPLITS, check_disjoint, read_split, read_split_info, split_csvs
from scenes.transforms import IMAGENET_MEAN, IMAGENET_STD, augment_of, eval_size

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
# The split's CSV paths may change too (the same split by another path): its content is checked instead.
OPERATIONAL = {"data_root", "splits_dir", "train_csv", "validation_csv", "test_csv", "split_sha256",
               "checkpoints_dir", "epochs", "time_budget_min", "eval_batch_size", "loader", "cache_dir",
               "num_workers", "device", "precision", "compile", "restart", "weights_file"}
METRIC_NAMES = ("loss", "accuracy", "mean_class_accuracy", "map")
SHORT_BUDGET_MIN = 20  # budgets under this many minutes train the default on smaller images throughout
SHORT_BUDGET = dict(image_size=112, eval_image_size=144, progressive_min_size=0)
HELP_VALUES = {"SHORT_BUDGET_MIN": SHORT_BUDGET_MIN, "MIX_MIN_EPOCHS": MIX_MIN_EPOCHS}


# ---------------------------------------------------------------------------------------------
# The run's config and parts

def resolve_config(config, overrides):
    """Defaults, then the preset, then the command line; plus what the split says (plain values)."""
    name = overrides.get("preset", config["preset"])
    if name not in PRESETS:
        raise cli.UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or all.")
    config = {**config, **PRESETS[name], **overrides, "preset": name}
    if short_budget(config):
        config.update({k: v for k, v in SHORT_BUDGET.items() if k not in overrides})
    config["run"] = check_run_name(config["run"] or name)
    check_arch(config["arch"])
    info = read_split_info(config["splits_dir"])
    config["data_root"] = config["data_root"] or info["data_root"]
    config["class_names"] = info["class_names"]
    config["corrections_sha256"] = info.get("corrections_sha256")  # a run knows it learnt corrected labels
    config.update(split_csvs(config["splits_dir"]))
    config["mean"], config["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
    return config


def short_budget(config):
    """Whether the run is the default recipe under a budget short enough for the smaller sizes."""
    return config["preset"] == "default" and 0 < config["time_budget_min"] < SHORT_BUDGET_MIN


def make_optimizer(model, config):
    """Weight decay on weights only: norms and biases are not decayed."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"], nesterov=config["momentum"] > 0)
    optimizer_class = torch.optim.Adam if config["optimizer"] == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=config["lr"])


def split_loader(config, split, rt, log=print, clean=False):
    """The loader of one split of a run. Training batches are shuffled and augmented, their crops cut
    from images kept at the evaluation size when larger; ``clean`` gives the training images
    unaugmented at the evaluation size, in a new seeded order each epoch (for precise BN)."""
    train = split == "train"
    augment = augment_of(config) if train and not clean else None
    size = max(config["image_size"], eval_size(config)) if augment else \
        config["image_size"] if train and not clean else eval_size(config)
    batch_size = config["batch_size"] // rt.world if train else config["eval_batch_size"]
    return build_loader(source_of(config, config[f"{split}_csv"]), size, config["mean"], config["std"], batch_size,
                        rt.device, augment=augment, shuffle=train, seed=config["seed"], rank=rt.rank,
                        world=rt.world, log=log)


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


@dataclass
class Run:
    """Everything one training run works with. ``model`` is the one trained (unwrapped), ``runner``
    the same wrapped for the step (compiled, DistributedDataParallel), ``eval_model`` the one
    evaluated and saved (the weights' moving average when ``ema_epochs`` > 0, else ``model``)."""
    config: dict
    rt: Runtime
    dir: str
    model: nn.Module
    eval_model: nn.Module
    loaders: dict
    calibration: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    plan: EpochPlan
    after_step: object
    criterion: nn.Module
    mixer: object
    log: object
    runner: nn.Module = None
    history: list = field(default_factory=list)
    best_metric: float = -1.0
    best_loss: float = math.inf  # breaks ties of the validation mAP (an easy set reaches 1.0 early)
    best_epoch: int = 0
    trained_on: torch.Tensor = None  # content ids of the training and validation images

    @property
    def last_path(self):
        return os.path.join(self.dir, "last.pth")


def build_run(config, rt, run_dir, started):
    """The model, loaders, optimizer, schedule and plan of a fresh run, seeded."""
    log = print if rt.is_main else (lambda *a, **k: None)
    torch.manual_seed(config["seed"])
    model = build_model(config["arch"], len(config["class_names"]), config["pretrained"], config["weights_file"],
                        config["zero_init_residual"])
    loaders = {split: split_loader(config, split, rt, log) for split in SPLITS}
    calibration = split_loader(config, "train", rt, log, clean=True) if config["precise_bn_images"] > 0 else None
    model = prepare_for_steps(model, rt)
    optimizer = make_optimizer(model, config)
    eval_images = len(loaders["validation"].indices) + len(loaders["test"].indices)
    plan = EpochPlan(config, len(loaders["train"]), started, eval_images, log)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.lr_factor)
    eval_model = copy.deepcopy(model) if config["ema_epochs"] > 0 else model
    after_step = (ema_updater(eval_model, model, ema_decay(config, plan.steps_per_epoch))
                  if eval_model is not model else (lambda: None))
    criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
    return Run(config, rt, run_dir, model, eval_model, loaders, calibration, optimizer, scheduler, plan,
               after_step, criterion, batch_mixer(len(config["class_names"])), log)


# ---------------------------------------------------------------------------------------------
# Resume or start

def saved_run(config, run_dir):
    """The run's last.pth, checked to fit this config (the same split, the same settings), or None
    for a fresh run; read once, before the loaders cache the images of the split given now."""
    path = os.path.join(run_dir, "last.pth")
    if not os.path.exists(path) or config["restart"]:
        return None
    checkpoint = load_checkpoint(path)
    check_same_split(checkpoint, config, path)
    check_resumable(checkpoint["config"], config, path)
    return checkpoint


def check_same_split(checkpoint, config, path):
    """Refuse to resume on other images than the run trained on (the CSVs' paths may differ), and a
    checkpoint that does not record its images' content."""
    if not verifiable(checkpoint):
        raise cli.UserError(f"{path} was saved by an older version that did not record its images' content, so "
                            "its split cannot be checked and it is not resumed; pass --restart=true to train "
                            "the run again.")
    before = checkpoint["config"]["split_sha256"]
    changed = [split for split in SPLITS if before.get(split) != config["split_sha256"][split]]
    if changed:
        raise cli.UserError(f"{path} was trained on another split: {' and '.join(changed)} in {config['splits_dir']} "
                            "now list other images or other pictures (was the split made again?); resume with "
                            "the split it was trained on, or pass --restart=true to train on this one from the start.")


def check_resumable(saved, config, path):
    changed = sorted(k for k in set(saved) | set(config) if k not in OPERATIONAL and saved.get(k) != config.get(k))
    if changed:
        shown = ", ".join(f"{k}={saved.get(k)!r} (now {config.get(k)!r})" for k in changed[:4])
        raise cli.UserError(f"{path} was trained with other settings: {shown}; pass the same settings to resume, "
                            "or --restart=true to start the run over.")


def resume(run, checkpoint):
    """Load the run's last.pth (read and checked by ``saved_run``) into its models, optimizer,
    scheduler, history and plan."""
    config = run.config
    load_weights(run.eval_model, checkpoint["model"], run.last_path, config["arch"])
    if run.eval_model is not run.model:
        load_weights(run.model, checkpoint["train_model"], run.last_path, config["arch"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.history = checkpoint["history"]
    run.best_metric, run.best_loss, run.best_epoch = (checkpoint[key] for key in ("best_metric", "best_loss",
                                                                                   "best_epoch"))
    run.plan.load_state_dict(checkpoint["plan"])
    run.plan.spent_before = sum(row["seconds"] for row in run.history)


def resume_or_start(run, saved):
    """Resume from ``saved`` (last.pth, see ``saved_run``), or write config.json of a fresh run.

    Returns False when the run has already finished its planned epochs (nothing to do)."""
    config = run.config
    if saved is None:
        if run.rt.is_main:
            write_json(os.path.join(run.dir, "config.json"), config)
        return True
    resume(run, saved)
    if len(run.history) >= run.plan.epochs:
        extend = "--time_budget_min=0 and a larger --epochs" if config["time_budget_min"] > 0 else "a larger --epochs"
        run.log(f"run {config['run']} has already finished its {len(run.history)} epochs; "
                f"pass {extend} to extend it or --restart=true to start over.")
        return False
    run.log(f"resuming run {config['run']} from {run.last_path} at epoch {len(run.history) + 1}")
    return True


def wrap_for_training(run):
    """The model as the step runs it: compiled on request, in DistributedDataParallel under torchrun."""
    runner = torch.compile(run.model) if run.config["compile"] else run.model
    if run.rt.world > 1:
        device_ids = [run.rt.device.index] if run.rt.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(runner, device_ids=device_ids)
    return runner


def describe(run):
    """The run's one-line description at its start."""
    config, rt = run.config, run.rt
    budget = config["time_budget_min"]
    length = (f"as many epochs as fit in {budget:g} min, planned after its first steps{short_budget_note(config)}"
              if budget > 0 else f"{run.plan.epochs} epoch{'s' if run.plan.epochs > 1 else ''} of "
              f"{run.plan.what_it_trains()}")
    images = len(run.loaders["train"].indices) * rt.world
    processes = f"{rt.world} process{'es' if rt.world > 1 else ''}"
    run.log(f"run {config['run']}: {config['arch']} on {rt.device} ({'bf16' if rt.bf16 else 'fp32'}, {processes}), "
            f"{images} training images per epoch at {crop_sizes(config)} px, evaluated at {eval_size(config)} px; "
            f"{length}")


def short_budget_note(config):
    """What the short-budget rule set in this run, in words ("" when nothing)."""
    words = {"image_size": "{} px crops", "eval_image_size": "evaluation at {} px",
             "progressive_min_size": "no progressive resizing"}
    chosen = [words[k].format(v) for k, v in SHORT_BUDGET.items() if config[k] == v]
    if not (short_budget(config) and chosen):
        return ""
    return (f" (under {SHORT_BUDGET_MIN} min the short-budget sizes: {', '.join(chosen)}; from {SHORT_BUDGET_MIN} "
            "min the recipe's own)")


def crop_sizes(config):
    first = crop_size(1, config, 1)
    return f"{first}-{config['image_size']}" if first < config["image_size"] else str(first)


# ---------------------------------------------------------------------------------------------
# The epoch loop

def train_one_epoch(run, epoch):
    """One pass over the training split; returns the training logits and targets of this rank.

    A ``plan.mix_share`` of the batches is mixed (the logits are still scored against the unmixed
    targets); ``after_step`` runs after each optimizer step (the weights' moving average).
    """
    run.model.train()
    loader, rt, share = run.loaders["train"], run.rt, run.plan.mix_share(epoch)
    logits, targets = [], []
    bar = tqdm(loader, desc=f"epoch {epoch}/{run.plan.epochs}", leave=False, dynamic_ncols=True,
               disable=not (rt.is_main and sys.stderr.isatty()))
    for step, (images, batch_targets) in enumerate(bar):
        images, soft_targets = run.mixer(images, batch_targets, share)
        with rt.autocast():
            output = run.runner(images)
            loss = run.criterion(output, soft_targets)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        run.after_step()
        run.plan.after_step(run.scheduler.last_epoch, rt)  # a time budget's first plan
        logits.append(output.detach().float())  # kept on the device: moved once, after the epoch
        targets.append(batch_targets)
        if not bar.disable and step % 20 == 0:  # .item() waits for the device, so only for the bar
            bar.set_description(f"epoch {epoch}/{run.plan.epochs}")
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.3g}")
    return torch.cat(logits).cpu(), torch.cat(targets).cpu()


def prepare_evaluation(run, epoch):
    """Precise BN, then the same BatchNorm statistics on every rank (rank 0's: the model saved)."""
    if run.calibration is not None:
        run.calibration.set_epoch(epoch)
        count = math.ceil(run.config["precise_bn_images"] / run.rt.world)
        recalibrate_batch_norms(run.eval_model, run.calibration, count, run.rt)
    if run.rt.world > 1:
        for buffer in [b for m in dict.fromkeys([run.model, run.eval_model]) for b in m.buffers()]:
            dist.broadcast(buffer, 0)


def check_finite(run, epoch, train_logits):
    """Stop on non-finite training logits or weights, before anything of this epoch is saved."""
    weights_finite = all(torch.isfinite(p).all() for p in run.model.parameters())
    if not (weights_finite and torch.isfinite(train_logits).all()):
        raise cli.UserError(f"the training loss or the weights became non-finite in epoch {epoch}; the last "
                            "good checkpoint is kept. Lower --lr or check the images.")


def epoch_metrics(run, train_logits, train_targets):
    """The metrics of one epoch's row: training (from its own logits), validation and test."""
    rt, config = run.rt, run.config
    rows = len(train_targets) * rt.world  # every rank trains on equally many images, none repeated
    splits = {"train": classification_metrics(gather_split(train_logits, rt.world, rows),
                                              gather_split(train_targets, rt.world, rows), config["class_names"])}
    for short, split in (("val", "validation"), ("test", "test")):
        splits[short] = evaluate(run.eval_model, run.loaders[split], rt, config["class_names"], config["tta_flip"])[0]
    return {f"{split}_{k}": round(metrics[k], 6) for split, metrics in splits.items() for k in METRIC_NAMES}


def run_epoch(run, epoch):
    """Train, check and evaluate one epoch; returns its metrics row."""
    epoch_start = time.perf_counter()
    torch.manual_seed(run.config["seed"] * 1000 + epoch)  # the plain loader's augmentation, the mixing
    run.loaders["train"].set_epoch(epoch)
    size = run.plan.crop_size(epoch)
    run.loaders["train"].set_crop_size(size)
    train_logits, train_targets = train_one_epoch(run, epoch)
    train_seconds = time.perf_counter() - epoch_start
    prepare_evaluation(run, epoch)
    check_finite(run, epoch, train_logits)
    row = {"epoch": epoch, **epoch_metrics(run, train_logits, train_targets)}
    seconds = time.perf_counter() - epoch_start
    row.update(lr=run.scheduler.get_last_lr()[0], seconds=round(seconds, 2),
               train_images_per_second=round(len(train_targets) * run.rt.world / train_seconds, 1))
    run.plan.after_epoch(epoch, size, train_seconds, run.rt)  # the N of the next "epoch k/N"
    return row, size


def log_epoch(run, row, size, improved):
    run.log(f"epoch {row['epoch']}/{run.plan.epochs}  {size}px  train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} mAP {row['val_map']:.4f}"
            f" | test loss {row['test_loss']:.4f} | lr {row['lr']:.3g} | {row['seconds']:.1f}s, "
            f"{row['train_images_per_second']:.0f} img/s{'  *best*' if improved else ''}")


# ---------------------------------------------------------------------------------------------
# Save

def metrics_csv(history):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


def better(row, run):
    """Whether an epoch beats the best so far: a higher validation mAP, or the same with a lower loss."""
    return (row["val_map"], -row["val_loss"]) > (run.best_metric, -run.best_loss)


def save_epoch(run, epoch, improved):
    """best.pth (if improved), metrics.csv and the plots, then last.pth.

    last.pth goes last: a resume starts from it, so a kill before it only repeats this epoch
    (writing the same files again), and a kill after it has lost nothing.
    """
    trained = {"train_model": run.model.state_dict()} if run.eval_model is not run.model else {}
    state = {"model": run.eval_model.state_dict(), **trained, "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "epoch": epoch, "planned_epochs": run.plan.epochs,
             "plan": run.plan.state_dict(),
             "best_metric": run.best_metric, "best_loss": run.best_loss, "best_epoch": run.best_epoch,
             "history": run.history, "config": run.config, "format": FORMAT, "trained_on": run.trained_on,
             "runtime": {"device": str(run.rt.device), "precision": "bf16" if run.rt.bf16 else "fp32",
                         "processes": run.rt.world}}
    if improved:
        save_checkpoint(state, os.path.join(run.dir, "best.pth"))
    write_text(os.path.join(run.dir, "metrics.csv"), metrics_csv(run.history))
    save_curves(run.history, run.dir)
    save_checkpoint(state, run.last_path)


def check_splits(config, world):
    """Fail before training if a CSV is broken, an image is not the one the split was made from, the
    splits share a file, or the training split is too small for a batch; the split's digests go into
    the config, so a resume and every reader can tell the same split from another. Returns the
    ``content_ids`` of the training and validation images, which the checkpoints keep."""
    split = read_split(config["splits_dir"], config["data_root"], config["class_names"])
    contents = split.info["sha256"]
    check_disjoint({name: [rel for rel, _ in rows] for name, rows in split.rows.items()}, contents)
    train_count = len(split.rows["train"])
    if train_count // world < 2:  # a batch of one image is dropped (see shard_indices)
        raise cli.UserError(f"{config['train_csv']} lists {train_count} image(s), too few to train on: each of the "
                            f"{world} process(es) needs two or more; make the split with more training images.")
    config["split_sha256"] = split.digests
    return content_ids(contents[rel] for name in ("train", "validation") for rel, _ in split.rows[name])


def check_batch_size(config, world):
    if config["batch_size"] // world < 2:
        raise cli.UserError(f"--batch_size={config['batch_size']} gives each of the {world} process(es) batches of "
                            "fewer than two images, on which BatchNorm cannot train; give --batch_size="
                            f"{2 * world} or more.")


def check_places(config):
    """The run's folders are never a run itself nor in the data root (where a folder is a class)."""
    if is_run_folder(config["checkpoints_dir"]):
        raise cli.UserError(f"--checkpoints_dir={config['checkpoints_dir']} is a run folder itself; name the folder "
                            "that holds the runs (each run is a folder in it).")
    check_output_folder(config["checkpoints_dir"], "checkpoints_dir", config["data_root"])
    if config["loader"] == "cached":
        ensure_folder(config["cache_dir"], "cache_dir")


def train(config):
    """Train (or resume) one run as the config says; returns its final history row."""
    started = time.perf_counter()
    rt = runtime(config["device"], config["precision"])
    check_batch_size(config, rt.world)
    trained_on = check_splits(config, rt.world)
    check_places(config)
    run_dir = os.path.join(ensure_folder(config["checkpoints_dir"], "checkpoints_dir"), config["run"])
    with work_folder(run_dir, "run", f"the run folder {run_dir}"):  # a refusal in it leaves no empty folder
        return train_in(run_dir, config, rt, started, trained_on)


def train_in(run_dir, config, rt, started, trained_on):
    """Train (or resume) the run in ``run_dir``, holding its lock."""
    saved = saved_run(config, run_dir)
    with (RunLock(run_dir) if rt.is_main else nullcontext()):
        run = build_run(config, rt, run_dir, started)
        run.trained_on = trained_on
        if not resume_or_start(run, saved):
            return run.history[-1]
        del saved  # its tensors are in the model and optimizer now; not kept twice while training
        run.runner = wrap_for_training(run)
        describe(run)
        run.plan.begin()
        epoch = len(run.history) + 1
        while epoch <= run.plan.epochs:
            row, size = run_epoch(run, epoch)
            run.history.append(row)
            improved = better(row, run)
            if improved:
                run.best_metric, run.best_loss, run.best_epoch = row["val_map"], row["val_loss"], epoch
            if rt.is_main:
                save_epoch(run, epoch, improved)
            log_epoch(run, row, size, improved)
            epoch += 1
    run.log(f"run {config['run']} done: best validation mAP {run.best_metric:.4f}; files in {run.dir}/")
    return run.history[-1]


def train_presets(config, overrides):
    """Train the preset the config names, or with ``preset=all`` the report's four one after another."""
    names = REPORT_PRESETS if config["preset"] == "all" else [config["preset"]]
    if len(names) > 1:
        configs = [resolve_config(config, {**overrides, "preset": name, "run": ""}) for name in names]
    else:
        configs = [resolve_config(config, overrides)]
    for run_config in configs:  # every preset checked before the first trains
        if run_config["pretrained"]:
            imagenet_weights(run_config["arch"], run_config["weights_file"])  # there, or a sentence that says how
    rows = [train(run_config) for run_config in configs]
    if dist.is_initialized():
        dist.destroy_process_group()
    return rows
