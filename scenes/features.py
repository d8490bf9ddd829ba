"""Looking inside a network: forward hooks by module name, non-positive shares, feature-map images.

``capture_outputs`` registers the hooks in one place and always removes them; ``NonPositiveStats``
keeps the report's Table 2 as a running mean; ``save_feature_maps`` draws its Figure 3.
"""
import difflib
import math
import os
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from scenes.cli import UserError
from scenes.files import pyplot, write_figure, write_image
from scenes.transforms import picture

MAX_LISTED = 80  # an unknown module name lists this many valid names at most
TILE_MIN = 32  # feature-map tiles smaller than this (pixels) are enlarged by whole factors
OVERVIEW_TILE = 64  # pixels per channel in the overview figure



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
    raise UserError(f"the model has no module {', '.join(map(repr, unknown))}{hint}; "
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
                raise UserError(f"module {name!r} returns {type(output).__name__}, not a tensor; "
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


def count_non_positive(model, batches, names, limit, rt):
    """``NonPositiveStats`` of the named modules over the first ``limit`` images of ``batches``."""
    stats = NonPositiveStats()
    with capture_outputs(model, names) as outputs, torch.inference_mode():
        for images, _ in batches:
            images = images[: limit - stats.images]
            outputs.clear()
            with rt.autocast():
                model(images)
            stats.update(outputs, len(images))
            if stats.images >= limit:
                break
    return stats


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
    plt = pyplot()
    colormap = plt.colormaps["viridis"].with_extremes(bad="white")
    rows = []
    for label, suffix, maps in maps_by_call:
        maps = maps.float()
        if maps.ndim != 3:  # a vector (e.g. fc, avgpool): one row of 1x1 channels
            maps = maps.reshape(-1, 1, 1)
        factor = max(1, math.ceil(TILE_MIN / maps.shape[1]))
        size = (maps.shape[1] * factor, maps.shape[2] * factor)
        grid = tile_grid(maps, math.ceil(math.sqrt(len(maps))), size)
        write_image(os.path.join(out_dir, "feature_maps", f"{stem}_{suffix}.png"), grid, cmap=colormap,
                    vmin=0, vmax=1)
        rows.append((label, tile_grid(maps[:num_channels], num_channels, (OVERVIEW_TILE, OVERVIEW_TILE)),
                     min(num_channels, len(maps))))
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
    ax.imshow(picture(image, mean, std))
    ax.set_title("input", fontsize=9)
    ax.axis("off")
    fig.suptitle(title, fontsize=9)
    write_figure(os.path.join(out_dir, "feature_maps_visualization", f"{stem}.png"), fig, dpi=80,
                 bbox_inches="tight")


