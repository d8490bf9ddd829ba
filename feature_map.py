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
from scenes import cli
from scenes.feature_maps import write_feature_maps

# --- settings ---
checkpoint = ""  # a checkpoint of this project (.pth), or "pretrained" for torchvision's ImageNet model
modules = "layer1.0.conv1,layer2.0.conv1,layer3.0.conv1,layer4.0.conv1,layer4.1.conv2"  # comma-separated names
list_modules = False  # print the module names of the model and stop
split = "test"  # the split the images come from [one of train, validation, test]
data_root = ""  # folder of class sub-folders; "" = the one the split was made from
splits_dir = ""  # folder with the split CSVs; "" = the checkpoint's (splits/ for pretrained)
out_dir = "."  # feature_maps/, feature_maps_visualization/ and non_positive_stats.txt go here
num_images = 10  # images (the first of the split) drawn as feature maps [>= 1]
channels = 8  # channels per module in the overview figure (the first ones) [>= 1]
stat_images = 200  # images (the first of the split) in the non-positive statistics [>= 1]
batch_size = 100  # images per forward pass [>= 1]
arch = "resnet18"  # architecture of --checkpoint=pretrained
weights_file = ""  # ImageNet weights for --checkpoint=pretrained offline; "" = torchvision's cache
image_size = 150  # pixels (square) for --checkpoint=pretrained; a checkpoint uses its own [16 to 1024]
loader = "cached"  # cached: decoded once into a uint8 file; plain: PIL per item [one of cached, plain]
cache_dir = "cache"  # where the cached loader keeps decoded images
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "fp32"  # fp32 gives exact signs; auto: bf16 where the hardware is fast at it [one of fp32, auto, bf16]
# --- end of settings ---


def main(argv=None):
    config, overrides = cli.parse(__file__, __doc__, argv)
    return write_feature_maps(config, overrides)


if __name__ == "__main__":
    cli.run(main)
