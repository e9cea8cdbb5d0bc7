#!/usr/bin/env python3
"""Draw the class-balanced MNIST sample that ships inside cbackprop.

    python tools/make_sample.py [PATH/TO/mnist.npz] [--out PATH] [--seed N]
                                [--train-per-class N] [--test-per-class N]

Input: the book-split mnist.npz (keys train_x (50000, 784) uint8, train_y, test_x
(10000, 784) uint8, test_y); default ../shared/data/mnist.npz relative to the repository
root.  Output (default src/cbackprop/data/mnist_sample.npz), written with
np.savez_compressed, keys train_x (uint8, row-major 28x28), train_y (uint8 labels 0..9),
test_x, test_y.

How the subset is drawn (deterministic for a given input file):

* one generator, np.random.default_rng(SEED) with SEED = 20240607 by default;
* for the training split, for each class c = 0, 1, ..., 9 in that order,
  rng.choice(indices of class c in train_x, size=TRAIN_PER_CLASS, replace=False);
  then the same for the test split (TEST_PER_CLASS per class from test_x);
* the chosen indices of each split are sorted, so the sample keeps MNIST's original
  order (which interleaves the classes); only train_x/train_y and test_x/test_y are
  read -- the validation images (val_x) are not used.

The default counts, 1,000 training and 200 test images per class (10,000 + 2,000),
give a file of 1,988,619 bytes (1.90 MiB).  The script refuses to write a file over
MAX_BYTES (2 MiB) so the wheel stays small; lower the counts if that ever happens.

Reproducibility: the arrays (and their raw-byte sha256, printed at the end) depend only
on the input file, the seed and the counts.  np.savez_compressed stamps every zip member
with the fixed date 1980-01-01, so re-running with the same zlib reproduces the file
byte for byte; another zlib build (e.g. zlib-ng) may compress differently and change the
file's sha256 and size, never the arrays.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "mnist.npz"
DEFAULT_OUT = REPO / "src" / "cbackprop" / "data" / "mnist_sample.npz"
SEED = 20240607
TRAIN_PER_CLASS = 1000
TEST_PER_CLASS = 200
N_CLASSES = 10
MAX_BYTES = 2 * 1024 * 1024


def draw(rng, labels, per_class):
    """Sorted indices: per_class distinct rows of each class 0..9, classes drawn in order."""
    chosen = []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            raise SystemExit(f"class {c} has only {idx.size} images, {per_class} requested")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                    help=f"book-split mnist.npz (default {DEFAULT_SOURCE})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output (default {DEFAULT_OUT})")
    ap.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    ap.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS)
    ap.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    args = ap.parse_args(argv)

    with np.load(args.source) as d:
        train_x, train_y = d["train_x"], d["train_y"]
        test_x, test_y = d["test_x"], d["test_y"]
    for name, a, cols in (("train_x", train_x, 784), ("test_x", test_x, 784)):
        if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != cols:
            raise SystemExit(f"{args.source}: {name} must be uint8 (n, 784), got {a.dtype} {a.shape}")

    rng = np.random.default_rng(args.seed)
    tr = draw(rng, train_y, args.train_per_class)
    te = draw(rng, test_y, args.test_per_class)
    arrays = {
        "train_x": np.ascontiguousarray(train_x[tr], dtype=np.uint8),
        "train_y": np.ascontiguousarray(train_y[tr], dtype=np.uint8),
        "test_x": np.ascontiguousarray(test_x[te], dtype=np.uint8),
        "test_y": np.ascontiguousarray(test_y[te], dtype=np.uint8),
    }

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    if len(data) > MAX_BYTES:
        raise SystemExit(f"sample would be {len(data):,} bytes > {MAX_BYTES:,}; lower the counts")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=args.out.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give it normal permissions
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise

    print(f"source  {args.source}")
    print(f"seed    {args.seed}")
    print(f"train   {arrays['train_x'].shape} per class {np.bincount(arrays['train_y'], minlength=10).tolist()}")
    print(f"test    {arrays['test_x'].shape} per class {np.bincount(arrays['test_y'], minlength=10).tolist()}")
    print(f"wrote   {args.out}  {len(data):,} bytes")
    print(f"sha256  {hashlib.sha256(data).hexdigest()}")
    for k, a in arrays.items():
        print(f"  {k:8s} raw-bytes sha256 {hashlib.sha256(a.tobytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
