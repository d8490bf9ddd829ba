"""Export a trained model to ONNX, then check the file with onnxruntime against PyTorch.

    python export.py --checkpoint=checkpoints/default/best.pth              # writes model.onnx
    python export.py --checkpoint=checkpoints/default/best.pth --out=scenes.onnx --images=photos --count=16

The ONNX model takes a float32 tensor "images" of shape (N, 3, S, S), N any batch size and S the
checkpoint's evaluation size: RGB images resized to S x S (PIL's bilinear filter, antialiased, no
crop, the aspect ratio not kept), scaled to [0, 1] and normalised per channel with the
checkpoint's mean and std. It returns "logits" (N, classes); their softmax gives the scores. Its
metadata_props hold the class names (JSON, in index order), image_size, mean and std (JSON), and
how to resize (README.md shows how to use it with onnxruntime alone).

Before writing the file, it runs --count images (evenly spread over the checkpoint's test split, or
the images of --images) through onnxruntime and through PyTorch in float32 on the CPU, and prints
the largest softmax difference and the top-1 agreement. A difference over --tolerance is an error
(exit status 2) and nothing is written: a previous file at --out stays as it was.
"""
import copy
import json
import os
import sys

import onnx
import onnxruntime
import torch

from scenes import cli
from scenes.checkpoints import load_checkpoint, model_from_checkpoint
from scenes.evaluation import predict
from scenes.files import ensure_file_folder, write_atomically
from scenes.metrics import softmax_scores
from scenes.outputs import check_output_file
from scenes.prediction import FileLoader, find_images
from scenes.runtime import Runtime, prepare_model
from scenes.splits import read_split_csv
from scenes.transforms import build_transforms, eval_size

# --- settings ---
checkpoint = "checkpoints/default/best.pth"  # the trained model (a run's best.pth)
out = "model.onnx"  # the ONNX file to write
images = ""  # folder (or image, or glob) of images to check the file on; "" = the checkpoint's test split
count = 64  # images the check runs, evenly spread over them (all if there are fewer) [>= 1]
tolerance = 1e-4  # largest absolute softmax difference from PyTorch (float32) that the check accepts [>= 0]
batch_size = 32  # images per batch in the check [>= 1]
# --- end of settings ---

CPU_FP32 = Runtime(torch.device("cpu"), bf16=False)
INPUT, OUTPUT = "images", "logits"


def check_paths(config, settings):
    """The images of the check: --images, else the checkpoint's test split; at most --count, evenly spread."""
    if settings["images"]:
        paths = find_images([settings["images"]])
    else:
        test_csv, root = config.get("test_csv", ""), config["data_root"]
        if not os.path.isfile(test_csv):
            raise cli.UserError(f"the checkpoint's test split {test_csv!r} is not here; name images to check the "
                                "export on with --images=FOLDER.")
        paths = [os.path.join(root, rel) for rel, _ in read_split_csv(test_csv, root, config["class_names"])]
    count = min(settings["count"], len(paths))
    return [paths[i * len(paths) // count] for i in range(count)]


def check_batches(paths, config, batch_size):
    """The check's images as batches on the CPU (decoded once, for both runtimes)."""
    loader = FileLoader(paths, build_transforms(config, train=False), batch_size, CPU_FP32.device)
    batches = list(loader)
    for path, reason in loader.skipped:
        print(f"skipped {path}: cannot decode it ({reason})", file=sys.stderr)
    if not batches:
        raise cli.UserError(f"none of the {len(paths)} image(s) of the check could be decoded.")
    return batches


def metadata(config, epoch):
    """What a user of the ONNX file needs to feed it and read its output (strings, in metadata_props)."""
    size = eval_size(config)
    return {
        "class_names": json.dumps(list(config["class_names"])),
        "image_size": str(size),
        "mean": json.dumps(list(config["mean"])),
        "std": json.dumps(list(config["std"])),
        "resize": f"RGB, resized to {size}x{size} with PIL's bilinear filter (antialiased), no crop, "
                  "the aspect ratio not kept; EXIF orientation not applied",
        "input": f"{INPUT}: float32 (N, 3, {size}, {size}), RGB scaled to [0, 1], then (x - mean) / std per channel",
        "output": f"{OUTPUT}: float32 (N, {len(config['class_names'])}); softmax gives the scores",
        "arch": config["arch"],
        "epoch": str(epoch),
    }


def onnx_model(model, size, props):
    """``model`` as an ONNX ModelProto with a dynamic batch size and ``props`` as its metadata."""
    example = torch.zeros(2, 3, size, size)  # a batch of 2, so the exporter keeps the batch size symbolic
    program = torch.onnx.export(model, (example,), input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, props)
    return proto


def compare(onnx_bytes, model, batches):
    """(largest absolute softmax difference, images with the same top-1 class) of the serialized
    ONNX model against PyTorch in float32 on the CPU, on ``batches``."""
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    torch_logits, _ = predict(prepare_model(copy.deepcopy(model), CPU_FP32), batches, CPU_FP32)
    onnx_logits = torch.cat([torch.from_numpy(session.run([OUTPUT], {INPUT: images.contiguous().numpy()})[0])
                             for images, _ in batches])
    torch_scores, onnx_scores = softmax_scores(torch_logits), softmax_scores(onnx_logits)
    difference = float((torch_scores - onnx_scores).abs().max())
    same_top1 = int((torch_scores.argmax(1) == onnx_scores.argmax(1)).sum())
    return difference, same_top1


def main(argv=None):
    """Export and check; returns (largest softmax difference, images with the same top-1 class, images)."""
    settings, _ = cli.parse(__file__, __doc__, argv)
    ensure_file_folder(settings["out"], "out")
    check_output_file(settings["out"], "out", [("--checkpoint", settings["checkpoint"])])
    checkpoint = load_checkpoint(settings["checkpoint"])
    config = checkpoint["config"]
    model = model_from_checkpoint(checkpoint, settings["checkpoint"])
    paths = check_paths(config, settings)
    check_output_file(settings["out"], "out", [("an image of the check", path) for path in paths])
    batches = check_batches(paths, config, settings["batch_size"])
    source = settings["images"] or config["test_csv"]
    proto = onnx_model(model, eval_size(config), metadata(config, checkpoint["epoch"]))
    path, onnx_bytes = settings["out"], proto.SerializeToString()
    difference, same_top1 = compare(onnx_bytes, model, batches)
    total = sum(len(images) for images, _ in batches)
    print(f"exported {len(onnx_bytes) / 1e6:.1f} MB: {INPUT} float32 (N, 3, {eval_size(config)}, "
          f"{eval_size(config)}) -> {OUTPUT} (N, {len(config['class_names'])})\nchecked on {total} images of "
          f"{source} against PyTorch (float32, CPU): largest softmax difference {difference:.3g} (tolerance "
          f"{settings['tolerance']:g}), top-1 the same on {same_top1}/{total}")
    if not difference <= settings["tolerance"]:
        raise cli.UserError(f"the ONNX model's scores differ from PyTorch's by {difference:.3g}, more than "
                            f"--tolerance={settings['tolerance']:g}; {path} was not written.")
    write_atomically(path, lambda f: f.write(onnx_bytes))
    print(f"wrote {path}")
    return difference, same_top1, total


if __name__ == "__main__":
    cli.run(main)
