"""The course report over all runs of a checkpoints folder, as one Markdown file with its figures.

    python report.py                                   # checkpoints/ -> results/report/report.md
    python report.py /path/to/checkpoints --out_dir=results/report --splits_dir=splits
    python report.py checkpoints --gallery=32          # more of the best run's mistakes

Sections of report.md: 1 the runs (settings, epochs, minutes, device) and the data; 2 Figure 1
(training and validation loss and accuracy: per run a loss panel above an accuracy panel); 3 Figure 2
(test loss, recorded only); 4 Table 1 (per-class AP, mAP, accuracy, mean class accuracy on the test
split, the numbers accuracy_eval.py gives); 5 a confusion matrix per run; 6 Figure 3 and Table 2
(feature maps and non-positive shares) for the best run by validation mAP; 7 where the best run
goes wrong: the most confused classes, a gallery of its most confident mistakes with Grad-CAM heat
maps, and mistakes.csv (every misclassified test image with its scores).

Table 1 reads each run's saved test scores (best_test_scores.csv beside best.pth, as accuracy_eval.py
writes them) and evaluates only a run whose scores are missing, older than its best.pth or over
other images, saving them there as accuracy_eval.py would; so a second report is quick. A run
folder that is broken (a damaged best.pth, a metrics.csv that does not parse), unfinished or
incomplete is shown as such and the others are reported all the same.
"""
from scenes import cli
from scenes.report import make_report

# --- settings ---
out_dir = "results/report"  # report.md and its PNGs go here
splits_dir = "splits"  # folder with the split CSVs the runs were trained on (python main.py makes it)
data_root = ""  # folder of class sub-folders; "" = the one the split was made from
gallery = 16  # the best run's most confident test mistakes shown with Grad-CAM (0 = none) [>= 0]
pairs = 6  # most confused class pairs listed [>= 0]
feature_classes = "buildings,mountain"  # Figure 3 shows the first test image of each of these classes
modules = "layer1.0.conv1,layer2.0.conv1,layer3.0.conv1,layer4.0.conv1,layer4.1.conv2"  # of Figure 3 and Table 2
channels = 8  # channels per module in Figure 3 [>= 1]
stat_images = 200  # test images (the first of the split) in Table 2 [>= 1]
batch_size = 256  # images per evaluation batch (the metrics do not depend on it) [>= 1]
loader = "cached"  # cached: decoded once into a uint8 file; plain: PIL per item [one of cached, plain]
cache_dir = "cache"  # where the cached loader keeps decoded images
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # of evaluating runs without saved scores (Figure 3, Table 2 and Grad-CAM run in fp32)
# --- end of settings ---


def main(argv=None):
    config, _, positionals = cli.parse(__file__, __doc__, argv, positional=True)
    return make_report(config, positionals)


if __name__ == "__main__":
    cli.run(main)
