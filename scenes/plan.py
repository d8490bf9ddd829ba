"""The epoch plan of a training run: how many epochs, and what each one does.

One ``EpochPlan`` per run is read by the learning-rate schedule (its cosine ends with the planned
epochs), the progress bar and the log ("epoch k/N"), progressive resizing and batch mixing; with
a time budget it plans the epochs again after every epoch, from what the last ones cost.
"""
import math
import time

import torch
import torch.distributed as dist

RAMP_END = 0.75  # progressive resizing reaches image_size at this fraction of the epochs
RECENT_EPOCHS = 3  # a time budget prices the epochs still to run like the mean of this many just run
MIX_MIN_EPOCHS = 30  # batches are mixed only in runs planned for this many epochs or more (RESULTS.md)


def crop_size(epoch, config, epochs):
    """The training crop size of an epoch: ``image_size``, or with progressive resizing a linear ramp
    from ``progressive_min_size`` at the first epoch to ``image_size`` at ``RAMP_END`` of the
    epochs, in steps of 16 pixels."""
    low, high = config["progressive_min_size"], config["image_size"]
    if not 0 < low < high:
        return high
    progress = min(1.0, (epoch - 1) / max(1, round(RAMP_END * epochs) - 1))
    return max(low, min(high, 16 * round((low + progress * (high - low)) / 16)))


def planned_epochs(config, spent, done, recent, rt):
    """How many epochs fit the time budget (the same on every rank).

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


class EpochPlan:
    """The planned number of epochs of a run (``epochs``) and what follows from it per epoch.

    ``started`` is when the run's process started and ``spent_before`` the seconds its epochs took
    before a resume: both count against a time budget.
    """

    def __init__(self, config, epochs, steps_per_epoch, started, spent_before=0.0):
        self.config, self.epochs, self.steps_per_epoch = config, epochs, steps_per_epoch
        self.started, self.spent_before = started, spent_before
        self.timings = []  # (crop size, training seconds, other seconds) of this process's epochs
        self.planned_at = started

    def begin(self):
        """Start timing the epochs: an epoch's other seconds count from here or the last planning."""
        self.planned_at = time.perf_counter()

    def crop_size(self, epoch):
        return crop_size(epoch, self.config, self.epochs)

    def mix_share(self, epoch):
        """The share of this epoch's batches that are mixed: ``mix_prob`` from the second epoch to
        ``mix_until`` of the epochs of a run planned for ``MIX_MIN_EPOCHS`` or more, else none."""
        config = self.config
        long_run = self.epochs >= MIX_MIN_EPOCHS
        return config["mix_prob"] if long_run and 1 < epoch <= config["mix_until"] * self.epochs else 0.0

    def lr_factor(self, step):
        """Linear warm-up, then cosine decay to zero over the planned epochs (or constant)."""
        warmup = self.config["warmup_epochs"] * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if self.config["schedule"] == "constant":
            return 1.0
        total = max(self.epochs * self.steps_per_epoch, warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    def after_epoch(self, epoch, size, train_seconds, rt):
        """Record what the epoch cost and, with a time budget, plan the epochs again."""
        now = time.perf_counter()
        self.timings.append((size, train_seconds, now - self.planned_at - train_seconds))
        self.planned_at = now
        if self.config["time_budget_min"] > 0:
            spent = self.spent_before + now - self.started
            self.epochs = planned_epochs(self.config, spent, epoch, self.timings[-RECENT_EPOCHS:], rt)
