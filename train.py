"""Train a ResNet on the split that main.py made.

    python train.py                                  # the default recipe, resumes if interrupted
    python train.py --preset=sgd_lr0.01 --epochs=10  # one of the report's variants
    python train.py --preset=all                     # the report's four variants, one after another
    torchrun --nproc_per_node=2 train.py             # DistributedDataParallel, same script

Each run writes checkpoints/<run>/: last.pth (every epoch), best.pth (best validation mAP; of equal
ones, the lower validation loss), metrics.csv, config.json, curves.png (train/validation loss and
accuracy) and test_loss.png.
Running the same command again resumes from last.pth; --restart=true starts the run over.
"""
from scenes import cli
from scenes.training import HELP_VALUES, train_presets

# --- settings ---
data_root = ""  # folder of class sub-folders; "" = the one the split was made from
splits_dir = "splits"  # folder with train.csv, validation.csv, test.csv (python main.py makes it)
checkpoints_dir = "checkpoints"  # one sub-folder per run
run = ""  # run folder name (one folder of checkpoints_dir, no /); "" = the preset's name
preset = "default"  # default | sgd_lr0.01 | sgd_lr0.001 | adam_lr0.001 | pretrained | all
arch = "resnet18"  # torchvision ResNet: resnet18, resnet34, resnet50, ...
pretrained = False  # start from torchvision's ImageNet weights, final layer replaced
zero_init_residual = False  # from scratch: each residual block's last BatchNorm starts at zero
weights_file = ""  # local ImageNet weights for offline use; "" = torchvision's cache or download
epochs = 30  # passes over the training split [>= 1]
time_budget_min = 0.0  # > 0: plan the epochs to end within this many minutes (under {SHORT_BUDGET_MIN}: 112 px from 144 px images) [>= 0]
image_size = 128  # pixels (square) of the training crops (at the end of progressive resizing) [16 to 1024]
progressive_min_size = 96  # > 0: training crops grow from this size to image_size over the first 3/4 of the epochs [0 or 16 to 1024]
eval_image_size = 160  # pixels (square) for validation, test and evaluation; 0 = image_size [0 or 16 to 1024]
batch_size = 64  # images per optimizer step, split among torchrun processes (BatchNorm trains on 2+ each) [>= 2]
eval_batch_size = 256  # images per evaluation batch [>= 1]
optimizer = "sgd"  # sgd uses Nesterov momentum [one of sgd, adam, adamw]
lr = 0.05  # peak learning rate [>= 0]
momentum = 0.9  # SGD momentum [>= 0 and < 1]
weight_decay = 5e-4  # L2 penalty on weights (not on norms and biases) [>= 0]
schedule = "cosine"  # cosine follows a linear warm-up [one of cosine, constant]
warmup_epochs = 1.0  # linear warm-up, in epochs [>= 0]
label_smoothing = 0.1  # cross-entropy label smoothing [>= 0 and < 1]
augment = True  # random resized crops and horizontal flips for training
crop_min_scale = 0.35  # smallest area fraction of a random resized crop [> 0 and <= 1]
mix_prob = 0.5  # share of batches mixed (MixUp or CutMix, alpha 1, half each) from epoch 2 of runs of {MIX_MIN_EPOCHS}+ epochs [0 to 1]
mix_until = 1.0  # mixing stops after this fraction of the planned epochs (the rest train on unmixed batches) [0 to 1]
precise_bn_images = 512  # > 0: before each evaluation, BatchNorm statistics are re-estimated on this many clean training images at the evaluation size [>= 0]
ema_epochs = 0.0  # > 0: evaluate and save an exponential moving average of the weights over about this many epochs [>= 0]
tta_flip = False  # evaluate on each image and its mirror image, logits averaged
loader = "cached"  # cached: decoded once into a uint8 file; plain: PIL per item [one of cached, plain]
cache_dir = "cache"  # where the cached loader keeps decoded images
num_workers = 0  # DataLoader worker processes of the plain loader [>= 0]
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # auto: bf16 where the hardware is fast at it [one of auto, bf16, fp32]
compile = False  # torch.compile the model
seed = 0  # seeds the weights, the shuffling and the augmentation [>= 0]
restart = False  # start the run over instead of resuming from its last.pth
# --- end of settings ---


def main(argv=None):
    config, overrides = cli.parse(__file__, __doc__, argv, help_values=HELP_VALUES)
    return train_presets(config, overrides)


if __name__ == "__main__":
    cli.run(main)
