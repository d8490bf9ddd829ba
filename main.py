"""The whole pipeline in one command: split, train, evaluate, feature maps, the report.

    python main.py                      # real data in data/ if present, else a generated DEMO set
    python main.py --steps=split        # only build splits/train.csv, validation.csv, test.csv
    python main.py --data_root=/path/to/intel-scenes --time_budget_min=30
    python main.py --steps=report       # only the report over every run in checkpoints/

With no class folders in data/, a small synthetic six-class demo set is generated in demo/data/ and
trained briefly (six epochs at 64 px); everything it writes lies under demo/ (rm -r demo removes
it), so it never mixes with real runs. With real data the steps run with train.py's defaults and
the training settings below; before training, main.py measures a few steps and says roughly how
long the run will take on this machine. Each step is also its own script. The last step writes
results/report/report.md over every run in checkpoints/ (report.py).
"""
from scenes import cli
from scenes.pipeline import run_pipeline

# --- settings ---
data_root = ""  # folder of class sub-folders; "" = data/ if it has any, else the generated demo set
splits_dir = "splits"  # where train.csv, validation.csv, test.csv and split_info.json go (demo/splits for the demo)
checkpoints_dir = "checkpoints"  # one sub-folder per run (demo/checkpoints for the demo)
results_dir = "results"  # the comparison table, feature maps and report/ (demo/results for the demo)
cache_dir = "cache"  # where decoded images are cached (demo/cache for the demo)
val_size = 0.1761183515322297  # validation images: a fraction (< 1) or a count (3000 of 17034) [>= 0]
test_size = 0.11741223435482  # test images: a fraction (< 1) or a count (2000 of 17034) [>= 0]
seed = 0  # seeds the split [>= 0]
corrections = ""  # the split step applies this corrections file (path,action,class; audit.py suggests one)
steps = "split,train,evaluate,features,report"  # comma-separated steps to run, in this order
preset = "default"  # train.py's preset: default | sgd_lr0.01 | sgd_lr0.001 | adam_lr0.001 | pretrained | all
epochs = 30  # train.py's epochs (the demo trains 6 unless given) [>= 1]
time_budget_min = 0.0  # > 0: train as many epochs as fit in this many minutes (train.py's setting) [>= 0]
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
restart = False  # the train step starts its run over (needed after the split was made again over other images)
# --- end of settings ---


def main(argv=None):
    config, overrides = cli.parse(__file__, __doc__, argv)
    run_pipeline(config, overrides)


if __name__ == "__main__":
    cli.run(main)
