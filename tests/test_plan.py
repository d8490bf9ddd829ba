"""The learning-rate schedule and the epoch plan of scenes/plan.py, on a simulated clock (milliseconds).

``simulate`` drives an ``EpochPlan`` the way train.py does (a factor per step as LambdaLR asks for
it, ``after_step`` after each step, ``after_epoch`` after each epoch's evaluation), with steps and
evaluations that take the seconds a test gives them.
"""
import math

import pytest

from conftest import CPU
from scenes import plan


def config_of(**settings):
    return {"time_budget_min": 0.0, "epochs": 30, "warmup_epochs": 1.0, "schedule": "cosine", "image_size": 112,
            "progressive_min_size": 0, "eval_image_size": 144, "mix_prob": 0.5, "mix_until": 1.0,
            "precise_bn_images": 0, "batch_size": 64, **settings}


class Simulated:
    """A run on a fake clock: ``factors`` (the learning-rate factor of each step), ``ends`` (the
    factor after each epoch, as metrics.csv records it), ``seconds`` (the whole run), the plan's
    decisions after each epoch, and its log."""

    def __init__(self, monkeypatch, config, steps_per_epoch, step_seconds, eval_seconds=5.0, startup=5.0,
                 state=None):
        now = [0.0]
        monkeypatch.setattr(plan, "clock", lambda: now[0])
        self.log = []
        self.plan = plan.EpochPlan(config, steps_per_epoch, 0.0, eval_images=100, log=self.log.append)
        if state is not None:  # resumed after the epochs of ``state``
            self.plan.load_state_dict(state["plan"])
            self.plan.spent_before = state["seconds"]
        now[0] = startup
        self.plan.begin()
        self.factors, self.ends, self.decisions = [], [], []
        epoch = 1 + (state["epochs_done"] if state else 0)
        step = (epoch - 1) * steps_per_epoch
        factor = self.plan.lr_factor(step)  # LambdaLR's first factor, at its construction
        while epoch <= self.plan.epochs:
            start = now[0]
            for _ in range(steps_per_epoch):
                self.factors.append(factor)
                now[0] += step_seconds(epoch)
                step += 1
                factor = self.plan.lr_factor(step)  # scheduler.step(), then the plan
                self.plan.after_step(step, CPU)
                assert self.plan.lr_factor(step) == pytest.approx(factor, abs=1e-12), "a plan moved the lr"
            train_seconds = now[0] - start
            now[0] += eval_seconds
            self.ends.append(factor)
            self.plan.after_epoch(epoch, self.plan.crop_size(epoch), train_seconds, CPU)
            assert self.plan.lr_factor(step) == pytest.approx(factor, abs=1e-12), "a new plan moved the lr"
            self.decisions.append((self.plan.ramp_epochs, self.plan.mix_epochs, self.plan.warmup_steps))
            epoch += 1
        self.seconds, self.steps = now[0], step


def after_warmup(simulated):
    return simulated.factors[math.ceil(simulated.plan.warmup_steps):]


def never_rises(factors):
    return all(later <= earlier + 1e-12 for earlier, later in zip(factors, factors[1:]))


def test_a_run_of_fixed_epochs_warms_up_for_at_most_its_share_then_decays_to_zero_at_its_last_step(monkeypatch):
    run = Simulated(monkeypatch, config_of(epochs=4), 100, lambda epoch: 1.0)
    assert run.plan.warmup_steps == 20  # one epoch asked for, 5% of the 400 steps given
    assert run.factors[0] == pytest.approx(1 / 20) and run.factors[19] == 1.0
    assert run.factors[:20] == sorted(run.factors[:20]) and never_rises(run.factors[19:])
    assert run.factors[-1] > 0 and run.ends[-1] == 0.0 and len(run.ends) == 4
    assert run.factors[210] == pytest.approx(0.5 * (1 + math.cos(math.pi * 190 / 380)))  # the plain cosine
    long_run = Simulated(monkeypatch, config_of(epochs=30), 10, lambda epoch: 0.1)
    assert long_run.plan.warmup_steps == 10  # one epoch: within 5% of 30


def check_one_schedule(run, budget_min):
    """What every budget run must show: the warm-up within its share of the first plan, the factor
    never rising after it, no epoch at factor 0, zero at the last step, within the budget."""
    first_plan_steps = run.decisions[0][0] * run.plan.steps_per_epoch
    assert run.plan.warmup_steps <= plan.WARMUP_MAX_SHARE * first_plan_steps + 1e-9
    assert never_rises(after_warmup(run)) and never_rises(run.ends)
    assert all(factor > 0 for factor in run.factors)  # no step, so no epoch, at learning rate 0
    assert run.ends[-1] == 0.0 and run.plan.epochs == len(run.ends)
    assert run.seconds <= budget_min * 60 * (1 + plan.KEEP_SLACK)
    assert len(set(run.decisions)) == 1, "the crop ramp, mixing or warm-up changed after the first plan"


def test_a_budget_run_at_a_steady_speed_plans_once_and_ends_within_the_budget(monkeypatch):
    run = Simulated(monkeypatch, config_of(time_budget_min=10.0), 50, lambda epoch: 0.5)
    check_one_schedule(run, 10.0)
    assert 15 <= len(run.ends) <= 20  # 30 s an epoch, 5 s of start-up: 19 fit, 20 within the slack
    assert run.seconds > 0.9 * 600  # and the budget is used
    assert run.log[0].startswith(f"time budget 10 min: {run.decisions[0][0]} epochs fit")


def test_a_budget_warmup_is_as_long_as_the_first_plan_allows_and_continues_from_where_it_is(monkeypatch):
    # 200 steps an epoch: the first plan (after 4 steps) comes during the shortest plan's warm-up
    run = Simulated(monkeypatch, config_of(time_budget_min=5.0), 200, lambda epoch: 0.1)
    check_one_schedule(run, 5.0)
    warmup = math.ceil(run.plan.warmup_steps)
    assert 10 < warmup < 200  # longer than one epoch's 5%, shorter than the epoch asked for
    assert run.factors[:warmup] == sorted(run.factors[:warmup]) and run.factors[warmup - 1] == 1.0
    assert run.factors[4] - run.factors[3] < run.factors[1] - run.factors[0]  # slower after the first plan


@pytest.mark.parametrize("speeds, grows", [
    ((0.5, 1.0), False),  # the machine slows down after epoch 4: fewer epochs fit than first planned
    ((1.0, 0.4), True),  # it speeds up: more fit
])
def test_a_new_plan_retimes_the_rest_of_the_decay_without_a_jump(monkeypatch, speeds, grows):
    run = Simulated(monkeypatch, config_of(time_budget_min=10.0), 50, lambda epoch: speeds[epoch > 4])
    check_one_schedule(run, 10.0)
    first_plan = run.decisions[0][0]
    assert (len(run.ends) > first_plan) if grows else (len(run.ends) < first_plan)
    assert any(line.startswith("planned again after epoch") for line in run.log)
    decay = after_warmup(run)
    steps = [later - earlier for earlier, later in zip(decay, decay[1:])]
    assert max(abs(step) for step in steps) < 0.05  # the steepest part of a compressed cosine, not a jump


def test_a_budget_below_one_epoch_trains_one_epoch_decaying_to_zero(monkeypatch):
    run = Simulated(monkeypatch, config_of(time_budget_min=0.5), 50, lambda epoch: 1.0)
    assert len(run.ends) == 1 and run.ends[0] == 0.0 and run.factors[-1] > 0
    assert run.plan.warmup_steps <= plan.WARMUP_MAX_SHARE * 50 and never_rises(after_warmup(run))
    assert run.log[0].startswith("time budget 0.5 min: one epoch takes about 0.8 min here, more than the 0.4 min "
                                 "left; training one epoch of 112 px crops")


def test_a_long_budget_of_short_epochs_keeps_its_decay_for_the_plan(monkeypatch):
    # 7 steps an epoch: the warm-up (5% of one epoch) is over before the first plan, after step 4
    run = Simulated(monkeypatch, config_of(time_budget_min=10.0), 7, lambda epoch: 0.5)
    check_one_schedule(run, 10.0)
    assert run.factors[:5] == [1.0] * 5  # at the peak until the plan, not decaying as if one epoch were all
    assert run.ends[0] > 0.99 and len(run.ends) > 50


def test_an_epoch_of_three_steps_still_decays_within_a_budget_below_it(monkeypatch):
    run = Simulated(monkeypatch, config_of(time_budget_min=0.05), 3, lambda epoch: 10.0)
    assert len(run.ends) == 1 and run.ends[0] == 0.0  # planned after step 2, not after the epoch


def test_mixing_and_the_crop_ramp_are_decided_by_the_first_plan_only(monkeypatch):
    config = config_of(time_budget_min=30.0, progressive_min_size=64, mix_until=0.5)
    # about 50 epochs fit at first; from epoch 10 the steps take three times as long
    run = Simulated(monkeypatch, config, 20, lambda epoch: 1.0 if epoch < 10 else 3.0, eval_seconds=15.0)
    check_one_schedule(run, 30.0)
    first_plan = run.decisions[0][0]
    assert first_plan >= plan.MIX_MIN_EPOCHS > len(run.ends)  # mixing was planned; the run got shorter
    shares = [run.plan.mix_share(epoch) for epoch in range(1, len(run.ends) + 1)]
    assert shares[0] == 0 and shares[1:first_plan // 2] == [0.5] * (first_plan // 2 - 1)  # mix_until of the first plan
    assert shares[1:] == sorted(shares[1:], reverse=True) and 0.0 in shares  # on from epoch 2, then off, once
    sizes = [run.plan.crop_size(epoch) for epoch in range(1, len(run.ends) + 1)]
    assert sizes == sorted(sizes) and sizes[0] == 64
    assert "crops growing from 64 to 112 px over" in run.log[0] and "MixUp/CutMix on 0.5" in run.log[0]


def test_a_short_plan_says_it_does_not_mix(monkeypatch):
    run = Simulated(monkeypatch, config_of(time_budget_min=5.0), 50, lambda epoch: 0.5)
    assert all(run.plan.mix_share(epoch) == 0 for epoch in range(1, 20))
    assert f"no MixUp/CutMix (it needs {plan.MIX_MIN_EPOCHS}+ epochs)" in run.log[0]


def test_a_finished_decay_is_never_extended(monkeypatch):
    config = config_of(time_budget_min=10.0)
    run = Simulated(monkeypatch, config, 50, lambda epoch: 0.5)
    epochs = run.plan.epochs
    config["time_budget_min"] = 20.0  # as if the budget had been raised and the epochs had become very fast
    run.plan.timings = [(112, 1.0, 0.0)]
    run.plan.after_epoch(epochs, 112, 1.0, CPU)
    assert run.plan.epochs == epochs and run.plan.lr_factor(run.steps) == 0.0


def test_a_resumed_budget_run_continues_the_same_schedule(monkeypatch):
    config = config_of(time_budget_min=10.0)
    whole = Simulated(monkeypatch, config, 50, lambda epoch: 0.5)
    # the same run, stopped after epoch 6: its plan as saved then, and resumed
    monkeypatch.setattr(plan.EpochPlan, "after_epoch", stop_after(6, plan.EpochPlan.after_epoch))
    with pytest.raises(KeyboardInterrupt) as stopped:
        Simulated(monkeypatch, config, 50, lambda epoch: 0.5)
    monkeypatch.undo()
    state, seconds = stopped.value.args
    resumed = Simulated(monkeypatch, config, 50, lambda epoch: 0.5, startup=5.0,
                        state={"plan": state, "epochs_done": 6, "seconds": seconds})
    assert resumed.factors == pytest.approx(whole.factors[6 * 50:], abs=1e-12)
    assert len(resumed.ends) == len(whole.ends) - 6


def stop_after(last_epoch, after_epoch):
    def stopping(self, epoch, *args):
        after_epoch(self, epoch, *args)
        if epoch == last_epoch:
            raise KeyboardInterrupt(self.state_dict(), plan.clock() - self.started)
    return stopping


def test_a_run_of_fixed_epochs_resumed_with_more_epochs_spreads_its_cosine_over_them(monkeypatch):
    run = Simulated(monkeypatch, config_of(epochs=2), 10, lambda epoch: 1.0)
    longer = plan.EpochPlan(config_of(epochs=4), 10, 0.0)
    longer.load_state_dict(run.plan.state_dict())
    assert longer.warmup_steps == run.plan.warmup_steps == 1.0  # the warm-up it had
    assert longer.lr_factor(20) == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 39)))
