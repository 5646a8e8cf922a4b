"""Do the MNIST GANs draw digits? Score generated samples with a classifier trained on real ones.

    python bench/quality.py runs/mnist_mlp_gan/generator.pt runs/mnist_conv_gan/generator.pt
    python bench/quality.py --quick runs/mnist_mlp_gan/generator.pt

Trains a small CNN on 4,000 digits of the bundled sample (500 held out; accuracy reported), then
for each generator.pt (from either MNIST script) draws samples and reports: the share the classifier
labels with >= 0.9 confidence, the count per class, and the entropy of the label histogram
(log2(10) = 3.32 bits when all ten classes are equally common; a collapsed GAN scores far lower).
The held-out real digits are scored the same way as the ceiling.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import mnist_conv_gan  # noqa: E402
import mnist_mlp_gan  # noqa: E402


def classifier():
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def train_classifier(images, labels, epochs):
    model = classifier()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 64):
            idx = order[start:start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
    return model.eval()


def load_generator(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    generator = mnist_mlp_gan.Generator() if "fc1.weight" in state else mnist_conv_gan.Generator(100, 1)
    generator.load_state_dict(state)
    return generator.eval()


def score(model, images):
    """images (N, 1, 28, 28) in [-1, 1] -> (confident share, counts per class, entropy in bits)."""
    with torch.no_grad():
        probabilities = F.softmax(model(images), dim=1)
    confidence, label = probabilities.max(dim=1)
    counts = torch.bincount(label, minlength=10)
    p = counts.float() / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log2()).sum().item()
    return (confidence >= 0.9).float().mean().item(), counts.tolist(), entropy


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("generators", nargs="*", help="generator.pt files written by the MNIST scripts")
    p.add_argument("--samples", type=int, default=1000, help="generated digits scored per generator")
    p.add_argument("--quick", action="store_true", help="1 classifier epoch instead of 5 (a smoke run)")
    args = p.parse_args()
    torch.manual_seed(0)
    with np.load(os.path.join(ROOT, "data", "mnist_sample.npz")) as f:
        images = torch.from_numpy(f["images"]).unsqueeze(1).float().div(127.5).sub(1.0)
        labels = torch.from_numpy(f["labels"]).long()
    order = torch.randperm(len(images))  # the file is sorted by class: shuffle before holding out
    train, held_out = order[:4500], order[4500:]
    model = train_classifier(images[train], labels[train], 1 if args.quick else 5)
    with torch.no_grad():
        accuracy = (model(images[held_out]).argmax(1) == labels[held_out]).float().mean().item()
    print(f"classifier: {accuracy:.1%} accuracy on {len(held_out)} held-out real digits")
    print(f"{'source':<44} {'confident':>9} {'entropy':>8}  counts per class 0-9")
    rows = [("real held-out digits (ceiling)", images[held_out])]
    for path in args.generators:
        with torch.no_grad():
            rows.append((path, load_generator(path)(torch.randn(args.samples, 100)).view(-1, 1, 28, 28)))
    for name, digits in rows:
        confident, counts, entropy = score(model, digits)
        print(f"{name:<44} {confident:>9.1%} {entropy:>8.2f}  {counts}")


if __name__ == "__main__":
    main()
