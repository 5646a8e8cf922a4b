"""The house form: what `ruff format` writes, what `ruff check` passes, and each script's size."""

import glob
import io
import os
import subprocess
import sys
import tokenize

import pytest
from conftest import ROOT

# Formatted lines, comments included: soft limits, met by simplifying, never by packing.
# dcgan_celeba.py aims at 600; multi-GPU's agreed stop and per-process RNG states, and Windows'
# memory query, hold it at 645. gaussian_gan.py: D's logit and the NaN check in its loop cost 4.
LINE_LIMITS = {
    "gaussian_gan.py": 265,
    "infer.py": 220,
    "mnist_mlp_gan.py": 340,
    "mnist_conv_gan.py": 340,
    "dcgan_celeba.py": 645,
}
PYTHON_FILES = [os.path.join(ROOT, name) for name in LINE_LIMITS]
PYTHON_FILES += glob.glob(os.path.join(ROOT, "tests", "*.py"))
PYTHON_FILES += glob.glob(os.path.join(ROOT, "bench", "*.py"))
PYTHON_FILES += glob.glob(os.path.join(ROOT, "data", "*.py"))


def ruff(*args):
    """`python -m ruff ARGS .` from the repository root, with its ruff.toml."""
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.skip("ruff is not installed: pip install -r requirements-dev.txt")
    command = [sys.executable, "-m", "ruff", *args, "."]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_every_python_file_is_as_ruff_format_writes_it():
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_finds_nothing():
    result = ruff("check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", sorted(LINE_LIMITS))
def test_each_script_stays_within_its_line_limit(script):
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        lines = f.read().splitlines()
    limit = LINE_LIMITS[script]
    assert len(lines) <= limit, f"{script}: {len(lines)} lines, limit {limit}"


def test_no_line_over_100_characters_and_no_semicolon_joins():
    for name in PYTHON_FILES:
        with open(name, encoding="utf-8") as f:
            source = f.read()
        for number, line in enumerate(source.splitlines(), 1):
            assert len(line) <= 100, f"{name}:{number} has {len(line)} characters"
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        joins = [t.start[0] for t in tokens if t.type == tokenize.OP and t.string == ";"]
        assert not joins, f"{name}: `;` on lines {joins}"


@pytest.mark.parametrize("script", sorted(LINE_LIMITS))
def test_most_comments_sit_on_their_own_line_above_what_they_explain(script):
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = [t for t in tokens if t.type == tokenize.COMMENT]
    at_line_end = [t for t in comments if lines[t.start[0] - 1][: t.start[1]].strip()]
    assert len(at_line_end) * 4 <= len(comments), f"{script}: {len(at_line_end)} at a line's end"
