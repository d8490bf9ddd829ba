"""Label photos with a trained model: the most likely classes and their scores, per image.

    python predict.py --checkpoint=checkpoints/default/best.pth photo.jpg holidays/ "shots/*.png"
    python predict.py --checkpoint=checkpoints/default/best.pth holidays/ --topk=3 --out=predictions.csv
    python predict.py --checkpoint=checkpoints/default/best.pth --list_file=paths.txt

Each PATH is an image file, a folder (searched recursively for .jpg .jpeg .png .bmp .webp in any
letter case) or a glob (quoted, so that the shell leaves it alone); --list_file names more, one a
line. The architecture, classes, evaluation size and mean/std come from the checkpoint. Images are
decoded as in training and evaluation (any mode becomes RGB; EXIF orientation is not applied),
resized by the evaluation transforms and predicted in batches with the BatchNorms folded,
bfloat16 where the hardware is fast at it (--precision).

Printed: one line per image, its --topk classes with their softmax scores, most likely first;
on stderr, the images per second (decoding included). --out writes a CSV: path, predicted class,
its score, and one softmax score per class. An image that cannot be decoded is named on stderr
and skipped; when none can be, the exit status is 2.
"""
import sys
import time

from tqdm import tqdm

from scenes import cli
from scenes.checkpoints import load_checkpoint, model_from_checkpoint
from scenes.evaluation import predict
from scenes.files import ensure_file_folder, write_table
from scenes.metrics import softmax_scores
from scenes.outputs import check_output_file
from scenes.prediction import FileLoader, find_images, read_path_list, scores_table, topk_lines
from scenes.runtime import prepare_for_steps, runtime
from scenes.scoring import SCORE_FORMAT
from scenes.splits import check_class_list
from scenes.transforms import build_transforms, eval_size

# --- settings ---
checkpoint = "checkpoints/default/best.pth"  # the trained model (a run's best.pth)
topk = 1  # classes printed per image, most likely first (1 to the number of classes) [>= 1]
out = ""  # CSV to write: path, predicted class, its score, one softmax score per class; "" = none
list_file = ""  # a text file of more paths (images, folders or globs), one a line; "" = none
tta_flip = "auto"  # logits of each image and its mirror averaged; auto: as the checkpoint is evaluated [one of auto, true, false]
batch_size = 64  # images per batch (the scores do not depend on it) [>= 1]
workers = 0  # threads that decode images; 0 = one per CPU core, at most 8 [>= 0]
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # auto: bf16 where the hardware is fast at it [one of auto, bf16, fp32]
# --- end of settings ---


def check_settings(settings, arguments, class_names):
    """Refuse settings out of range with a sentence, before any image is read."""
    if not arguments and not settings["list_file"]:
        raise cli.UserError("name the images to label: files, folders or globs (or --list_file=FILE); see --help.")
    if not 1 <= settings["topk"] <= len(class_names):
        raise cli.UserError(f"--topk takes 1 to {len(class_names)} (the checkpoint's classes), not {settings['topk']}.")


def uses_tta_flip(settings, config):
    return config.get("tta_flip", False) if settings["tta_flip"] == "auto" else settings["tta_flip"] == "true"


def predict_all(model, loader, rt, tta_flip):
    """Logits of the images ``loader`` could read, the indices of those images, and the seconds taken;
    the others are named on stderr."""
    start = time.perf_counter()
    bar = tqdm(loader, desc="predicting", unit="batch", leave=False, dynamic_ncols=True,
               disable=len(loader) < 2 or not sys.stderr.isatty())
    logits, indices = predict(model, bar, rt, tta_flip)
    seconds = time.perf_counter() - start
    for path, reason in loader.skipped:
        print(f"skipped {path}: cannot decode it ({reason})", file=sys.stderr)
    return logits, indices, seconds


def main(argv=None):
    """Label the images; returns the table that --out writes."""
    settings, _, arguments = cli.parse(__file__, __doc__, argv, positional=True)
    checkpoint = load_checkpoint(settings["checkpoint"])
    config, class_names = checkpoint["config"], checkpoint["config"]["class_names"]
    check_settings(settings, arguments, class_names)
    if settings["out"]:
        ensure_file_folder(settings["out"], "out")
        check_class_list(class_names, settings["checkpoint"])  # its class columns beside path, predicted, score
        check_output_file(settings["out"], "out", [("--checkpoint", settings["checkpoint"]),
                                                   ("--list_file", settings["list_file"])])
    list_paths = read_path_list(settings["list_file"]) if settings["list_file"] else []
    paths = find_images(arguments + list_paths)
    if settings["out"]:
        check_output_file(settings["out"], "out", [("an image to label", path) for path in paths])
    rt = runtime(settings["device"], settings["precision"])
    model = prepare_for_steps(model_from_checkpoint(checkpoint, settings["checkpoint"]), rt)
    del checkpoint  # the optimizer state is not needed
    loader = FileLoader(paths, build_transforms(config, train=False), settings["batch_size"], rt.device,
                        settings["workers"])
    tta_flip = uses_tta_flip(settings, config)
    logits, indices, seconds = predict_all(model, loader, rt, tta_flip)
    if not len(indices):
        raise cli.UserError(f"none of the {len(paths)} image(s) could be decoded (each is named above).")
    table = scores_table([paths[i] for i in indices.tolist()], softmax_scores(logits), class_names)
    if settings["out"]:  # before printing, so a reader that stops early (a pipe into head) loses no file
        write_table(settings["out"], table, index=False, float_format=SCORE_FORMAT)
    print("\n".join(topk_lines(table, class_names, settings["topk"])))
    how = f"{rt.device}, {'bf16' if rt.bf16 else 'fp32'}, {eval_size(config)} px{', flip TTA' if tta_flip else ''}"
    print(f"predicted {len(table)} image(s) in {seconds:.2f} s: {len(table) / seconds:.1f} images/s, decoding "
          f"included ({how}); {len(loader.skipped)} skipped{'; wrote ' + settings['out'] if settings['out'] else ''}.",
          file=sys.stderr)
    return table


if __name__ == "__main__":
    cli.run(main)
