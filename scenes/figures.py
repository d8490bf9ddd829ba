"""The figures of a run: the report's Figure 1 and Figure 2 (curves) and a confusion matrix."""
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
        ax.text(column, row, f"{count}\n{shares[row, column]:.0%}", ha="center", va="center", fontsize=8,
                color="white" if shares[row, column] > 0.5 else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    write_figure(path, fig)
