import contextlib
import io
import os
import types
import subprocess
import sys

import numpy as np
import torch
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, timeout=300, env=None):
    """Run one of the top-level scripts as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MPLBACKEND": "Agg", **(env or {})})


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
