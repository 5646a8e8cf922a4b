import os

import numpy as np
from conftest import ROOT


def test_mnist_sample_is_5000_balanced_uint8_digits(mnist_sample):
    images, labels = mnist_sample
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    # real digits: dark background, bright strokes, and no two classes with the same mean image
    assert images[:, 0, 0].max() == 0 and images.max() == 255
    means = np.stack([images[labels == k].mean(0) for k in range(10)])
    assert (
        np.abs(means[:, None] - means[None]).sum(axis=(2, 3))[~np.eye(10, dtype=bool)].min() > 1000
    )


def test_demo_faces_are_100_grayscale_uint8_images():
    with np.load(os.path.join(ROOT, "data", "faces_sample.npz")) as f:
        faces = f["images"]
    assert faces.shape == (100, 25, 25) and faces.dtype == np.uint8
    # real pictures, not a constant fill
    assert faces.std() > 20
