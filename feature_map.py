"""Look inside a network: feature maps of chosen modules as images, and the share of non-positive values.

    python feature_map.py --checkpoint=checkpoints/default/best.pth
    python feature_map.py --checkpoint=pretrained --data_root=data   # torchvision's ImageNet ResNet-18
    python feature_map.py --checkpoint=... --modules=layer1.0.relu,layer4.1.conv2 --channels=16
    python feature_map.py --checkpoint=... --list_modules=true        # every module name it accepts

Forward hooks (registered by ``capture_outputs`` and always removed again) record the outputs of
the chosen modules. Images come through the checkpoint's own evaluation transforms (size, mean/std);
the pretrained model gets ImageNet mean/std at --image_size. Files, under --out_dir:

- ``feature_maps/img003_layer1.0.conv1.png``: every channel of that module's output for image 3
  of the split (split order, counted from 0), as a grid, each channel scaled to its own range.
  A module that runs k > 1 times per forward pass gets one file per call:
  ``img003_layer1.0.relu_call1.png`` ... ``_callk.png``.
- ``feature_maps_visualization/img003.png``: image 3 (un-normalised) beside the first --channels
  channels of every module, one row per module (per call), early to late (the report's Figure 3).
- ``non_positive_stats.txt``: per module, the average percentage of values <= 0 over --stat_images
  images (a running mean over batches, weighted by their image counts) and how many times the module
  runs per forward pass; each call's output counts (the report's Table 2). Also printed.

Precision: fp32 by default, so values near zero keep the sign the weights give them; --precision=auto
uses bfloat16 autocast where the hardware is fast at it, which can move the percentages slightly.
"""
import difflib
import math
import os
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

import cli
from checkpoint import check_class_names, load_checkpoint, model_from_checkpoint
from data_handling import SPLITS, read_split_info
from engine import prepare_model, runtime
from models import build_model, imagenet_weights
from NatureTypesDataset import IMAGENET_MEAN, IMAGENET_STD, build_loader, eval_size, read_split_csv

# --- settings ---
checkpoint = ""  # a checkpoint of this project (.pth), or "pretrained" for torchvision's ImageNet model
modules = "layer1.0.conv1,layer2.0.conv1,layer3.0.conv1,layer4.0.conv1,layer4.1.conv2"  # comma-separated names
list_modules = False  # print the module names of the model and stop
split = "test"  # train | validation | test
data_root = ""  # folder of class sub-folders; "" = the one the split was made from
splits_dir = ""  # folder with the split CSVs; "" = the checkpoint's (splits/ for pretrained)
out_dir = "."  # feature_maps/, feature_maps_visualization/ and non_positive_stats.txt go here
num_images = 10  # images (the first of the split) drawn as feature maps
channels = 8  # channels per module in the overview figure (the first ones)
stat_images = 200  # images (the first of the split) in the non-positive statistics
batch_size = 100  # images per forward pass
arch = "resnet18"  # architecture of --checkpoint=pretrained
weights_file = ""  # ImageNet weights for --checkpoint=pretrained offline; "" = torchvision's cache
image_size = 150  # pixels (square) for --checkpoint=pretrained; a checkpoint uses its own
loader = "cached"  # cached (decoded once into a uint8 file) | plain (PIL per item)
cache_dir = "cache"  # where the cached loader keeps decoded images
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "fp32"  # fp32 (exact signs) | auto (bf16 where the hardware is fast at it) | bf16
# --- end of settings ---

PRETRAINED_ONLY = ("arch", "weights_file", "image_size")
MAX_LISTED = 80  # an unknown module name lists this many valid names at most
TILE_MIN = 32  # feature-map tiles smaller than this (pixels) are enlarged by whole factors
OVERVIEW_TILE = 64  # pixels per channel in the overview figure


# ---------------------------------------------------------------------------------------------
# Hooks and statistics

def check_module_names(model, names):
    """Refuse names that ``named_modules()`` does not have, with close matches and the valid names."""
    valid = [name for name, _ in model.named_modules() if name]
    unknown = [name for name in names if name not in valid]
    if not unknown:
        return
    close = sorted({match for name in unknown for match in difflib.get_close_matches(name, valid, n=3)})
    listed = ", ".join(valid[:MAX_LISTED]) + (f", ... ({len(valid)} in all; --list_modules=true prints them)"
                                               if len(valid) > MAX_LISTED else "")
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise cli.UserError(f"the model has no module {', '.join(map(repr, unknown))}{hint}; "
                        f"valid names (as named_modules() gives them) are: {listed}.")


@contextmanager
def capture_outputs(model, names):
    """Record the outputs of the named modules while the block runs; the hooks go when it ends.

    Yields a dict ``name -> [output of call 1, call 2, ...]``; a module that runs twice per forward
    pass (torchvision's BasicBlock calls its one ``relu`` twice) gets two entries per pass. Outputs
    are detached copies, because in-place operations later in the pass (``ReLU(inplace=True)`` after
    ``bn1``, ``out += identity`` after ``bn2``) would otherwise change what was recorded. Keys appear
    in the order the modules first ran, i.e. early to late. Clear the dict between forward passes.
    The hooks are removed even when the block raises.
    """
    check_module_names(model, names)
    outputs, handles = {}, []
    modules_by_name = dict(model.named_modules())

    def hook_for(name):
        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                raise cli.UserError(f"module {name!r} returns {type(output).__name__}, not a tensor; "
                                    "choose a module with a tensor output.")
            outputs.setdefault(name, []).append(output.detach().clone())
        return hook

    try:
        for name in dict.fromkeys(names):
            handles.append(modules_by_name[name].register_forward_hook(hook_for(name)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class RunningMean:
    """A mean over images updated batch by batch, each batch weighted by its number of images."""

    def __init__(self):
        self.count, self.value = 0, 0.0

    def update(self, batch_mean, n):
        self.count += n
        self.value += (batch_mean - self.value) * n / self.count


class NonPositiveStats:
    """Average percentage of values <= 0 per image in each module's output, over all batches seen.

    An image's percentage for a module pools the values of all the module's calls in one forward
    pass (each call's output contributes its values); the per-call percentages are kept as well.
    """

    def __init__(self):
        self.images = 0
        self.pooled, self.per_call, self.calls = {}, {}, {}

    def update(self, outputs, n):
        """Add one forward pass of ``n`` images: ``outputs`` as ``capture_outputs`` yields it."""
        self.images += n
        for name, calls in outputs.items():
            counts = [(output[:n].reshape(n, -1) <= 0).sum(1).double() for output in calls]
            sizes = [output[0].numel() for output in calls]
            self.pooled.setdefault(name, RunningMean()).update((100 * sum(counts) / sum(sizes)).mean().item(), n)
            for i, (count, size) in enumerate(zip(counts, sizes)):
                self.per_call.setdefault((name, i), RunningMean()).update((100 * count / size).mean().item(), n)
            self.calls[name] = max(self.calls.get(name, 0), len(calls))

    def rows(self, names):
        """One dict per module (early to late; modules that never ran last)."""
        ordered = list(self.pooled) + [name for name in names if name not in self.pooled]
        return [{"module": name, "percent": self.pooled[name].value if name in self.pooled else float("nan"),
                 "calls": self.calls.get(name, 0),
                 "per_call": [self.per_call[(name, i)].value for i in range(self.calls.get(name, 0))]}
                for name in ordered]


def stats_table(rows, header):
    """The report's Table 2 as Markdown, with a note on each module that runs more than once."""
    width = max(len("module"), *(len(row["module"]) for row in rows))
    lines = [header, "", f"| {'module':<{width}} | avg. % non-positive | calls per forward pass |",
             f"|{'-' * (width + 2)}|--------------------:|-----------------------:|"]
    for row in rows:
        percent = f"{row['percent']:.2f}" if row["calls"] else "never ran"
        lines.append(f"| {row['module']:<{width}} | {percent:>19} | {row['calls']:>22} |")
    notes = [f"- {row['module']} runs {row['calls']} times per forward pass; every call's output counts "
             f"(per call: {', '.join(f'{p:.2f}' for p in row['per_call'])})." for row in rows if row["calls"] > 1]
    if any(row["module"].endswith("relu") and row["calls"] > 1 for row in rows):
        notes.append("  (torchvision's BasicBlock applies its one ReLU after bn1 and again after the residual sum.)")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# ---------------------------------------------------------------------------------------------
# Images

def scaled_channels(maps):
    """(C, H, W) to 0..1, each channel by its own min and max (a flat channel becomes 0).

    Maps of one value each (1x1, or a vector such as ``fc``'s output) share one range instead.
    """
    dims = (0, 1, 2) if maps.shape[1] * maps.shape[2] == 1 else (1, 2)
    low, high = maps.amin(dim=dims, keepdim=True), maps.amax(dim=dims, keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


def tile_grid(maps, columns, tile):
    """(C, H, W) feature maps as one 2-D array of ``columns`` tiles per row, NaN between tiles."""
    maps = F.interpolate(scaled_channels(maps.float())[:, None], size=tile, mode="nearest")[:, 0]
    rows = math.ceil(len(maps) / columns)
    height, width = tile
    grid = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan, dtype=np.float32)
    for i, channel in enumerate(maps.cpu().numpy()):
        r, c = divmod(i, columns)
        grid[r * (height + 1): r * (height + 1) + height, c * (width + 1): c * (width + 1) + width] = channel
    return grid


def image_maps(outputs, i):
    """[(row label, file suffix, (C, H, W) maps)] of image ``i`` of a batch, every call, early to late."""
    return [(name if len(calls) == 1 else f"{name} (call {k + 1})",
             name if len(calls) == 1 else f"{name}_call{k + 1}", output[i])
            for name, calls in outputs.items() for k, output in enumerate(calls)]


def save_feature_maps(maps_by_call, stem, image, mean, std, title, out_dir, num_channels):
    """``<stem>_<module>.png`` per module call under feature_maps/, ``<stem>.png`` overview beside them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    rows = []
    for label, suffix, maps in maps_by_call:
        maps = maps.float()
        if maps.ndim != 3:  # a vector (e.g. fc, avgpool): one row of 1x1 channels
            maps = maps.reshape(-1, 1, 1)
        factor = max(1, math.ceil(TILE_MIN / maps.shape[1]))
        size = (maps.shape[1] * factor, maps.shape[2] * factor)
        grid = tile_grid(maps, math.ceil(math.sqrt(len(maps))), size)
        plt.imsave(os.path.join(out_dir, "feature_maps", f"{stem}_{suffix}.png"), grid, cmap=colormap,
                   vmin=0, vmax=1)
        rows.append((label, tile_grid(maps[:num_channels], num_channels, (OVERVIEW_TILE, OVERVIEW_TILE)),
                     min(num_channels, len(maps))))
    picture = (image.float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1))
    picture = picture.clamp(0, 1).permute(1, 2, 0).numpy()
    columns = max(shown for _, _, shown in rows)
    fig = plt.figure(figsize=(2.5 + 0.9 * num_channels, 0.9 * len(rows) + 0.8))
    grid_spec = fig.add_gridspec(len(rows), 2, width_ratios=[0.9 * num_channels, 2.2], wspace=0.05)
    for r, (label, grid, _) in enumerate(rows):
        ax = fig.add_subplot(grid_spec[r, 0])
        ax.imshow(grid, cmap=colormap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        last = r == len(rows) - 1
        ax.set_xticks([(OVERVIEW_TILE + 1) * c + OVERVIEW_TILE / 2 for c in range(columns)] if last else [])
        if last:
            ax.set_xticklabels([str(c) for c in range(columns)], fontsize=7)
            ax.set_xlabel("channel", fontsize=8)
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    ax = fig.add_subplot(grid_spec[:, 1])
    ax.imshow(picture)
    ax.set_title("input", fontsize=9)
    ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.savefig(os.path.join(out_dir, "feature_maps_visualization", f"{stem}.png"), dpi=80, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Model and data

def checkpoint_setup(config, overrides):
    """The model and the data config of a checkpoint of this project (its own size and mean/std)."""
    given = [f"--{key}" for key in PRETRAINED_ONLY if key in overrides]
    if given:
        raise cli.UserError(f"{', '.join(given)} only applies to --checkpoint=pretrained; a checkpoint of this "
                            "project brings its own architecture, weights and image size.")
    path = config["checkpoint"]
    saved = load_checkpoint(path)
    model = model_from_checkpoint(saved, path)
    data = dict(saved["config"])
    if config["splits_dir"]:
        info = read_split_info(config["splits_dir"])
        check_class_names(data["class_names"], info["class_names"], path, config["splits_dir"])
        data["data_root"] = info["data_root"]
        data.update({f"{split}_csv": os.path.join(config["splits_dir"], f"{split}.csv") for split in SPLITS})
    return model, data, f"{path} ({data['arch']}, {eval_size(data)} px)"


def pretrained_setup(config):
    """torchvision's ImageNet model as it is (1000 classes) with ImageNet mean/std at --image_size."""
    if config["image_size"] < 16:
        raise cli.UserError("--image_size must be at least 16.")
    model = build_model(config["arch"], 1000)
    model.load_state_dict(imagenet_weights(config["arch"], config["weights_file"]))
    splits_dir = config["splits_dir"] or "splits"
    info = read_split_info(splits_dir)
    data = {"arch": config["arch"], "class_names": info["class_names"], "data_root": info["data_root"],
            "image_size": config["image_size"], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "seed": 0, "crop_min_scale": 1.0, "num_workers": 0,
            **{f"{split}_csv": os.path.join(splits_dir, f"{split}.csv") for split in SPLITS}}
    return model.eval(), data, f"torchvision {config['arch']} with ImageNet weights ({config['image_size']} px)"


def main(argv=None):
    config, overrides = cli.parse(__file__, __doc__, argv)
    names = [name.strip() for name in config["modules"].split(",") if name.strip()]
    if not config["checkpoint"]:
        raise cli.UserError("name the weights to look into: --checkpoint=PATH/best.pth or --checkpoint=pretrained.")
    if config["split"] not in SPLITS:
        raise cli.UserError(f"--split takes {', '.join(SPLITS)}, not {config['split']!r}.")
    if not names and not config["list_modules"]:
        raise cli.UserError("--modules names no module; give comma-separated names such as layer1.0.conv1.")
    if min(config["num_images"], config["channels"], config["stat_images"], config["batch_size"]) < 1:
        raise cli.UserError("--num_images, --channels, --stat_images and --batch_size must be at least 1.")
    if config["checkpoint"] == "pretrained":
        model, data, described = pretrained_setup(config)
    else:
        model, data, described = checkpoint_setup(config, overrides)
    if config["list_modules"]:
        print("\n".join(name for name, _ in model.named_modules() if name))
        return None
    check_module_names(model, names)
    data.update(data_root=config["data_root"] or data["data_root"], loader=config["loader"],
                cache_dir=config["cache_dir"], eval_batch_size=config["batch_size"])
    rt = runtime(config["device"], config["precision"])
    csv_file = data[f"{config['split']}_csv"]
    samples = read_split_csv(csv_file, data["data_root"], data["class_names"])
    if not samples:
        raise cli.UserError(f"{csv_file} lists no images; there is nothing to look at.")
    batches = build_loader(data, config["split"], False, rt.device)
    model = prepare_model(model, rt, keep_modules=True)  # hooks need each module's own output

    out_dir = config["out_dir"]
    for folder in ("feature_maps", "feature_maps_visualization"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    limit = min(len(samples), max(config["stat_images"], config["num_images"]))
    stat_limit, image_limit = min(limit, config["stat_images"]), min(limit, config["num_images"])
    digits = max(3, len(str(image_limit - 1)))
    stats, seen = NonPositiveStats(), 0
    with capture_outputs(model, names) as outputs, torch.inference_mode():
        for images, _ in batches:
            images = images[: limit - seen]
            outputs.clear()
            with rt.autocast():
                model(images)
            if seen < stat_limit:
                stats.update(outputs, min(len(images), stat_limit - seen))
            for i in range(max(0, min(len(images), image_limit - seen))):
                rel, label = samples[seen + i]
                title = f"{config['split']} image {seen + i}: {rel} ({data['class_names'][label]}); {described}"
                save_feature_maps(image_maps(outputs, i), f"img{seen + i:0{digits}d}", images[i], data["mean"],
                                  data["std"], title, out_dir, config["channels"])
            seen += len(images)
            if seen >= limit:
                break

    rows = stats.rows(names)
    header = (f"Average percentage of non-positive (<= 0) values per module over the first {stats.images} "
              f"{config['split']} images of {csv_file}\nmodel: {described}; {'bf16' if rt.bf16 else 'fp32'} "
              f"on {rt.device}")
    table = stats_table(rows, header)
    with open(os.path.join(out_dir, "non_positive_stats.txt"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table, end="")
    if stats.images < config["stat_images"]:
        print(f"(the {config['split']} split has only {stats.images} images, fewer than --stat_images="
              f"{config['stat_images']})")
    print(f"wrote feature maps of {image_limit} images to {os.path.join(out_dir, 'feature_maps')}/ and "
          f"{os.path.join(out_dir, 'feature_maps_visualization')}/, the table to "
          f"{os.path.join(out_dir, 'non_positive_stats.txt')}")
    return rows


if __name__ == "__main__":
    cli.run(main)
