"""Split a folder of class sub-folders into train.csv, validation.csv and test.csv.

    python data_handling.py --data_root=data --splits_dir=splits
    python data_handling.py --data_root=data --val_size=3000 --test_size=2000   # counts, not fractions
    python main.py --steps=split                                  # the same, as main.py's first step

Every sub-folder of the dataset root is a class (sorted by name gives the class index). The split
is stratified and seeded; byte-identical copies of an image and its near-copies (the same photo
re-encoded or resized, the next frame of a burst: pHash within 6 bits of 64) are reported and kept in
one split; images that cannot be decoded are named and left out. split_info.json records every
image's sha256, so a run knows the content of its split. CSV paths are relative to the dataset root,
whose absolute path is kept once, in ``split_info.json`` beside the CSVs.

Nothing is written until the split is known to be usable: file names that are not valid UTF-8 are
refused, naming them (a CSV cannot hold them, and a renamed file is better than a silently missing
one); sizes that leave a split empty are refused; a class too small to reach every split is a
warning. The four files are written as one set, so a failure leaves the previous split whole.
"""
from scenes import cli
from scenes.splitting import make_splits

# --- settings ---
data_root = "data"  # folder of class sub-folders
splits_dir = "splits"  # where train.csv, validation.csv, test.csv and split_info.json go
val_size = 0.1761183515322297  # validation images: a fraction (< 1) or a count (3000 of 17034) [>= 0]
test_size = 0.11741223435482  # test images: a fraction (< 1) or a count (2000 of 17034) [>= 0]
seed = 0  # seeds the split [>= 0]
corrections = ""  # a CSV of path,action,class rows (relabel or drop) applied first; audit.py suggests one
# --- end of settings ---


def main(argv=None):
    config, _ = cli.parse(__file__, __doc__, argv)
    return make_splits(config["data_root"], config["splits_dir"], config["val_size"], config["test_size"],
                       config["seed"], corrections=config["corrections"])


if __name__ == "__main__":
    cli.run(main)
