"""The bench scripts start and print their tables on a tiny setting (no timings are asserted)."""
import os
import subprocess
import sys

import torch

import mnist_mlp_gan
from conftest import ROOT


def run_bench(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_speed_prints_a_ratio_for_each_script_each_mnist_epoch_and_the_data_path():
    result = run_bench(os.path.join("bench", "speed.py"), "--quick", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    for name in ("MNIST data pass", "mnist_mlp_gan epoch", "mnist_conv_gan epoch", "mnist_mlp_gan step",
                 "mnist_conv_gan step", "dcgan_celeba step", "GFLOP/s"):
        assert name in result.stdout
    assert result.stdout.count("x\n") == 6  # six ratio rows


def test_quality_scores_real_and_generated_digits(tmp_path):
    torch.save(mnist_mlp_gan.Generator().state_dict(), tmp_path / "generator.pt")
    result = run_bench(os.path.join("bench", "quality.py"), "--quick", "--samples", "50", str(tmp_path / "generator.pt"))
    assert result.returncode == 0, result.stderr
    assert "accuracy on 500 held-out real digits" in result.stdout
    assert "real held-out digits (ceiling)" in result.stdout and "generator.pt" in result.stdout


def test_quality_scores_a_run_folder_per_epoch_and_a_dcgan_checkpoint(tmp_path):
    import dcgan_celeba
    from conftest import run_main
    result = run_main(dcgan_celeba, "--max-steps", 1, "--batch-size", 4, "--num-workers", 0, "--device", "cpu",
                      "--quiet", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_bench(os.path.join("bench", "quality.py"), "--quick", "--samples", "20", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "epoch 1 (64-image grid)" in result.stdout and "checkpoint_last.pt (20 samples)" in result.stdout


def test_quality_score_of_a_generator_does_not_depend_on_what_was_scored_before_it(tmp_path):
    torch.manual_seed(0)
    generator = mnist_mlp_gan.Generator()
    with torch.no_grad():  # large weights: images, and so the score, vary with the noise
        for parameter in generator.parameters():
            parameter.mul_(4)
    torch.save(generator.state_dict(), tmp_path / "generator.pt")
    path = str(tmp_path / "generator.pt")
    result = run_bench(os.path.join("bench", "quality.py"), "--quick", "--samples", "200", path, path)
    assert result.returncode == 0, result.stderr
    first, second = [line for line in result.stdout.splitlines() if "generator.pt (200 samples)" in line]
    assert first == second
