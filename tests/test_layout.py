"""The house limits on the scripts: lines per file, characters per line, no `;` joins."""
import glob
import io
import os
import tokenize

import pytest

from conftest import ROOT

LINE_LIMITS = {"gaussian_gan.py": 210, "infer.py": 210, "mnist_mlp_gan.py": 250, "mnist_conv_gan.py": 250,
               "dcgan_celeba.py": 380}


@pytest.mark.parametrize("script", sorted(LINE_LIMITS))
def test_each_script_stays_within_its_line_limit(script):
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= LINE_LIMITS[script], f"{script}: {len(lines)} lines, limit {LINE_LIMITS[script]}"


def test_no_line_over_110_characters_and_no_semicolon_joins():
    files = [os.path.join(ROOT, name) for name in LINE_LIMITS]
    files += glob.glob(os.path.join(ROOT, "tests", "*.py")) + glob.glob(os.path.join(ROOT, "bench", "*.py"))
    for name in files:
        with open(name, encoding="utf-8") as f:
            source = f.read()
        for number, line in enumerate(source.splitlines(), 1):
            assert len(line) <= 110, f"{name}:{number} has {len(line)} characters"
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        joins = [token.start[0] for token in tokens if token.type == tokenize.OP and token.string == ";"]
        assert not joins, f"{name}: `;` on lines {joins}"
