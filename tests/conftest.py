import contextlib
import io
import os
import shutil
import tempfile
import types

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import dcgan_celeba
import infer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = (
    "gaussian_gan.py",
    "mnist_mlp_gan.py",
    "mnist_conv_gan.py",
    "dcgan_celeba.py",
    "infer.py",
)
# What a subprocess test prepends to its program: MNIST cannot be downloaded there either.
NO_DOWNLOAD = "import torchvision\ntorchvision.datasets.MNIST.mirrors = []\n"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """A copy of the repository's scripts and bundled digits, without data/celeba or a downloaded
    MNIST: what a test runs from, so it reads none of the data a user put in the repository."""
    folder = tmp_path_factory.mktemp("sandbox")
    (folder / "data").mkdir()
    shutil.copy(os.path.join(ROOT, "data", "mnist_sample.npz"), folder / "data")
    for script in SCRIPTS:
        shutil.copy(os.path.join(ROOT, script), folder)
    return folder


def isolate(monkeypatch, sandbox):
    """As on a machine without network or CelebA: MNIST cannot download, dcgan_celeba.py looks for
    data/celeba in the sandbox, and relative paths (data/, runs/) land there too."""
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [])
    monkeypatch.setattr(dcgan_celeba, "HERE", str(sandbox))
    monkeypatch.chdir(sandbox)


@pytest.fixture(autouse=True)
def offline_and_without_the_users_data(monkeypatch, sandbox):
    """Every test runs isolated; fixtures shared by several tests isolate themselves."""
    isolate(monkeypatch, sandbox)


def assert_one_line_error(result, *fragments):
    """Bad input: exit 2, one line on stderr starting 'error:', no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_image(path, min_size=16):
    assert os.path.isfile(path), f"{path} was not written"
    with Image.open(path) as image:
        image.load()
        assert min(image.size) >= min_size
        return image.size


@pytest.fixture
def mnist_sample():
    with np.load(os.path.join(ROOT, "data", "mnist_sample.npz")) as f:
        return f["images"], f["labels"]


# parameter counts written from the tutorials' layer lists, independently of our modules
def linear(n_in, n_out):
    return n_in * n_out + n_out


def conv(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


def batchnorm(c):
    return 2 * c


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def moved(before, model):
    """How many of the model's parameter tensors changed since `before`."""
    return sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def watch_each_half(g, d, g_optimizer, d_optimizer):
    """Records what each optimizer's step finds and leaves: G when D steps, D when G steps.

    Returns a check for after one train_step: D's half moved every D weight and reached no G
    weight (not even a gradient); G's half moved every G weight and no D weight."""
    g0, d0, seen = snapshot(g), snapshot(d), {}

    def spy(optimizer, name):
        step = optimizer.step

        def recorded_step(*args, **kwargs):
            seen[f"{name} before"] = (snapshot(g), snapshot(d), [p.grad for p in g.parameters()])
            result = step(*args, **kwargs)
            seen[f"{name} after"] = (snapshot(g), snapshot(d))
            return result

        optimizer.step = recorded_step

    spy(d_optimizer, "D")
    spy(g_optimizer, "G")

    def check():
        g_before_d, d_before_d, g_grads_at_d = seen["D before"]
        g_after_d, d_after_d = seen["D after"]
        g_after_g, d_after_g = seen["G after"]
        same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
        # D's half: D's backward reached no G weight, its step moved every D weight and no G one
        assert all(grad is None or not grad.any() for grad in g_grads_at_d)
        assert same(g_before_d, g0) and same(g_after_d, g0)
        assert not any(torch.equal(a, b) for a, b in zip(d0, d_after_d))
        # G's half: every G weight moved, and D stayed where its own step left it
        assert not any(torch.equal(a, b) for a, b in zip(g0, g_after_g))
        assert same(d_after_g, d_after_d) and same(snapshot(d), d_after_d)

    return check


def run_main(module, *args):
    """Call a script's main() in this process (no interpreter start-up): for fast error-path tests.

    Returns an object with returncode, stdout and stderr, like subprocess.run."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_bad_input(module, *args):
    """run_main for bad input: unless the test gives its own, `--max-steps 1` and an --out in a
    fresh temporary folder, so a check that was dropped fails in one step, not a whole run."""
    flags = [str(a) for a in args]
    if "--out" not in flags:
        flags += ["--out", tempfile.mkdtemp(prefix="bad_input_")]
    return run_main(module, *flags, "--max-steps", "1")


class NarrowGenerator(dcgan_celeba.Generator):
    """The script's G with a sixteenth of its channels: the same blocks, 64x64 out, a 0.1 MB
    checkpoint. For tests of the loop's bookkeeping (resume, Ctrl-C, NaN, files), where 12.6M
    weights are only time."""

    def __init__(self, tutorial=False):
        nn.Module.__init__(self)
        self.tutorial = tutorial
        self.gen = nn.Sequential(
            # 64 x 4 x 4
            self.create_upblock(dcgan_celeba.Z_DIM, 64, kernel_size=4, stride=1, padding=0),
            # 32 x 8 x 8
            self.create_upblock(64, 32, kernel_size=4, stride=2, padding=1),
            # 16 x 16 x 16
            self.create_upblock(32, 16, kernel_size=4, stride=2, padding=1),
            # 8 x 32 x 32
            self.create_upblock(16, 8, kernel_size=4, stride=2, padding=1),
            # 3 x 64 x 64
            self.create_upblock(8, 3, kernel_size=4, stride=2, padding=1, final_layer=True),
        )


@pytest.fixture
def narrow_g(monkeypatch):
    """dcgan_celeba.py trains, and infer.py draws, the narrow G for this test."""
    monkeypatch.setattr(dcgan_celeba, "Generator", NarrowGenerator)
    monkeypatch.setattr(infer, "Generator", NarrowGenerator)


@pytest.fixture(scope="session")
def dcgan_run(tmp_path_factory, sandbox):
    """One real dcgan_celeba.py run, the full-size G for 2 steps on the digits, into a folder
    holding a grid left by an earlier, longer run; shared by the tests that read what it leaves:
    (its folder, its output)."""
    out = tmp_path_factory.mktemp("dcgan_run")
    Image.new("RGB", (530, 530)).save(out / "fake_epoch_002.png")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, sandbox)
        flags = ["--max-steps", 2, "--batch-size", 4, "--num-workers", 0, "--device", "cpu"]
        result = run_main(dcgan_celeba, *flags, "--quiet", "--save-every", 1, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result
