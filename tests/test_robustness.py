"""Fault injection for SPEC section 6 (bad input and faults): each fault is made for real and checked.

- training killed with SIGKILL at seeded random points, mid-save included, then resumed until done:
  no file is ever torn and the weights equal those of an uninterrupted run;
- a last.pth that is truncated, empty, text, a plain tensor, or a pickle that would run code;
- a full disk while saving; two trainers on one run folder; a lock left by a killed trainer;
- images that break after the split, a CSV that puts one file in two splits, bad dataset roots,
  1x1 and 5000x5000 images;
- a user mistake is one "error:" line on stderr with exit status 2, a bug keeps its traceback.
"""
import csv
import errno
import filecmp
import importlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, ImageDraw

from scenes import training
from scenes import cli
import main as main_script
import train
from scenes.checkpoints import RunLock, check_class_names, load_checkpoint, model_from_checkpoint, save_checkpoint
from conftest import ROOT, train_args
from scenes.splitting import make_splits
from scenes.demo import make_demo_dataset
from scenes.loaders import build_loader, source_of
from scenes.transforms import augment_of, eval_size

KILL_SEED = 20240607  # the kill schedule (order of the modes, delays, which save) is drawn from this seed
KILL_MODES = ["start"] * 2 + ["train"] * 4 + ["save"] * 4  # ten kills of one run
TIMING_COLUMNS = {"seconds", "train_images_per_second"}


# ---------------------------------------------------------------------------------------------
# helpers

def script_env():
    """Subprocesses run single-threaded: fast on a shared CPU and bit-for-bit repeatable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_script(args, log_path):
    """Start ``python <args>`` in the repository, stdout and stderr into ``log_path``."""
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=script_env(), stdout=log,
                                stderr=subprocess.STDOUT)


def run_script(args, timeout=180):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=script_env(), capture_output=True, text=True,
                          timeout=timeout)


def run_cli(main, argv, capsys):
    """Run ``main(argv)`` the way the scripts do (``cli.run``); returns (exit status, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: main(argv))
    return exit_info.value.code, capsys.readouterr().err


def assert_user_error(code, err, *words):
    """Exit status 2 and exactly one line on stderr, "error: ...", holding every one of ``words``."""
    assert code == 2, f"exit status {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"want one 'error:' line, got:\n{err}"
    for word in words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"
    return lines[0]


def tiny_splits(base, per_class=4):
    """Six generated classes of ``per_class`` 32x32 JPEGs and their splits (half train)."""
    root = make_demo_dataset(str(base / "images"), per_class=per_class, size=32)
    splits_dir = str(base / "splits")
    make_splits(root, splits_dir, val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    return root, splits_dir


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def loads(path):
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


class RunsCode:
    """Pickles as a call of ``os.system``: an unsafe ``torch.load`` of it runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious_checkpoint(sentinel):
    """A checkpoint of the right shape whose weights are a pickled command that creates ``sentinel``."""
    return {"model": RunsCode(f"touch {shlex.quote(str(sentinel))}"), "epoch": 1,
            "config": {"arch": "resnet18", "class_names": ["a", "b"], "image_size": 32,
                       "mean": [0.5] * 3, "std": [0.5] * 3}}


def small_checkpoint(epoch, numel=1000):
    return {"model": {"weight": torch.full((numel,), float(epoch))}, "epoch": epoch,
            "config": {"arch": "resnet18", "class_names": ["a", "b"], "image_size": 32,
                       "mean": [0.5] * 3, "std": [0.5] * 3}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished one-epoch run ``base`` (last.pth, best.pth, ...) on a tiny split."""
    base = tmp_path_factory.mktemp("trained")
    root, splits_dir = tiny_splits(base)
    train.main(train_args(splits_dir, base, "--run=base", "--precision=fp32"))
    return SimpleNamespace(base=base, root=root, splits_dir=splits_dir, run_dir=base / "checkpoints" / "base")


def copy_run(trained, dest):
    """The trained run in ``dest/checkpoints/base`` (hard links: nothing here writes in place);
    returns (run folder, train.py arguments that resume it)."""
    run_dir = dest / "checkpoints" / "base"
    shutil.copytree(trained.run_dir, run_dir, copy_function=os.link)
    args = train_args(trained.splits_dir, trained.base, "--run=base", "--precision=fp32",
                      f"--checkpoints_dir={dest / 'checkpoints'}")
    return run_dir, args


# ---------------------------------------------------------------------------------------------
# kill -9 at random points

# Importing torch, torchvision and sklearn takes most of a script's start on a busy 2-core machine,
# so the many short-lived processes here are forked from a server that imported train.py once.
# Each child is its own process running a snippet with its stdout and stderr in files; a trainer's
# snippet runs exactly what `python train.py ARGV` runs. SIGKILL ends a child like any process.
FORK_SERVER = r"""
import json, os, sys, traceback
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401  (once here, not in every child)
import train
from scenes import cli

exited = {}
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "start":
        pid = os.fork()
        if pid == 0:  # the child: runs its snippet and exits, never returns to this loop
            code = 1
            try:
                for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
                exec(request["code"], {"argv": request["argv"]})
                code = 0
            except SystemExit as error:
                code = 0 if error.code is None else error.code if isinstance(error.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        answer = pid
    else:  # poll (None while running) or wait; both reap a finished child
        pid = request["pid"]
        if pid not in exited:
            done, status = os.waitpid(pid, os.WNOHANG if request["op"] == "poll" else 0)
            if done:
                exited[pid] = os.waitstatus_to_exitcode(status)
        answer = exited.get(pid)
    print(json.dumps(answer), flush=True)
"""
TRAIN = "import train\nfrom scenes import cli\ncli.run(lambda: train.main(argv))"


class Trainers:
    """Start, poll, kill and reap trainer processes forked from one server (see FORK_SERVER)."""

    def __init__(self):
        self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, env=script_env(),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.unreaped = set()

    def ask(self, **request):
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline()
        assert answer, f"the fork server died (exit status {self.server.wait()})"
        return json.loads(answer)

    def start(self, argv, log_stem, code=TRAIN):
        """A trainer with ``argv`` (or another snippet ``code`` that reads ``argv``); its output goes
        to ``log_stem``.out and .err. Returns its pid."""
        pid = self.ask(op="start", code=code, argv=[str(a) for a in argv], stdout=f"{log_stem}.out",
                       stderr=f"{log_stem}.err")
        self.unreaped.add(pid)
        return pid

    def running(self, pid):
        running = self.ask(op="poll", pid=pid) is None
        if not running:
            self.unreaped.discard(pid)
        return running

    def kill(self, pid):
        os.kill(pid, signal.SIGKILL)
        return self.wait(pid)

    def wait(self, pid):
        """Reap the trainer (a zombie would still look alive to the run folder's lock)."""
        code = self.ask(op="wait", pid=pid)
        self.unreaped.discard(pid)
        return code

    def close(self):
        for pid in list(self.unreaped):  # left running by a failed test
            self.kill(pid)
        self.server.kill()  # it holds nothing: no need to wait for its interpreter to wind down
        self.server.wait()


@pytest.fixture(scope="module")
def trainers():
    if not hasattr(os, "fork"):
        pytest.skip("the trainers are forked (POSIX)")
    server = Trainers()
    yield server
    server.close()


def fresh_tmp(path, since_ns):
    """True while a save that started after ``since_ns`` is writing ``path`` (a .tmp file)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return False
    return stat.st_mtime_ns >= since_ns and stat.st_size > 0


def wait_until(done, trainers, pid, timeout=120, every=0.002):
    """Poll ``done()`` until it holds, the trainer ends, or the timeout passes."""
    deadline, checked = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        if done():
            return
        if time.monotonic() - checked > 0.05:
            if not trainers.running(pid):
                return
            checked = time.monotonic()
        time.sleep(every)


def saves_seen(run_dir, count, since_ns):
    """A ``done()`` for wait_until: true while the ``count``-th checkpoint write since ``since_ns``
    is under way (its .tmp exists, fresh, and grows)."""
    names = [run_dir / "last.pth.tmp", run_dir / "best.pth.tmp"]
    state = {"seen": 0, "writing": set()}

    def done():
        now = {name for name in names if fresh_tmp(name, since_ns)}
        state["seen"] += len(now - state["writing"])
        state["writing"] = now
        return state["seen"] >= count
    return done


def check_run_files(run_dir, previous_epoch):
    """Every file a kill may have hit is whole; last.pth never goes back. Returns its epoch."""
    epoch = 0
    if (run_dir / "last.pth").exists():
        last = load_checkpoint(str(run_dir / "last.pth"))
        epoch = last["epoch"]
        assert [row["epoch"] for row in last["history"]] == list(range(1, epoch + 1))
    assert epoch >= previous_epoch, f"last.pth went back from epoch {previous_epoch} to {epoch}"
    if (run_dir / "best.pth").exists():
        assert load_checkpoint(str(run_dir / "best.pth"))["epoch"] <= epoch + 1
    if (run_dir / "metrics.csv").exists():
        # written just before last.pth, so it may be one epoch ahead of it, never behind
        rows = read_rows(run_dir / "metrics.csv")
        assert [int(row["epoch"]) for row in rows] == list(range(1, len(rows) + 1))
        assert len(rows) in (epoch, epoch + 1) and all(row["val_map"] for row in rows)
    if (run_dir / "config.json").exists():
        assert json.loads((run_dir / "config.json").read_text())["run"] == run_dir.name
    for png in ("curves.png", "test_loss.png"):
        if (run_dir / png).exists():
            with Image.open(run_dir / png) as image:
                image.load()
    return epoch


def kill_at_random_points(trainers, argv, run_dir, epochs, log_dir):
    """Start the run and SIGKILL it at seeded random points (KILL_MODES); check its files after each kill.

    Kill points are events plus short random delays, so that each trainer gets at most about one
    epoch further however fast the machine is. start: soon after launch (config, lock, model,
    cache, reading last.pth); train: after 0 or 1 epochs of this trainer, in training, evaluation
    or the saves; save: while its n-th checkpoint is being written (its .tmp growing).
    Returns (epoch of last.pth, kills that hit a save, of those that left a torn .tmp, resumes seen).
    """
    rng = random.Random(KILL_SEED)
    modes = list(KILL_MODES)
    rng.shuffle(modes)
    epoch, mid_save, torn, resumed = 0, 0, 0, 0
    for i, mode in enumerate(modes):
        log = log_dir / f"killed-{i}"
        out = Path(f"{log}.out")
        since_ns = time.time_ns()
        pid = trainers.start(argv, log)
        if mode == "start":
            time.sleep(rng.uniform(0.02, 0.8))
        elif mode == "train":
            lines = [f"run {run_dir.name}: ", f"epoch {epoch + 1}/{epochs} "][:1 + rng.randint(0, 1)]
            wait_until(lambda: out.exists() and all(line in out.read_text() for line in lines), trainers, pid,
                       every=0.01)
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            wait_until(saves_seen(run_dir, rng.randint(1, 3), since_ns), trainers, pid)
        assert trainers.running(pid), f"kill {i} ({mode}) came too late: the trainer had ended\n{out.read_text()}"
        assert trainers.kill(pid) == -signal.SIGKILL
        if mode == "save":
            tmps = [p for p in run_dir.glob("*.pth.tmp") if os.stat(p).st_mtime_ns >= since_ns]
            mid_save += bool(tmps)
            torn += any(not loads(p) for p in tmps)
        if epoch and f"run {run_dir.name}: " in out.read_text():  # got as far as training: it resumed
            assert f"resuming run {run_dir.name} from {run_dir / 'last.pth'} at epoch {epoch + 1}" in out.read_text()
            resumed += 1
        epoch = check_run_files(run_dir, epoch)
    return epoch, mid_save, torn, resumed


def assert_same_tensors(ours, theirs, what):
    """Equal nested dicts/lists of tensors and plain values, tensors bit for bit."""
    if isinstance(theirs, torch.Tensor):
        assert torch.equal(ours, theirs), f"{what} differs"
    elif isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), what
        for key in theirs:
            assert_same_tensors(ours[key], theirs[key], f"{what}[{key!r}]")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), what
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_tensors(a, b, f"{what}[{i}]")
    else:
        assert ours == theirs, what


def test_kill_9_at_random_points_then_resume_matches_an_uninterrupted_run(trainers, tmp_path):
    _, splits_dir = tiny_splits(tmp_path)
    epochs = 8

    def argv(run):
        return train_args(splits_dir, tmp_path, f"--run={run}", f"--epochs={epochs}", "--batch_size=4",
                          "--precision=fp32")

    # the uninterrupted run: the real script, alongside on the other core
    reference = start_script(["train.py", *argv("reference")], tmp_path / "reference.log")
    try:
        run_dir = tmp_path / "checkpoints" / "killed"
        epoch, mid_save, torn, resumed = kill_at_random_points(trainers, argv("killed"), run_dir, epochs, tmp_path)
        assert epoch < epochs, "the kills left nothing to resume"
        assert mid_save >= 3 and torn >= 2, f"only {mid_save} kills hit a save ({torn} left a torn .tmp)"
        assert resumed >= 3, f"only {resumed} restarts got as far as resuming"
        final = run_script(["train.py", *argv("killed")])  # the real script finishes the run
        assert final.returncode == 0, final.stdout + final.stderr
        if epoch:
            assert f"resuming run killed from {run_dir / 'last.pth'} at epoch {epoch + 1}" in final.stdout
        assert reference.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    reference_dir = tmp_path / "checkpoints" / "reference"
    for name in ("last.pth", "best.pth"):
        ours, theirs = load_checkpoint(str(run_dir / name)), load_checkpoint(str(reference_dir / name))
        assert ours["epoch"] == theirs["epoch"], name
        for part in ("model", "optimizer", "scheduler"):
            assert_same_tensors(ours[part], theirs[part], f"{name} {part}")
    ours, theirs = read_rows(run_dir / "metrics.csv"), read_rows(reference_dir / "metrics.csv")
    assert len(ours) == epochs
    strip = lambda rows: [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]  # noqa: E731
    assert strip(ours) == strip(theirs)
    assert {"curves.png", "test_loss.png", "config.json"} <= {p.name for p in run_dir.iterdir()}


def test_kill_while_best_pth_is_written_loses_no_best_checkpoint(trainers, tmp_path):
    """Epoch 1 always improves, so its best.pth is written; killed then, the resumed run must still
    end with that best.pth (a last.pth committed before best.pth would skip the epoch for good)."""
    _, splits_dir = tiny_splits(tmp_path)
    argv = train_args(splits_dir, tmp_path, "--run=r", "--precision=fp32")
    run_dir = tmp_path / "checkpoints" / "r"
    since_ns = time.time_ns()
    pid = trainers.start(argv, tmp_path / "killed")
    wait_until(lambda: fresh_tmp(run_dir / "best.pth.tmp", since_ns), trainers, pid)
    assert trainers.kill(pid) == -signal.SIGKILL, (tmp_path / "killed.err").read_text()
    pid = trainers.start(argv, tmp_path / "resumed")
    assert trainers.wait(pid) == 0, (tmp_path / "resumed.err").read_text()
    best, last = load_checkpoint(str(run_dir / "best.pth")), load_checkpoint(str(run_dir / "last.pth"))
    assert best["epoch"] == last["epoch"] == 1
    assert all(torch.equal(best["model"][key], tensor) for key, tensor in last["model"].items())


SLOW_SAVE = r"""
import io, time
import torch
from scenes.checkpoints import save_checkpoint

real_save = torch.save

def slow_save(obj, f, *args, **kwargs):  # a slow disk: the bytes go out in small pieces
    buffer = io.BytesIO()
    real_save(obj, buffer)
    data = buffer.getvalue()
    for start in range(0, len(data), 1 << 16):
        f.write(data[start:start + (1 << 16)])
        f.flush()
        if start >= len(data) // 2:
            print("half written", flush=True)
        time.sleep(0.01)

torch.save = slow_save
save_checkpoint(torch.load(argv[1], weights_only=True), argv[0])
"""


def test_kill_while_save_checkpoint_writes_keeps_the_previous_file(trainers, tmp_path):
    path = tmp_path / "last.pth"
    save_checkpoint(small_checkpoint(1), str(path))
    torch.save(small_checkpoint(2, numel=1_000_000), tmp_path / "next.pth")  # 4 MB: about 0.6 s to write
    since_ns = time.time_ns()
    pid = trainers.start([path, tmp_path / "next.pth"], tmp_path / "save", code=SLOW_SAVE)
    out = tmp_path / "save.out"
    wait_until(lambda: out.exists() and "half written" in out.read_text(), trainers, pid)
    assert trainers.running(pid), "the slow save ended before it could be killed"
    assert trainers.kill(pid) == -signal.SIGKILL
    assert load_checkpoint(str(path))["epoch"] == 1  # the previous checkpoint is whole
    tmp = Path(f"{path}.tmp")
    assert fresh_tmp(tmp, since_ns) and not loads(tmp), "the kill should have torn the temporary file"
    save_checkpoint(small_checkpoint(3), str(path))  # the torn .tmp left behind does not get in the way
    assert load_checkpoint(str(path))["epoch"] == 3
    assert sorted(p.name for p in tmp_path.glob("*.pth*")) == ["last.pth", "next.pth"]


# ---------------------------------------------------------------------------------------------
# bad checkpoint files

def test_bad_last_checkpoint_stops_the_resume_with_advice(trained, trainers, tmp_path):
    good = (trained.run_dir / "last.pth").read_bytes()
    sentinel = tmp_path / "SENTINEL"
    damage = {
        "truncated": lambda p: p.write_bytes(good[: len(good) // 2]),
        "empty": lambda p: p.write_bytes(b""),
        "text": lambda p: p.write_text("these are my notes, not a checkpoint\n"),
        "json": lambda p: p.write_text('{"epoch": 3, "model": "resnet18"}\n'),
        "tensor": lambda p: torch.save(torch.ones(3), p),
        "malicious": lambda p: torch.save(malicious_checkpoint(sentinel), p),
    }
    runs = {}
    for name, write in damage.items():
        run_dir, args = copy_run(trained, tmp_path / name)
        (run_dir / "last.pth").unlink()
        write(run_dir / "last.pth")
        runs[name] = run_dir, args, trainers.start(args, tmp_path / name / "log")
    for name, (run_dir, _, pid) in runs.items():
        code = trainers.wait(pid)
        err = (tmp_path / name / "log.err").read_text()
        assert_user_error(code, err, str(run_dir / "last.pth"), "best.pth", "--restart=true")
        assert filecmp.cmp(run_dir / "best.pth", trained.run_dir / "best.pth", shallow=False), name
        assert (run_dir / "last.pth").exists(), f"{name}: the damaged last.pth is the user's to look at"
    assert not sentinel.exists(), "the malicious checkpoint ran its code"
    # either piece of advice gets the run going again
    run_dir, args, _ = runs["truncated"]
    shutil.copyfile(run_dir / "best.pth", run_dir / "last.pth")
    resumed = trainers.start(args + ["--epochs=2"], tmp_path / "resumed")
    restarted = trainers.start(runs["empty"][1] + ["--restart=true"], tmp_path / "restarted")
    assert trainers.wait(resumed) == 0, (tmp_path / "resumed.err").read_text()
    assert trainers.wait(restarted) == 0, (tmp_path / "restarted.err").read_text()
    assert f"resuming run base from {run_dir / 'last.pth'} at epoch 2" in (tmp_path / "resumed.out").read_text()
    assert load_checkpoint(str(run_dir / "last.pth"))["epoch"] == 2
    assert load_checkpoint(str(runs["empty"][0] / "last.pth"))["epoch"] == 1


def test_malicious_checkpoint_never_runs_its_code(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pth"
    torch.save(malicious_checkpoint(sentinel), path)
    with pytest.raises(cli.UserError, match="never unpickled") as info:
        load_checkpoint(str(path))
    assert str(path) in str(info.value)
    assert not sentinel.exists()
    torch.load(path, weights_only=False)  # the control: an unsafe load does run the payload
    assert sentinel.exists()


@pytest.mark.parametrize("script, checkpoint_arg", [("accuracy_eval", "{}"), ("feature_map", "--checkpoint={}")])
def test_other_scripts_refuse_a_malicious_checkpoint(script, checkpoint_arg, trained, tmp_path, capsys):
    if not os.path.isfile(os.path.join(ROOT, f"{script}.py")):
        pytest.skip(f"{script}.py is not there yet")
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "best.pth"
    torch.save(malicious_checkpoint(sentinel), path)
    code, err = run_cli(importlib.import_module(script).main, [
        checkpoint_arg.format(path), f"--data_root={trained.root}", f"--splits_dir={trained.splits_dir}",
        f"--cache_dir={trained.base / 'cache'}", "--device=cpu"], capsys)
    assert_user_error(code, err, str(path), "never unpickled")
    assert not sentinel.exists()


def test_checkpoint_of_another_architecture_or_class_list(trained):
    path = str(trained.run_dir / "best.pth")
    checkpoint = load_checkpoint(path)
    other = {**checkpoint, "config": {**checkpoint["config"], "arch": "resnet34"}}
    with pytest.raises(cli.UserError, match="another architecture or class list"):
        model_from_checkpoint(other, path)
    other = {**checkpoint, "config": {**checkpoint["config"], "class_names": checkpoint["config"]["class_names"][:5]}}
    with pytest.raises(cli.UserError, match="another architecture or class list"):
        model_from_checkpoint(other, path)
    with pytest.raises(cli.UserError, match="trained on classes"):
        check_class_names(checkpoint["config"]["class_names"], ["cats", "dogs"], path, "this folder")
    broken = {**checkpoint, "config": 18}  # right keys, config of the wrong kind
    torch.save(broken, trained.base / "odd.pth")
    with pytest.raises(cli.UserError, match="not a checkpoint of this project"):
        load_checkpoint(str(trained.base / "odd.pth"))


# ---------------------------------------------------------------------------------------------
# full disk

@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "last.pth")
    save_checkpoint(small_checkpoint(1), path)
    os.symlink("/dev/full", f"{path}.tmp")  # every write to the temporary file fails with ENOSPC
    with pytest.raises(cli.UserError, match="disk is full") as info:
        save_checkpoint(small_checkpoint(2, numel=1_000_000), path)
    assert path in str(info.value)
    assert torch.equal(load_checkpoint(path)["model"]["weight"], small_checkpoint(1)["model"]["weight"])
    assert os.listdir(tmp_path) == ["last.pth"]


def test_full_disk_while_training_is_one_clear_error(trained, tmp_path, monkeypatch, capsys):
    run_dir, args = copy_run(trained, tmp_path)

    def full_disk_save(obj, f, *a, **k):
        f.write(b"\0" * 4096)  # some bytes get out, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk_save)
    code, err = run_cli(train.main, args + ["--epochs=2"], capsys)
    assert_user_error(code, err, "could not save", str(run_dir), "disk is full")
    monkeypatch.undo()
    assert filecmp.cmp(run_dir / "last.pth", trained.run_dir / "last.pth", shallow=False)
    assert load_checkpoint(str(run_dir / "last.pth"))["epoch"] == 1
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("full", ["metrics.csv", "curves.png", "last.pth"])
def test_real_full_disk_on_any_run_file_is_one_clear_error(full, trained, tmp_path, capsys):
    run_dir, args = copy_run(trained, tmp_path)
    os.symlink("/dev/full", run_dir / f"{full}.tmp")  # the kernel's own ENOSPC for this one file
    code, err = run_cli(train.main, args + ["--epochs=2"], capsys)
    assert_user_error(code, err, str(run_dir / full), "disk is full")
    assert filecmp.cmp(run_dir / "last.pth", trained.run_dir / "last.pth", shallow=False)
    assert filecmp.cmp(run_dir / full, trained.run_dir / full, shallow=False)  # the previous one is intact
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]


# ---------------------------------------------------------------------------------------------
# two trainers, stale locks

def test_second_trainer_is_refused_and_a_killed_trainers_lock_is_taken_over(trained, trainers, tmp_path,
                                                                            capsys):
    run_dir, args = copy_run(trained, tmp_path)
    first = trainers.start(args + ["--epochs=1000"], tmp_path / "first")
    try:
        wait_until(lambda: (run_dir / ".lock").exists(), trainers, first, every=0.02)
        assert trainers.running(first), (tmp_path / "first.err").read_text()
        code, err = run_cli(train.main, args + ["--epochs=1000"], capsys)
        assert_user_error(code, err, "another training process", f":{first})", str(run_dir))
    finally:
        trainers.kill(first)
    assert (run_dir / ".lock").read_text().endswith(f":{first}")  # left behind by the killed trainer
    with RunLock(str(run_dir)) as lock:  # its process is gone: taken over, not refused
        assert (run_dir / ".lock").read_text() == lock.owner
    assert not (run_dir / ".lock").exists()
    (run_dir / ".lock").write_text("")  # killed between creating the lock and writing its owner
    with RunLock(str(run_dir)):
        pass
    with RunLock(str(run_dir)):  # a live holder (this process) is respected
        with pytest.raises(cli.UserError, match="another training process"):
            RunLock(str(run_dir)).__enter__()


# ---------------------------------------------------------------------------------------------
# bad data

@pytest.mark.parametrize("loader, damage", [("cached", "garbage"), ("cached", "truncated"), ("plain", "garbage")])
def test_image_broken_after_the_split_is_named(loader, damage, tmp_path, capsys):
    root, splits_dir = tiny_splits(tmp_path)
    rel = read_rows(os.path.join(splits_dir, "train.csv"))[0]["path"]
    image = Path(root) / rel
    image.write_bytes(b"not a JPEG any more " * 20 if damage == "garbage" else image.read_bytes()[:300])
    code, err = run_cli(train.main, train_args(splits_dir, tmp_path, f"--loader={loader}", "--precision=fp32"),
                        capsys)
    assert_user_error(code, err, rel)
    assert not list((tmp_path / "cache").glob("*.tmp")), "a failed cache build left its temporary file"


def test_csv_with_one_file_in_two_splits_is_refused(tmp_path, capsys):
    _, splits_dir = tiny_splits(tmp_path)
    row = read_rows(os.path.join(splits_dir, "train.csv"))[0]
    with open(os.path.join(splits_dir, "test.csv"), "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow([row["path"], row["label"], row["class_name"]])
    code, err = run_cli(train.main, train_args(splits_dir, tmp_path), capsys)
    assert_user_error(code, err, "overlap", row["path"])
    assert not (tmp_path / "checkpoints").exists()


def make_root(kind, tmp_path):
    """A dataset root with one thing wrong; returns (root, words the error must hold)."""
    root = tmp_path / "root"
    if kind == "missing":
        return root, ["does not exist"]
    if kind == "file":
        root.write_text("not a folder")
        return root, ["is a file"]
    root.mkdir()
    if kind == "no_classes":
        (root / "notes.txt").write_text("images go in sub-folders")
        return root, ["no class sub-folders"]
    make_demo_dataset(str(root), per_class=2, size=16)
    (root / "lake").mkdir()
    (root / "lake" / "readme.txt").write_text("no images here yet")
    return root, ["lake", "no images"]


@pytest.mark.parametrize("kind", ["missing", "file", "no_classes", "empty_class"])
def test_bad_dataset_root_is_one_clear_error(kind, tmp_path, capsys):
    root, words = make_root(kind, tmp_path)
    code, err = run_cli(main_script.main, [f"--data_root={root}", "--steps=split",
                                           f"--splits_dir={tmp_path / 'splits'}"], capsys)
    assert_user_error(code, err, str(root), *words)
    assert not (tmp_path / "splits").exists()


def test_1x1_and_5000x5000_images_split_and_load(tmp_path):
    root = make_demo_dataset(str(tmp_path / "images"), per_class=4, size=32)
    Image.new("RGB", (1, 1), (200, 40, 40)).save(os.path.join(root, "forest", "tiny.png"))
    big = Image.new("RGB", (5000, 5000), (20, 120, 200))
    ImageDraw.Draw(big).ellipse((1000, 1500, 4000, 4500), fill=(240, 240, 240))
    big.save(os.path.join(root, "sea", "huge.jpg"), quality=80)
    splits_dir = str(tmp_path / "splits")
    info = make_splits(root, splits_dir, val_size=0.25, test_size=0.25, seed=0, log=lambda *a: None)
    assert info["unreadable"] == []
    where = {row["path"]: split for split in ("train", "validation", "test")
             for row in read_rows(os.path.join(splits_dir, f"{split}.csv"))}
    assert {"forest/tiny.png", "sea/huge.jpg"} <= set(where)
    config, overrides = cli.parse(train.__file__, train.__doc__, train_args(splits_dir, tmp_path))
    config = training.resolve_config(config, overrides)
    for split in sorted({where["forest/tiny.png"], where["sea/huge.jpg"]}):
        inputs = {}
        for loader in ("cached", "plain"):
            for augment in (False, True):
                source = source_of({**config, "loader": loader}, config[f"{split}_csv"])
                size = max(config["image_size"], eval_size(config)) if augment else eval_size(config)
                batches = list(build_loader(source, size, config["mean"], config["std"], 4, "cpu",
                                            augment=augment_of(config) if augment else None, log=lambda *a: None))
                images = torch.cat([images for images, _ in batches])
                size = 32 if augment else 40  # training crops; evaluation at train_args' eval size
                assert images.shape == (sum(s == split for s in where.values()), 3, size, size)
                assert torch.isfinite(images).all()
                inputs[loader, augment] = images
        assert torch.allclose(inputs["cached", False], inputs["plain", False], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# user mistakes and bugs

def user_mistakes(trained, tmp_path):
    splits = [f"--splits_dir={trained.splits_dir}", f"--checkpoints_dir={tmp_path}",
              f"--cache_dir={trained.base / 'cache'}", "--device=cpu"]
    empty = tmp_path / "empty"
    empty.mkdir()
    return {
        "unknown key": (train.main, ["--nonsense=1"], ["unknown setting --nonsense"]),
        "wrong type": (train.main, ["--epochs=many"], ["--epochs", "'many'"]),
        "bad bool": (train.main, ["--restart=perhaps"], ["--restart takes true or false"]),
        "unknown preset": (train.main, [*splits, "--preset=fastest"], ["unknown preset 'fastest'"]),
        "no split": (train.main, [f"--splits_dir={tmp_path / 'nowhere'}"], ["no split found"]),
        "data moved": (train.main, [*splits, f"--data_root={empty}"], ["missing under", str(empty)]),
        "tiny images": (train.main, [*splits, "--image_size=8"], ["--image_size"]),
        "mixing share": (train.main, [*splits, "--mix_until=80"], ["--mix_until=80.0 is outside its range [0 to 1]"]),
        "bad device": (train.main, [*splits, "--device=tpu"], ["--device takes"]),
        "bad loader": (train.main, [*splits, "--loader=fast"], ["--loader takes"]),
        "resume other arch": (train.main, [*splits, f"--checkpoints_dir={trained.base / 'checkpoints'}",
                                           "--run=base", "--arch=resnet34"], ["arch='resnet18'", "--restart=true"]),
        "unknown step": (main_script.main, ["--steps=split,fly"], ["unknown steps fly"]),
        "positional": (main_script.main, ["data"], ["unexpected argument 'data'"]),
    }


def test_every_user_mistake_is_one_line_without_traceback(trained, tmp_path, capsys):
    for name, (main, argv, words) in user_mistakes(trained, tmp_path).items():
        code, err = run_cli(main, argv, capsys)
        assert_user_error(code, err, *words)


def test_the_script_itself_prints_one_line():
    result = run_script(["train.py", "--epochs=many"])
    assert_user_error(result.returncode, result.stderr, "--epochs", "'many'")


def test_a_bug_keeps_its_traceback():
    def broken():
        raise ZeroDivisionError("a bug, not a user mistake")

    with pytest.raises(ZeroDivisionError):
        cli.run(broken)
    result = run_script(["-c", "from scenes import cli; cli.run(lambda: {}['missing'])"])
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'missing'" in result.stderr
