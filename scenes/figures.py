"""The figures: a run's curves (the report's Figure 1 and Figure 2), the same as grids over runs
with one panel per run, a confusion matrix, and the gallery of mistakes with their heat maps."""
import math
import os

import numpy as np

from scenes.files import pyplot, write_figure


LOSS_LABEL = "loss (cross-entropy)"
ACCURACY_LABEL = "accuracy (share of images)"
# Train solid with circles, validation dashed with squares; loss blue, accuracy green.
STYLES = {"train": dict(ls="-", marker="o"), "val": dict(ls="--", marker="s")}
COLORS = {"loss": "C0", "accuracy": "C2"}
SPLIT_NAMES = {"train": "train", "val": "validation"}


def whole_epochs(ax, epochs):
    """Epochs 1 to ``epochs`` on the x axis, ticks at whole epochs only (one epoch too)."""
    from matplotlib.ticker import MaxNLocator
    ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def log_scale(ax):
    """A log y axis labelled in plain numbers (4, 5, 10, 100), within a decade too."""
    from matplotlib.ticker import FuncFormatter, LogFormatter
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def plot_metric(ax, history, metric, ms=4):
    """Training and validation ``metric`` per epoch on ``ax``, in the styles of ``STYLES``."""
    epochs = [row["epoch"] for row in history]
    for split in ("train", "val"):
        ax.plot(epochs, [row[f"{split}_{metric}"] for row in history], color=COLORS[metric], ms=ms,
                label=f"{SPLIT_NAMES[split]} {metric}", **STYLES[split])
    ax.set_ylabel(LOSS_LABEL if metric == "loss" else ACCURACY_LABEL)


def save_curves(history, run_dir):
    """The report's Figure 1 (loss and accuracy, train and validation) and Figure 2 (test loss)."""
    plt = pyplot()
    last = max(row["epoch"] for row in history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        plot_metric(ax, history, metric)
        ax.set_title(f"{metric} per epoch")
        whole_epochs(ax, last)
        ax.grid(alpha=0.3)
        ax.legend()
    log_scale(axes[0])  # an early epoch's loss can be orders of magnitude above the rest
    axes[0].set_ylabel(f"{LOSS_LABEL}, log scale")
    axes[1].set_ylim(0, 1.02)
    fig.tight_layout()
    write_figure(os.path.join(run_dir, "curves.png"), fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([row["epoch"] for row in history], [row["test_loss"] for row in history], marker="o", color="C3")
    ax.set_ylabel(f"test {LOSS_LABEL}, log scale")
    log_scale(ax)
    ax.set_title("test loss per epoch\n(recorded only: never used to choose the weights)", fontsize=10)
    whole_epochs(ax, last)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_figure(os.path.join(run_dir, "test_loss.png"), fig)


def panel_grid(count, title, panel_size=(4.2, 3.2), rows_per_item=1):
    """A figure of ``count`` items in a grid of at most three columns, each item ``rows_per_item``
    panels one above the other, with nothing else in it; returns (figure, [panels of each item])."""
    plt = pyplot()
    columns = min(count, 3)
    rows = math.ceil(count / columns) * rows_per_item
    fig, axes = plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows + 0.6),
                             squeeze=False)
    items = [[axes[(i // columns) * rows_per_item + k, i % columns] for k in range(rows_per_item)]
             for i in range(count)]
    for i in range(count, (rows // rows_per_item) * columns):
        for k in range(rows_per_item):
            fig.delaxes(axes[(i // columns) * rows_per_item + k, i % columns])
    fig.suptitle(title)
    return fig, items


def finish_panels(panels, epochs, top):
    """Whole epochs from 1 to ``epochs`` and 0 to ``top`` on every panel, with a light grid."""
    for ax in panels:
        whole_epochs(ax, epochs)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)


def curves_grid(runs, epochs, top):
    """The report's Figure 1 over runs: per run (``(title, history rows, best epoch)``) a loss panel
    above an accuracy panel, training and validation per epoch, the epoch of the saved weights
    dotted; the same axes in every loss panel (epochs 1 to ``epochs``, 0 to ``top``) and in every
    accuracy panel (0 to 1)."""
    fig, items = panel_grid(len(runs), "Figure 1: loss and accuracy per epoch (train solid, validation dashed)",
                            panel_size=(4.2, 2.6), rows_per_item=2)
    for (loss_ax, accuracy_ax), (title, history, best_epoch) in zip(items, runs):
        for ax, metric in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
            plot_metric(ax, history, metric, ms=3)
            if best_epoch:
                ax.axvline(best_epoch, color="grey", ls=":", label="saved weights")
        loss_ax.set_title(title)
    finish_panels([loss for loss, _ in items], epochs, top)
    finish_panels([accuracy for _, accuracy in items], epochs, 1.02)
    for ax in items[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def test_loss_grid(runs, epochs, top):
    """The report's Figure 2 over runs: per run (``(title, history rows)``) its test loss per epoch,
    recorded for the plot and never used to choose weights; the same axes in every panel."""
    title = "Figure 2: test loss per epoch (recorded only; never used to choose weights)"
    fig, items = panel_grid(len(runs), title)
    for (ax,), (title, history) in zip(items, runs):
        ax.plot([row["epoch"] for row in history], [row["test_loss"] for row in history], color="C3", marker="o",
                ms=3)
        ax.set(title=title, ylabel=f"test {LOSS_LABEL}")
    finish_panels([ax for ax, in items], epochs, top)
    fig.tight_layout()
    return fig


def gallery_figure(items, title, columns=3, inches=2.6):
    """Mistakes side by side: per item (``(picture, heat map, caption)``, a (H, W, 3) array of 0..1 and
    an (H, W) one) the picture and the picture under its heat map, ``columns`` items a row, each
    picture ``inches`` wide and smoothly upsampled, one colour bar for the heat maps."""
    plt = pyplot()
    rows = math.ceil(len(items) / columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(inches * 2 * columns + 1.0, (inches + 0.6) * rows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    heat_image = None
    for i, (image, heat, caption) in enumerate(items):
        left, right = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        left.imshow(image, interpolation="lanczos")
        left.set_title(caption, fontsize=7, loc="left")
        right.imshow(image, interpolation="lanczos")
        heat_image = right.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        right.set_title("Grad-CAM of the prediction", fontsize=7)
    if heat_image is not None:
        fig.colorbar(heat_image, ax=axes, shrink=min(1.0, 3 / rows), fraction=0.02, pad=0.01,
                     label="Grad-CAM of the predicted class (1 = the map's peak)")
    fig.suptitle(title, fontsize=10)
    return fig


def save_confusion(confusion, class_names, path, title):
    """A confusion matrix (rows = true class) as a PNG: each row coloured by its share of the true
    class (so small classes read like large ones), with the count and the share in each cell."""
    plt = pyplot()
    confusion = np.asarray(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = 1.0 + 0.8 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(confusion):
        text = f"{count}\n{shares[row, column]:.0%}" if count else "0"
        ax.text(column, row, text, ha="center", va="center", fontsize=8,
                color="white" if shares[row, column] > 0.5 else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    write_figure(path, fig)


def picture_rows(rows, title, tile=2.6):
    """Pictures in rows, each a list of ``(picture, caption)`` (an (H, W, 3) array, a short text),
    each picture ``tile`` inches wide, so a 150-pixel photo is shown at its size or larger."""
    plt = pyplot()
    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(tile * columns, (tile + 0.5) * len(rows) + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            axes[r, c].imshow(image)
            axes[r, c].set_title(caption, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
