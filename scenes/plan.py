"""The plan of a training run: how many epochs, and what each step and epoch does.

One ``EpochPlan`` per run drives the learning rate (a linear warm-up of at most
``WARMUP_MAX_SHARE`` of the planned steps, then a cosine that reaches zero with the last planned
step), the progress bar and the log ("epoch k/N"), progressive resizing and batch mixing.

With a time budget the epochs are planned from the run's first measured steps and planned again
after every epoch, from what the epochs cost. The schedule stays one schedule: a new plan re-times
only the rest of the decay, starting from the learning rate reached, so it never jumps, never rises
after the warm-up and never reaches zero before the run's last step; the crop ramp and mixing are
decided once, by the first plan. Steps drive the decay rather than the elapsed share of the budget
because a run ends at an epoch boundary: a decay by the clock reaches zero inside the last epoch
or stops short of it, while one by steps ends exactly with the last epoch that fits.
"""
import math
from time import perf_counter as clock

import torch
import torch.distributed as dist

from scenes.transforms import eval_size

RAMP_END = 0.75  # progressive resizing reaches image_size at this fraction of the epochs
RECENT_EPOCHS = 3  # a time budget prices the epochs still to run like the mean of this many just run
MIX_MIN_EPOCHS = 30  # batches are mixed only in runs planned for this many epochs or more (RESULTS.md)
WARMUP_MAX_SHARE = 0.05  # the warm-up takes at most this share of the planned steps (a budget: first planned)
PLAN_STEPS = 4  # a time budget's first plan comes after this many steps (the first one is not timed)
EVAL_COST = 1 / 3  # an evaluated image costs this share of a trained one at the same size (FLOPs)
KEEP_SLACK = 0.05  # an epoch already planned is kept unless it would end this share of the budget late


def crop_size(epoch, config, epochs):
    """The training crop size of an epoch: ``image_size``, or with progressive resizing a linear ramp
    from ``progressive_min_size`` at the first epoch to ``image_size`` at ``RAMP_END`` of the
    ``epochs``, in steps of 16 pixels."""
    low, high = config["progressive_min_size"], config["image_size"]
    if not 0 < low < high:
        return high
    progress = min(1.0, (epoch - 1) / max(1, round(RAMP_END * epochs) - 1))
    return max(low, min(high, 16 * round((low + progress * (high - low)) / 16)))


def planned_epochs(config, spent, done, recent, rt, ramp=None, slack=0.0):
    """How many epochs fit the time budget (the same on every rank), at least ``done``.

    ``spent`` seconds of the budget (stretched by ``slack``, a share) are gone and ``done`` epochs
    finished. Each later epoch is priced like ``recent``, the (crop size, training seconds, other
    seconds) of the last epochs: its training time scaled by its crops' area (progressive resizing
    over ``ramp`` epochs, or over the plan priced when None), its evaluation and saving the same.
    """
    numbers = torch.tensor([spent, sum(t / s ** 2 for s, t, _ in recent) / len(recent),
                            sum(e for *_, e in recent) / len(recent)], dtype=torch.float64)
    if rt.world > 1:  # NCCL reduces tensors on the GPU only
        numbers = numbers.to(rt.device if rt.device.type == "cuda" else "cpu")
        dist.all_reduce(numbers, op=dist.ReduceOp.MAX)
    spent, per_pixel, other_seconds = numbers.tolist()
    remaining = config["time_budget_min"] * 60 * (1 + slack) - spent

    def cost(epochs):  # the seconds of epochs done+1..epochs of a plan of that many
        size = lambda e: crop_size(e, config, ramp or epochs)  # noqa: E731
        return sum(per_pixel * size(e) ** 2 + other_seconds for e in range(done + 1, epochs + 1))
    cheapest = per_pixel * crop_size(1, config, 1) ** 2 + other_seconds
    low, high = done, done + max(0, int(remaining // cheapest))
    while low < high:  # the most epochs whose cost fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if cost(middle) <= remaining else (low, middle - 1)
    return low


class EpochPlan:
    """The planned epochs of a run (``epochs``) and what follows from them per step and epoch.

    The learning rate follows two lines, each re-timed by a new plan from the point reached: the
    warm-up's factor from ``warmup_from`` (step, factor) to 1 at step ``warmup_steps - 1``, then the
    cosine's progress from ``decay_from`` (step, progress) to 1 at the last planned step.
    ``started`` is when the run's process started and ``spent_before`` the seconds its epochs took
    before a resume: both count against a time budget.
    """

    def __init__(self, config, steps_per_epoch, started, eval_images=0, log=print, spent_before=0.0):
        self.config, self.steps_per_epoch, self.log = config, steps_per_epoch, log
        self.eval_images = eval_images  # this rank's validation and test images, evaluated every epoch
        self.started, self.spent_before = started, spent_before
        self.budget = config["time_budget_min"] > 0
        self.timings = []  # (crop size, training seconds, other seconds) of this process's epochs
        self.began = self.planned_at = self.first_step_done = started
        # a budget's first plan is not known yet: until it comes, the shortest plan (one epoch), its
        # decay held back until the plan, so that a long run does not spend it in its first steps
        self.decide(1 if self.budget else config["epochs"], self.max_warmup(1 if self.budget else config["epochs"]))
        self.first_planned = not self.budget
        if self.budget:
            self.decay_from = (max(self.warmup_steps, self.first_plan_step()), 0.0)

    def first_plan_step(self):
        """After how many steps a budget's first plan comes: ``PLAN_STEPS``, and in an epoch of
        fewer steps before its last, so that even a one-epoch run decays."""
        return max(1, min(PLAN_STEPS, self.steps_per_epoch - 1))

    def max_warmup(self, epochs):
        """The warm-up in steps of a plan of ``epochs``: ``warmup_epochs``, at most its share."""
        steps = self.steps_per_epoch
        return min(self.config["warmup_epochs"] * steps, WARMUP_MAX_SHARE * epochs * steps)

    def decide(self, epochs, warmup_steps):
        """A whole plan from its start: epochs, warm-up, the crop ramp and mixing."""
        self.epochs = self.ramp_epochs = self.mix_epochs = epochs
        self.warmup_steps, self.warmup_from = warmup_steps, (-1, 0.0)
        self.decay_from = (warmup_steps, 0.0)

    def state_dict(self):
        return {"epochs": self.epochs, "warmup_steps": self.warmup_steps, "warmup_from": list(self.warmup_from),
                "decay_from": list(self.decay_from), "ramp_epochs": self.ramp_epochs, "mix_epochs": self.mix_epochs}

    def load_state_dict(self, state):
        """Continue a saved plan. A run without a budget takes its epochs from the config (a larger
        ``--epochs`` extends it: its cosine is spread over the new length) and keeps its warm-up."""
        if self.budget:
            self.epochs, self.warmup_steps = state["epochs"], state["warmup_steps"]
            self.warmup_from, self.decay_from = tuple(state["warmup_from"]), tuple(state["decay_from"])
            self.ramp_epochs, self.mix_epochs = state["ramp_epochs"], state["mix_epochs"]
        else:
            self.decide(self.config["epochs"], state["warmup_steps"])
        self.first_planned = True

    # --- what the plan says per step and epoch

    def crop_size(self, epoch):
        return crop_size(epoch, self.config, self.ramp_epochs)

    def mix_share(self, epoch):
        """The share of this epoch's batches that are mixed: ``mix_prob`` from the second epoch to
        ``mix_until`` of the epochs of a run first planned for ``MIX_MIN_EPOCHS`` or more, else none."""
        config = self.config
        mixing = self.mix_epochs >= MIX_MIN_EPOCHS and config["mix_prob"] > 0
        last = self.mix_epochs if config["mix_until"] < 1 else math.inf  # 1: to the end, however long
        return config["mix_prob"] if mixing and 1 < epoch <= config["mix_until"] * last else 0.0

    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def progress(self, step):
        """The share of the cosine done before ``step`` (0 at the warm-up's end, 1 at the last step)."""
        start, done = self.decay_from
        total = max(self.total_steps(), start + 1)
        return min(1.0, max(0.0, done + (1 - done) * (step - start) / (total - start)))

    def lr_factor(self, step):
        """The learning rate of step ``step`` (from 0) as a share of the peak."""
        if step < self.warmup_steps:
            start, factor = self.warmup_from
            span = self.warmup_steps - 1 - start  # to the factor 1 at step warmup_steps - 1
            return 1.0 if span <= 0 else min(1.0, factor + (1 - factor) * (step - start) / span)
        if self.config["schedule"] == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * self.progress(step)))

    # --- planning with a time budget

    def begin(self):
        """Start timing the epochs: an epoch's other seconds count from here or the last planning."""
        self.began = self.planned_at = clock()

    def after_step(self, step, rt):
        """After ``step`` steps of the run: a budget's first plan, once, from the steps timed so far."""
        if self.first_planned:
            return
        if step == 1:
            self.first_step_done = seconds_now(rt)  # the first step builds kernels: not timed
        if step == self.first_plan_step():
            timed = max(1, step - 1)
            since = self.first_step_done if step > 1 else self.planned_at
            self.plan_first(step, (seconds_now(rt) - since) / timed, rt)

    def plan_first(self, step, step_seconds, rt):
        """Plan the run from one step's seconds; decide the crop ramp, mixing and the warm-up."""
        size = crop_size(1, self.config, 1)
        train_seconds = step_seconds * self.steps_per_epoch
        spent = self.spent_before + self.began - self.started
        other_seconds = self.eval_seconds(step_seconds, size, rt.world)
        epochs = max(1, planned_epochs(self.config, spent, 0, [(size, train_seconds, other_seconds)], rt))
        warmup_steps = max(self.warmup_steps, self.max_warmup(epochs))
        if step < self.warmup_steps:  # the warm-up goes on, re-timed from where it is
            self.warmup_from = (step, self.lr_factor(step))
            self.warmup_steps, self.decay_from = warmup_steps, (warmup_steps, 0.0)
        else:  # it ended: the decay goes on, re-timed from where it is
            self.decay_from = (step, self.progress(step))
        self.epochs = self.ramp_epochs = self.mix_epochs = epochs
        self.first_planned = True
        self.log(self.first_plan_text(train_seconds + other_seconds, spent))

    def eval_seconds(self, step_seconds, size, world):
        """What evaluating an epoch costs, guessed from a training step's seconds (refined by the
        epoch's own time once it is done)."""
        config = self.config
        per_image = step_seconds / max(1, config["batch_size"] // world)
        images = self.eval_images + config["precise_bn_images"] / world
        return EVAL_COST * per_image * (eval_size(config) / size) ** 2 * images

    def first_plan_text(self, epoch_seconds, spent):
        budget = f"time budget {self.config['time_budget_min']:g} min"
        if self.epochs == 1 and spent + epoch_seconds > self.config["time_budget_min"] * 60:
            return (f"{budget}: one epoch takes about {epoch_seconds / 60:.1f} min here, more than the "
                    f"{max(0, self.config['time_budget_min'] - spent / 60):.1f} min left; training one epoch of "
                    f"{self.what_it_trains()}, its learning rate decaying to zero at its end")
        return (f"{budget}: {self.epochs} epoch{'s' if self.epochs > 1 else ''} fit at this speed (about "
                f"{epoch_seconds:.0f} s each) of {self.what_it_trains()}; planned again after each epoch, "
                "the learning rate decaying to zero at the end of the last one that fits")

    def what_it_trains(self):
        """The crop sizes, mixing and warm-up of the plan, in words."""
        config, first = self.config, self.crop_size(1)
        grow = (f"crops growing from {first} to {config['image_size']} px over {round(RAMP_END * self.ramp_epochs)} "
                f"epochs" if first < config["image_size"] else f"{first} px crops")
        until = f" to epoch {math.floor(config['mix_until'] * self.mix_epochs)}" if config["mix_until"] < 1 else ""
        mix = (f"MixUp/CutMix on {config['mix_prob']:g} of the batches from epoch 2{until}" if self.mix_share(2) > 0
               else f"no MixUp/CutMix (it needs {MIX_MIN_EPOCHS}+ epochs)" if config["mix_prob"] > 0 else "no mixing")
        warmup = f"a warm-up of {self.warmup_steps:.0f} steps" if self.warmup_steps >= 2 else "no warm-up"
        return f"{grow}, {mix}, {warmup}"

    def after_epoch(self, epoch, size, train_seconds, rt):
        """Record what the epoch cost and, with a time budget, plan the rest of the run again."""
        now = clock()
        self.timings.append((size, train_seconds, now - self.planned_at - train_seconds))
        self.planned_at = now
        if not self.budget or epoch >= self.epochs:  # a finished decay is never extended
            return
        spent, recent = self.spent_before + now - self.started, self.timings[-RECENT_EPOCHS:]
        epochs = planned_epochs(self.config, spent, epoch, recent, rt, self.ramp_epochs)
        if epochs < self.epochs:  # noise in the timings does not cost an epoch the budget nearly holds
            epochs = min(self.epochs, planned_epochs(self.config, spent, epoch, recent, rt, self.ramp_epochs,
                                                     KEEP_SLACK))
        if epochs != self.epochs:
            step = epoch * self.steps_per_epoch
            if epochs > epoch:
                self.decay_from = (step, self.progress(step))
            self.log(f"planned again after epoch {epoch}: {epochs} epochs fit (were {self.epochs})"
                     + ("; stopping here" if epochs == epoch else ""))
            self.epochs = epochs


def seconds_now(rt):
    """The clock, after the device's queued work (a GPU runs ahead of the Python that queues it)."""
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    return clock()
