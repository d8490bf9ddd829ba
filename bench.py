"""Benchmark the report's plain input pipeline against the project's default one, side by side.

    python bench.py                                  # the real images if present, else a demo set
    python bench.py --data_root=DIR --json=bench.json
    python bench.py --max_images=600 --sizes=64 --train_steps=2 --eval_images=256  # a quick check
    python bench.py --precision=fp32                 # as on a CPU without fast bfloat16

For each image size, ResNet-18 (train.py's arch, one output per class) trains for a few timed
steps and then evaluates a few batches along two paths, in one process, on the same images:

- plain: ``NatureTypesDataset`` (PIL decode and torchvision transforms per item) in a
  ``DataLoader``, float32, contiguous NCHW memory: how the report's pipeline ran;
- default: what ``python train.py`` does with its defaults: the cached uint8 loader (rows read
  with ``pread``) with batch augmentation, bf16 autocast where ``scenes.runtime`` chooses it,
  channels-last memory and the speed-ups of ``scenes.speedups``, and for evaluation the BatchNorms folded
  into the convolutions as ``scenes.evaluation.predict`` does.

Both use train.py's batch sizes, optimizer and loss. Reported per path: images/s, the share of
step time spent outside forward/backward/step (the loader's ``next()``: decoding, augmentation,
transfer, timed apart from the step), peak memory, and model FLOP utilisation (MFU) against this
machine's own measured matmul peak in the precision each path runs (only those peaks are measured:
float32, and bf16 where the default path runs it); then default/plain ratios. Timing starts after warm-up steps
(the first steps build oneDNN/cuDNN kernels). The default path's one-time cache build is timed
and reported apart. Nothing in splits/, checkpoints/ or cache/ is touched: the CSVs (and, unless
--cache_dir is given, the cache) go to a temporary folder that is removed afterwards.
"""
import ctypes
import gc
import math
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from scenes import cli, speedups, training
from scenes.dataset import NatureTypesDataset
from scenes.demo import make_demo_dataset
from scenes.files import write_json
from scenes.models import build_model, fold_batch_norms
from scenes.runtime import runtime
from scenes.splits import SPLIT_INFO, content_digests, write_split_csv
from scenes.splitting import scan_dataset
from scenes.transforms import build_transforms

# --- settings ---
data_root = ""  # folder of class sub-folders; "" = ../shared/data/intel-scenes or $INTEL_SCENES, else demo images
sizes = "128"  # image sizes (pixels, square), comma-separated: 128 = train.py's image_size, 150 = the images' own
batch_size = 64  # training images per step, both paths (train.py's default) [>= 1]
train_steps = 8  # timed training steps per path and size [>= 1]
eval_images = 512  # images evaluated (timed) per path and size, in whole batches of train.py's eval_batch_size [>= 1]
warmup_steps = 2  # untimed training steps before timing starts (evaluation: one batch) [>= 0]
num_workers = 2  # DataLoader worker processes of the plain path [>= 0]
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # the default path's: auto as train.py chooses it (bf16 where fast), bf16 or fp32 [one of auto, bf16, fp32]
json = ""  # also write the results to this JSON file
max_images = 0  # use at most this many images of the folder; 0 = as many as the steps need [>= 0]
cache_dir = ""  # the default path's uint8 cache; "" = a temporary folder (built, timed, then removed)
compile = False  # torch.compile the default path's model (its warm-up then includes compiling)
peak_matmul_size = 2048  # n of the n x n matmuls that measure the machine's peak in each precision used [>= 1]
seed = 0  # picks the images and seeds the models and the shuffling [>= 0]
ablate = False  # also time the default path without each speed-up that applies to it, side by side
# --- end of settings ---

HERE = os.path.dirname(os.path.abspath(__file__))
REAL_DATA = os.environ.get("INTEL_SCENES", os.path.join(HERE, "..", "shared", "data", "intel-scenes"))
MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# The machine: FLOPs of the model, matmul peak, memory of this process and its children.

def synchronizer(device):
    """A function that waits for the device, so wall-clock time covers the work queued on it."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def count_flops(model, size):
    """FLOPs per image of one training step (forward + backward) and of one evaluation forward.

    Counted by ``FlopCounterMode`` (matmuls and convolutions, the usual MFU convention) on a CPU
    copy of the model with a batch of two, so batch norm behaves as in training.
    """
    model = model.to("cpu", torch.float32)
    images = torch.randn(2, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter:
        model.train()
        model(images).sum().backward()
    train_flops = counter.get_total_flops() / 2
    with counter, torch.no_grad():
        model.eval()
        model(images)
    return train_flops, counter.get_total_flops() / 2


def matmul_peak(device, dtype, n, seconds=2.0, min_trials=3, max_trials=10):
    """FLOP/s of the fastest of a few n x n matmuls, after a warm-up call.

    The fastest, not the mean: other processes on a shared machine only ever slow a call down.
    """
    sync = synchronizer(device)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    calls = 1 if device.type == "cpu" else 20  # a GPU needs many calls between syncs
    a @ b
    sync()
    best, trials, started = math.inf, 0, time.perf_counter()
    while trials < min_trials or (trials < max_trials and time.perf_counter() - started < seconds):
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        sync()
        best, trials = min(best, (time.perf_counter() - start) / calls), trials + 1
    return 2 * n ** 3 / best


def machine_peak(device, dtype, n):
    """The device's matmul peak in FLOP/s: ``(peak, with all threads, threads x one thread)``.

    On a CPU shared with other processes, threads that wait for a descheduled sibling make the
    all-thread rate fall short, so the peak is also taken as the thread count times the rate of one
    thread (which waits for no one), and the higher of the two is used: MFU errs low, not high.
    """
    together = matmul_peak(device, dtype, n)
    if device.type != "cpu":
        return together, together, None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_by_one = threads * matmul_peak(device, dtype, n)
    finally:
        torch.set_num_threads(threads)
    return max(together, one_by_one), together, one_by_one


def proc_status(pid="self"):
    """VmRSS and VmHWM (peak resident set) of a process in MB, from /proc; {} where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}
    except (OSError, KeyError, ValueError):
        return {}


def private_mb(pid):
    """Memory only this process holds (pages not shared with its parent), now, in MB; 0 where unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith("Private_"))
        return sum(int(value.split()[0]) for value in fields.values()) / 1024
    except (OSError, ValueError):
        return 0.0


def release_free_memory():
    """Collect garbage and hand freed heap back to the OS (glibc), so RSS shows what is live."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS then also holds freed heap
        pass


def reset_peak_rss():
    """Set this process's VmHWM back to its current RSS (Linux 4.0+); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); [] where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def child_pids():
    """Live child processes of this one (DataLoader workers, compile workers), from /proc."""
    entries = os.listdir("/proc") if os.path.isdir("/proc") else []
    return [int(e) for e in entries if e.isdigit() and proc_stat(e)[1:2] == [str(os.getpid())]]


def cpu_seconds(pids):
    """CPU time (user + system, all threads) used so far by this process and the given live children."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    children = (proc_stat(pid)[11:13] for pid in pids)  # utime, stime in clock ticks
    return sum(os.times()[:2]) + sum(int(u) + int(s) for u, s in (f for f in children if len(f) == 2)) / tick


def load_average():
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class MemoryProbe:
    """Peak memory of one phase: this process's resident set, its new children's, and CUDA's.

    Freed heap is handed back and VmHWM reset at the start where the kernel allows it
    (``/proc/self/clear_refs``), so the peak is the phase's own; where it does not, only the
    phase's change in resident set is known, and the report says so. Call ``read()`` while the
    phase's worker processes are still alive.
    """

    def __init__(self, device):
        self.device = device
        release_free_memory()  # else the previous phase's freed heap would count in this one's RSS
        self.children_before = set(child_pids())
        self.rss_before = proc_status().get("VmRSS")
        self.peak_is_phase = reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def read(self):
        status = proc_status()
        workers = set(child_pids()) - self.children_before
        result = {
            "peak_rss_mb": round(status["VmHWM"], 1) if status and self.peak_is_phase else None,
            "peak_rss_growth_mb": round(status["VmHWM"] - self.rss_before, 1)
            if status and self.rss_before and self.peak_is_phase else None,
            "rss_change_mb": round(status["VmRSS"] - self.rss_before, 1) if status and self.rss_before else None,
            "worker_processes": len(workers),
            # A forked worker's RSS counts the pages it shares with this process, so its private
            # memory (at the end of the phase) is what it adds; the peak RSS sum overstates that.
            "workers_private_mb": round(sum(private_mb(pid) for pid in workers), 1),
            "workers_peak_rss_mb": round(sum(proc_status(pid).get("VmHWM", 0) for pid in workers), 1),
        }
        if self.device.type == "cuda":
            result["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(self.device) / MB, 1)
        return result


# ---------------------------------------------------------------------------------------------
# The images: a bench-only split in a temporary folder.

def resolve_data_root(config, bench_dir, images_needed):
    """The folder to bench on: the given one, the real images, or a demo set generated for it."""
    if config["data_root"]:
        return config["data_root"], False
    if os.path.isdir(REAL_DATA):
        return REAL_DATA, False
    wanted = min(images_needed, config["max_images"] or images_needed)
    return make_demo_dataset(os.path.join(bench_dir, "demo_images"), per_class=math.ceil(wanted / 6), size=150), True


def write_bench_split(root, bench_dir, config, eval_batch_size):
    """train.csv and test.csv of a seeded sample of the folder, plus the split info train.py reads.

    The training CSV holds whole batches only (so every timed step has ``batch_size`` images) and
    as many as warm-up plus timed steps need; the evaluation CSV likewise. They may share images.
    """
    class_names, samples = scan_dataset(root)
    generator = torch.Generator().manual_seed(config["seed"])
    samples = [samples[i] for i in torch.randperm(len(samples), generator=generator).tolist()]
    if config["max_images"] > 0:
        samples = samples[:config["max_images"]]
    batch = config["batch_size"]
    if len(samples) < batch:
        raise cli.UserError(f"{root!r} has {len(samples)} usable images, fewer than one batch of {batch}; "
                            "lower --batch_size or raise --max_images.")
    train_rows = samples[:min(len(samples), (config["warmup_steps"] + config["train_steps"]) * batch) // batch * batch]
    eval_steps = eval_warmup(config) + math.ceil(config["eval_images"] / eval_batch_size)
    eval_rows = samples[:min(len(samples), eval_steps * eval_batch_size)]
    write_split_csv(os.path.join(bench_dir, "train.csv"), train_rows, class_names)
    write_split_csv(os.path.join(bench_dir, "test.csv"), eval_rows, class_names)
    contents = content_digests(root, sorted({rel for rel, _ in train_rows + eval_rows}))
    write_json(os.path.join(bench_dir, SPLIT_INFO), {"data_root": os.path.abspath(root), "class_names": class_names,
                                                     "sha256": contents})
    return len(train_rows), len(eval_rows)


def eval_warmup(config):
    """Evaluation batches before timing: one is enough (no optimizer, one batch shape)."""
    return min(config["warmup_steps"], 1)


def train_config(bench_dir, size, config, cache_dir):
    """train.py's own config, resolved by train.py, for the bench split at one image size."""
    defaults = cli.script_defaults("train.py")
    overrides = {"splits_dir": bench_dir, "image_size": size, "eval_image_size": size, "progressive_min_size": 0,
                 "batch_size": config["batch_size"], "cache_dir": cache_dir, "device": config["device"],
                 "compile": config["compile"], "seed": config["seed"]}
    return training.resolve_config(defaults, overrides)


# ---------------------------------------------------------------------------------------------
# The two paths and the timed loop.

def forever(loader):
    """Batches of a loader, epoch after epoch (only a small folder needs more than one)."""
    epoch = 0
    while True:
        epoch += 1
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader


def plain_batches(run_config, split, train_mode, batch_size, device, num_workers, seed):
    """The report's input pipeline: PIL per item in a DataLoader, float32 NCHW (contiguous)."""
    dataset = NatureTypesDataset(run_config[f"{split}_csv"], run_config["data_root"],
                                 build_transforms(run_config, train_mode), run_config["class_names"])
    # Persistent workers spare a small folder's later epochs the worker start-up: kind to the plain path.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=train_mode, drop_last=train_mode,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        generator=torch.Generator().manual_seed(seed))
    for images, targets in forever(loader):
        yield images.to(device), targets.to(device)


def timed_phase(step, batches, warmup, steps, device):
    """Run ``warmup`` untimed steps, then ``steps`` timed ones: the loader's ``next()`` apart from the step.

    On a GPU both are synchronised, so queued work is charged to the phase that queued it (this
    forbids the loader from overlapping the step, as a real run may).
    """
    sync = synchronizer(device)
    memory = MemoryProbe(device)
    for _ in range(warmup):
        output = step(*next(batches))
    sync()
    workers = child_pids()
    cpu_start = cpu_seconds(workers)
    data_seconds, step_seconds, images = [], [], 0
    for _ in range(steps):
        start = time.perf_counter()
        batch_images, batch_targets = next(batches)
        sync()
        loaded = time.perf_counter()
        output = step(batch_images, batch_targets)
        sync()
        data_seconds.append(loaded - start)
        step_seconds.append(time.perf_counter() - loaded)
        images += len(batch_targets)
    total = sum(data_seconds) + sum(step_seconds)
    fastest = min(d + s for d, s in zip(data_seconds, step_seconds))
    # Below 100% either the work is partly serial or other processes took the cores: a noise gauge.
    cpu_used = cpu_seconds(workers) - cpu_start
    return {"images": images, "seconds": round(total, 3), "images_per_s": images / total,
            "cpu_share": round(cpu_used / (total * (os.cpu_count() or 1)), 3),
            "data_share": sum(data_seconds) / total, "data_seconds": round(sum(data_seconds), 3),
            "best_step_images_per_s": (images / steps) / fastest,
            "median_step_s": round(statistics.median(d + s for d, s in zip(data_seconds, step_seconds)), 4),
            **memory.read()}, output


def bench_path(name, run_config, rt, config, flops, skip=()):
    """Train then evaluate one path at one size (the default without the speed-ups in ``skip``);
    returns its results."""
    plain = name == "plain"
    device = rt.device
    torch.manual_seed(config["seed"])
    model = build_model(run_config["arch"], len(run_config["class_names"]))
    model = model.to(device) if plain else speedups.apply(model.to(device, memory_format=torch.channels_last), rt,
                                                          skip)
    autocast = nullcontext if plain else rt.autocast
    runner = torch.compile(model) if config["compile"] and not plain else model
    optimizer = training.make_optimizer(model, run_config)
    criterion = nn.CrossEntropyLoss(label_smoothing=run_config["label_smoothing"])
    results = {}
    if plain:
        make_batches = lambda split, train_mode, batch: plain_batches(  # noqa: E731
            run_config, split, train_mode, batch, device, config["num_workers"], config["seed"])
    else:
        loaders = {}
        for split, train_mode in (("train", True), ("test", False)):
            built, start = [], time.perf_counter()
            loaders[split] = training.split_loader(run_config, split, rt, log=built.append)
            results[f"cache_build_{split}_s"] = round(time.perf_counter() - start, 2) if built else 0.0
        make_batches = lambda split, train_mode, batch: forever(loaders[split])  # noqa: E731

    def train_step(images, targets):
        with autocast():
            loss = criterion(runner(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def eval_step(images, targets):
        with torch.inference_mode(), autocast():
            return evaluator(images)

    model.train()
    batches = make_batches("train", True, run_config["batch_size"])
    results["train"], loss = timed_phase(train_step, batches, config["warmup_steps"], config["train_steps"], device)
    results["train"]["final_loss"] = loss.item()
    batches.close()  # ends the plain path's worker processes
    del optimizer, loss
    gc.collect()
    model.eval()
    evaluator = model if plain else fold_batch_norms(model)  # as scenes.evaluation.predict evaluates
    evaluator = torch.compile(evaluator) if config["compile"] and not plain else evaluator
    eval_steps = math.ceil(config["eval_images"] / run_config["eval_batch_size"])
    batches = make_batches("test", False, run_config["eval_batch_size"])
    results["eval"], _ = timed_phase(eval_step, batches, eval_warmup(config), eval_steps, device)
    batches.close()
    precision = "fp32" if plain or not rt.bf16 else "bf16"
    for phase in ("train", "eval"):
        achieved = results[phase]["images_per_s"] * flops[phase]
        results[phase].update(tflops=achieved / 1e12, mfu=achieved / flops["peaks"][precision], precision=precision)
    del model, runner, evaluator
    gc.collect()
    return results


# ---------------------------------------------------------------------------------------------
# Report.

def fmt_mb(value):
    return "n/a" if value is None else f"{value:.0f}"


def table(size_results, size):
    """The side-by-side table of one image size."""
    plain, default, ratios = size_results["plain"], size_results["default"], size_results["ratios"]
    rows = [(f"{size}x{size} px", "plain", "default", "default/plain")]
    flops = lambda r: f"{r['tflops']:.3f} ({r['mfu']:.1%} of {r['precision']})"  # noqa: E731
    memory = lambda r: f"{fmt_mb(r['peak_rss_mb'])}; {fmt_mb(r['workers_private_mb'])}"  # noqa: E731
    for phase in ("train", "eval"):
        p, d = plain[phase], default[phase]
        rows += [
            (f"{phase} images/s", f"{p['images_per_s']:.1f}", f"{d['images_per_s']:.1f}",
             f"{ratios[f'{phase}_speedup']:.2f}x"),
            (f"{phase} images/s, fastest step", f"{p['best_step_images_per_s']:.1f}",
             f"{d['best_step_images_per_s']:.1f}", f"{ratios[f'{phase}_speedup_best_step']:.2f}x"),
            (f"{phase}: time outside the step", f"{p['data_share']:.1%}", f"{d['data_share']:.1%}", ""),
            (f"{phase}: CPU time used / cores x wall", f"{p['cpu_share']:.0%}", f"{d['cpu_share']:.0%}", ""),
            (f"{phase}: TFLOP/s (MFU: share of its precision's peak)", flops(p), flops(d), ""),
            (f"{phase}: peak RSS MB; workers' private MB", memory(p), memory(d), ""),
            (f"{phase}: peak RSS above the phase's start MB", fmt_mb(p["peak_rss_growth_mb"]),
             fmt_mb(d["peak_rss_growth_mb"]), ""),
        ]
        if "cuda_peak_allocated_mb" in p:
            rows.append((f"{phase}: CUDA peak allocated MB", fmt_mb(p["cuda_peak_allocated_mb"]),
                         fmt_mb(d["cuda_peak_allocated_mb"]), ""))
    rows.append(("one-time cache build s (train; eval)", "-",
                 f"{default['cache_build_train_s']:.1f}; {default['cache_build_test_s']:.1f}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(f"{row[0]:<{widths[0]}}  " + "  ".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:]))
                     for row in rows)


def parse_sizes(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 16:
        raise cli.UserError(f"--sizes takes comma-separated image sizes of at least 16 pixels, not {text!r}.")
    return values


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor() or platform.machine()


def measure_machine(rt, config):
    """The device, its measured matmul peaks in the precisions the paths run (float32; bf16 where the
    default path runs it) and the load on it."""
    used = (("fp32", torch.float32),) + ((("bf16", torch.bfloat16),) if rt.bf16 else ())
    peaks = {name: machine_peak(rt.device, dtype, config["peak_matmul_size"]) for name, dtype in used}
    print(f"measured matmul peak ({config['peak_matmul_size']}^2): " + ", ".join(
        f"{name} {peak / 1e12:.3f} TFLOP/s" + (f" ({together / 1e12:.3f} with {torch.get_num_threads()} threads "
                                               f"together, {one / 1e12:.3f} as threads x one)" if one else "")
        for name, (peak, together, one) in peaks.items()))
    return {"device": str(rt.device), "name": device_name(rt.device), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "default_bf16": rt.bf16,
            "matmul_peak_tflops": {name: values[0] / 1e12 for name, values in peaks.items()},
            "matmul_peak_all_threads_tflops": {name: values[1] / 1e12 for name, values in peaks.items()},
            "matmul_peak_threads_x_one_tflops": {name: values[2] and values[2] / 1e12
                                                 for name, values in peaks.items()},
            "peak_rss_is_per_phase": reset_peak_rss(), "load_average_start": load_average()}


def bench_size(size, bench_dir, cache_dir, rt, config, machine):
    """Both paths at one image size, their ratios, and the table."""
    run_config = train_config(bench_dir, size, config, cache_dir)
    torch.manual_seed(config["seed"])
    train_flops, eval_flops = count_flops(build_model(run_config["arch"], len(run_config["class_names"])), size)
    flops = {"train": train_flops, "eval": eval_flops,
             "peaks": {name: tflops * 1e12 for name, tflops in machine["matmul_peak_tflops"].items()}}
    results = {"flops_per_image": {"train": train_flops, "eval": eval_flops}}
    for name in ("plain", "default"):
        print(f"{size}px {name} ...", flush=True)
        results[name] = bench_path(name, run_config, rt, config, flops)
    results["ratios"] = {f"{phase}_speedup{kind}": results["default"][phase][key] / results["plain"][phase][key]
                         for phase in ("train", "eval")
                         for kind, key in (("", "images_per_s"), ("_best_step", "best_step_images_per_s"))}
    print(f"\n{table(results, size)}\n(training costs {train_flops / 1e9:.2f} GFLOP per image, "
          f"evaluation {eval_flops / 1e9:.2f}, counted by FlopCounterMode)\n", flush=True)
    if config["ablate"] and speedups.applies(rt):
        results["speedups"] = ablation(run_config, rt, config, flops, results["default"], size)
    elif config["ablate"]:
        print(f"--ablate: no speed-up applies on {rt.device} in {'bf16' if rt.bf16 else 'fp32'}; nothing to take out.")
    return results


def ablation(run_config, rt, config, flops, default, size):
    """The default path again without each speed-up, then with all of them once more, side by side:
    what each saves of a training step (its median) against the mean of the two runs with all."""
    runs = {}
    for name in speedups.applies(rt):
        print(f"{size}px default without {name} ...", flush=True)
        runs[name] = bench_path("default", run_config, rt, config, flops, skip=(name,))
    print(f"{size}px default again ...", flush=True)
    again = bench_path("default", run_config, rt, config, flops)
    with_all = (default["train"]["median_step_s"] + again["train"]["median_step_s"]) / 2
    saved = {name: 1 - with_all / run["train"]["median_step_s"] for name, run in runs.items()}
    print(f"median training step with every speed-up {with_all:.3f} s (runs: {default['train']['median_step_s']:.3f}"
          f", {again['train']['median_step_s']:.3f}); without one, the share of a step it saves:")
    for name, run in runs.items():
        print(f"  {name:<20} {run['train']['median_step_s']:.3f} s without it: saves {saved[name]:.1%}")
    return {"median_step_s_with_all": [default["train"]["median_step_s"], again["train"]["median_step_s"]],
            "median_step_s_without": {name: run["train"]["median_step_s"] for name, run in runs.items()},
            "saved_share": saved}


def summary(results, image_sizes):
    """The headline keys (at 150x150 where benched) and the closing lines of the report."""
    headline = 150 if 150 in image_sizes else image_sizes[0]
    at = results["sizes"][str(headline)]
    results.update(headline_size=headline, train_speedup=at["ratios"]["train_speedup"],
                   eval_speedup=at["ratios"]["eval_speedup"],
                   train_speedup_best_step=at["ratios"]["train_speedup_best_step"],
                   eval_speedup_best_step=at["ratios"]["eval_speedup_best_step"],
                   train_mfu=at["default"]["train"]["mfu"], train_mfu_precision=at["default"]["train"]["precision"],
                   train_data_share=at["default"]["train"]["data_share"])
    machine = results["machine"]
    machine["load_average_end"] = load_average()
    device_is_cpu = machine["device"] == "cpu"
    print(f"at {headline}px the default path trains {results['train_speedup']:.2f}x and evaluates "
          f"{results['eval_speedup']:.2f}x as fast as the plain one (fastest steps: "
          f"{results['train_speedup_best_step']:.2f}x, {results['eval_speedup_best_step']:.2f}x); it trains at "
          f"{results['train_mfu']:.1%} of the measured {results['train_mfu_precision']} matmul peak with "
          f"{results['train_data_share']:.1%} of its step time outside forward/backward.")
    shares = [size[path][phase]["cpu_share"] for size in results["sizes"].values() for path in ("plain", "default")
              for phase in ("train", "eval")]
    if device_is_cpu and min(shares) < 0.85:
        print(f"note: some timed phases used as little as {min(shares):.0%} of the cores' time ('CPU time used' "
              "above): other processes shared the machine, so those numbers are lower and noisier than they "
              "would be alone; the fastest-step rates suffer least.")
    phase_peak = "VmHWM reset at each phase start" if machine["peak_rss_is_per_phase"] else \
        "n/a here: VmHWM cannot be reset, see the RSS change instead"
    # ru_maxrss (KB on Linux) is the same high-water mark as VmHWM, so it restarts with each reset.
    phase_peaks = [phase["peak_rss_mb"] or 0 for size in results["sizes"].values() for path in ("plain", "default")
                   for phase in (size[path]["train"], size[path]["eval"])]
    process_peak = max(phase_peaks + [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024])
    results["machine"]["process_peak_rss_mb"] = round(process_peak, 1)
    print(f"memory: peak RSS per phase ({phase_peak}); whole run {process_peak:.0f} MB; the cached path reads "
          "its rows with pread, so the cache's pages stay out of its RSS; a worker's RSS includes the pages it "
          "shares with this process (its private MB is what it adds).")


def main(argv=None):
    config, _ = cli.parse(__file__, __doc__, argv)
    image_sizes = parse_sizes(config["sizes"])
    if config["json"] and not os.path.isdir(os.path.dirname(os.path.abspath(config["json"]))):
        raise cli.UserError(f"--json={config['json']}: its folder does not exist.")
    train_defaults = cli.script_defaults("train.py")
    eval_batch_size = train_defaults["eval_batch_size"]
    bench_dir = tempfile.mkdtemp(prefix="nature-bench-")
    try:
        needed = max((config["warmup_steps"] + config["train_steps"]) * config["batch_size"],
                     (eval_warmup(config) + math.ceil(config["eval_images"] / eval_batch_size)) * eval_batch_size)
        root, demo = resolve_data_root(config, bench_dir, needed)
        n_train, n_eval = write_bench_split(root, bench_dir, config, eval_batch_size)
        rt = runtime(config["device"], config["precision"])
        print(f"bench on {root}{' (generated DEMO images)' if demo else ''}: {n_train} training and {n_eval} "
              f"evaluation images; {rt.device} ({device_name(rt.device)}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")
        print(f"plain: float32, NCHW, PIL per item, {config['num_workers']} DataLoader workers | default: "
              f"{'bf16 autocast' if rt.bf16 else 'float32'}, channels-last, cached uint8 loader"
              f"{', torch.compile' if config['compile'] else ''} | batch {config['batch_size']} (train), "
              f"{eval_batch_size} (eval); {config['warmup_steps']} warm-up + {config['train_steps']} timed steps")
        results = {"machine": measure_machine(rt, config), "settings": config,
                   "data": {"root": os.path.abspath(root), "demo": demo, "train_images": n_train,
                            "eval_images": n_eval}, "sizes": {}}
        cache_dir = config["cache_dir"] or os.path.join(bench_dir, "cache")
        for size in image_sizes:
            results["sizes"][str(size)] = bench_size(size, bench_dir, cache_dir, rt, config, results["machine"])
    finally:
        shutil.rmtree(bench_dir, ignore_errors=True)
    summary(results, image_sizes)
    if config["json"]:
        write_json(config["json"], results)
        print(f"results written to {config['json']}")
    return results


if __name__ == "__main__":
    cli.run(main)
