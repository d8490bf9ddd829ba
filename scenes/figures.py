"""The figures: a run's curves (the report's Figure 1 and Figure 2), the same as grids over runs
with one panel per run, a confusion matrix, and the gallery of mistakes with their heat maps."""
import math
import os

import numpy as np

from scenes.files import pyplot, write_figure


def save_curves(history, run_dir):
    """The report's Figure 1 (loss and accuracy, train and validation) and Figure 2 (test loss)."""
    plt = pyplot()
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
    write_figure(os.path.join(run_dir, "curves.png"), fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(epochs, [row["test_loss"] for row in history], marker="o", color="C2")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="test loss per epoch (not used to choose weights)")
    fig.tight_layout()
    write_figure(os.path.join(run_dir, "test_loss.png"), fig)


def panel_grid(count, title, panel_size=(4.2, 3.2)):
    """A figure of ``count`` panels in a grid of at most three columns, all sharing their x and y
    axes, and nothing else in it; returns (figure, panels)."""
    plt = pyplot()
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    panels = list(axes.flat)
    for ax in panels[count:]:
        fig.delaxes(ax)
    for ax in panels[:count]:
        ax.tick_params(labelbottom=True, labelleft=True)  # sharing hides inner tick labels otherwise
    fig.suptitle(title)
    return fig, panels[:count]


def finish_grid(fig, panels, epochs, top):
    """Whole epochs from 1 to ``epochs`` and 0 to ``top`` on every panel."""
    for ax in panels:
        ax.set_xlim(0.5, epochs + 0.5)
        ax.set_ylim(0, top)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def curves_grid(runs, epochs, top):
    """The report's Figure 1 over runs: per run (``(title, history rows, best epoch)``) a panel of
    training and validation loss (solid) and accuracy (dashed) per epoch, the epoch of the saved
    weights dotted; the same axes in every panel (epochs 1 to ``epochs``, 0 to ``top``)."""
    fig, panels = panel_grid(len(runs), "Figure 1: loss (solid) and accuracy (dashed) per epoch")
    for ax, (title, history, best_epoch) in zip(panels, runs):
        epoch = [row["epoch"] for row in history]
        for split, color in (("train", "C0"), ("val", "C1")):
            ax.plot(epoch, [row[f"{split}_loss"] for row in history], color=color, marker="o", ms=3,
                    label=f"{split} loss")
            ax.plot(epoch, [row[f"{split}_accuracy"] for row in history], color=color, ls="--", marker="o", ms=3,
                    label=f"{split} accuracy")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls=":", label="saved weights")
        ax.set(title=title, xlabel="epoch")
    panels[0].legend(fontsize=7)
    return finish_grid(fig, panels, epochs, top)


def test_loss_grid(runs, epochs, top):
    """The report's Figure 2 over runs: per run (``(title, history rows)``) its test loss per epoch,
    recorded for the plot and never used to choose weights; the same axes in every panel."""
    title = "Figure 2: test loss per epoch (recorded only; never used to choose weights)"
    fig, panels = panel_grid(len(runs), title)
    for ax, (title, history) in zip(panels, runs):
        ax.plot([row["epoch"] for row in history], [row["test_loss"] for row in history], color="C2", marker="o",
                ms=3)
        ax.set(title=title, xlabel="epoch", ylabel="test loss")
    return finish_grid(fig, panels, epochs, top)


def gallery_figure(items, title, columns=4):
    """Mistakes side by side: per item (``(picture, heat map, caption)``, a (H, W, 3) array of 0..1 and
    an (H, W) one) the picture and the picture under its heat map, ``columns`` items a row."""
    plt = pyplot()
    rows = math.ceil(len(items) / columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.2 * 2 * columns, 2.6 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, heat, caption) in enumerate(items):
        left, right = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        left.imshow(image)
        left.set_title(caption, fontsize=7, loc="left")
        right.imshow(image)
        right.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        right.set_title("Grad-CAM of the prediction", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
