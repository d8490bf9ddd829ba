"""The figures of scenes/figures.py read without guessing: labelled axes, whole epochs, titles inside
the picture, a gallery large enough to see with a colour bar for its heat maps."""
import numpy as np
import pytest

from scenes import figures

ROW = {"train_loss": 2.0, "val_loss": 1.8, "test_loss": 1.9, "train_accuracy": 0.3, "val_accuracy": 0.35}


@pytest.fixture
def drawn(monkeypatch):
    """The figures a function writes, by file name, drawn but not saved."""
    made = {}
    monkeypatch.setattr(figures, "write_figure", lambda path, fig, **kw: made.update({path.split("/")[-1]: fig}))
    return made


def inside(fig, artist):
    """Whether an artist (a title) is drawn wholly inside its figure."""
    renderer = fig.canvas.get_renderer()
    box, frame = artist.get_window_extent(renderer), fig.bbox
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


@pytest.mark.parametrize("epochs", [1, 3])
def test_a_runs_curves_have_labelled_axes_whole_epochs_and_titles_that_fit(drawn, epochs):
    figures.save_curves([{**ROW, "epoch": e} for e in range(1, epochs + 1)], "run")
    loss, accuracy = drawn["curves.png"].axes
    test = drawn["test_loss.png"].axes[0]
    for ax in (loss, accuracy, test):
        drawn_ticks = [t for t in ax.get_xticks() if 0.5 <= t <= epochs + 0.5]
        assert drawn_ticks == list(range(1, epochs + 1))  # 1, 2, ... only: no 0.96 ... 1.04
        assert ax.get_xlabel() == "epoch" and "(" in ax.get_ylabel()  # a quantity and its unit or kind
        assert inside(ax.figure, ax.title)
    assert loss.get_ylabel().startswith("loss") and accuracy.get_ylabel().startswith("accuracy")
    assert [line.get_label() for line in loss.lines] == ["train loss", "validation loss"]
    assert loss.lines[0].get_linestyle() != loss.lines[1].get_linestyle()


def test_the_gallery_is_large_and_has_a_colour_bar():
    image, heat = np.random.default_rng(0).random((40, 40, 3)), np.linspace(0, 1, 1600).reshape(40, 40)
    fig = figures.gallery_figure([(image, heat, "a\nb\nc")] * 5, "mistakes")
    width, _ = fig.get_size_inches()
    assert width / (2 * 3) >= 2.5  # inches per picture
    pictures = [ax for ax in fig.axes if ax.images]
    assert pictures[0].images[0].get_interpolation() == "lanczos"  # upsampled smoothly, not in blocks
    colour_bars = [ax for ax in fig.axes if "Grad-CAM" in ax.get_ylabel()]
    assert len(colour_bars) == 1
    figures.pyplot().close(fig)
