import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan_celeba as dc
from conftest import (ROOT, assert_image, assert_one_line_error, batchnorm, conv, moved, n_params, run_main,
                      run_script, snapshot)

SMALL = ["--batch-size", 4, "--num-workers", 0, "--device", "cpu", "--quiet"]


@pytest.fixture
def image_folder(tmp_path):
    """Eight real face pictures as JPEG/PNG files, nested as CelebA's img_align_celeba/."""
    with np.load(os.path.join(ROOT, "data", "faces_sample.npz")) as f:
        faces = f["images"][:8]
    folder = tmp_path / "faces" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i, face in enumerate(faces):
        name = f"{i:06d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(face).convert("RGB").resize((70, 80)).save(folder / name)
    return tmp_path / "faces"


def test_models_have_the_tutorials_shapes_and_parameter_counts_less_the_two_batchnorms():
    g, d = dc.Generator(), dc.Discriminator()
    fake = g(torch.randn(3, 100, 1, 1))
    assert fake.shape == (3, 3, 64, 64) and fake.abs().max() <= 1
    assert d(fake).shape == (3, 1)
    # the tutorial's layers, without BatchNorm(3) before G's Tanh and BatchNorm(32) on D's input block
    assert n_params(g) == (conv(100, 1024, 4, False) + batchnorm(1024) + conv(1024, 512, 4, False) +
                           batchnorm(512) + conv(512, 256, 4, False) + batchnorm(256) +
                           conv(256, 128, 4, False) + batchnorm(128) + conv(128, 3, 4, False))
    assert n_params(d) == (conv(3, 32, 4) + conv(32, 64, 4) + batchnorm(64) + conv(64, 128, 4) +
                           batchnorm(128) + conv(128, 128, 4) + batchnorm(128) + conv(128, 1, 4))
    # padded 4x4 kernels at stride 2 halve the image in each block: 64 -> 32 -> 16 -> 8 -> 4 -> 1
    x, sizes = fake, []
    for block in d.disc:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [32, 16, 8, 4, 1]


def test_image_folder_at_any_depth_loads_as_64px_in_minus_one_one(image_folder):
    dataset = dc.make_dataset(dc.parse_args(["--data-root", str(image_folder)]), is_main=False)
    assert len(dataset) == 8
    image, _ = dataset[0]
    assert image.shape == (3, 64, 64) and image.min() >= -1 and image.max() <= 1


def test_without_celeba_it_trains_on_the_bundled_digits_as_3x64x64_in_minus_one_one():
    digits = dc.make_dataset(dc.parse_args([]), is_main=False)
    image, label = digits[0]
    assert len(digits) == 5000 and image.shape == (3, 64, 64) and 0 <= label <= 9
    assert image.min() == -1 and 0.9 < image.max() <= 1


def test_steps_are_finite_repeatable_and_each_half_moves_only_its_model():
    def run():
        torch.manual_seed(0)
        g, d = dc.Generator().apply(dc.weights_init), dc.Discriminator().apply(dc.weights_init)
        digits = dc.make_dataset(dc.parse_args([]), is_main=False)
        real = torch.stack([digits[i][0] for i in range(4)])
        g0, d0 = snapshot(g), snapshot(d)
        frozen_g = torch.optim.SGD(g.parameters(), lr=0.0)
        losses = dc.train_step(g, d, frozen_g, torch.optim.Adam(d.parameters()), real)
        assert moved(g0, g) == 0 and moved(d0, d) == len(d0)
        d1 = snapshot(d)
        frozen_d = torch.optim.SGD(d.parameters(), lr=0.0)
        losses += dc.train_step(g, d, torch.optim.Adam(g.parameters()), frozen_d, real, label_smoothing=True)
        assert moved(d1, d) == 0 and moved(g0, g) == len(g0)
        return [x.item() for x in losses]
    first = run()
    assert np.isfinite(first).all() and first == run()


def test_cli_writes_grids_plots_and_a_loadable_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    # left by an earlier, longer run
    Image.new("RGB", (530, 530)).save(tmp_path / "run" / "fake_epoch_002.png")
    result = run_script("dcgan_celeba.py", "--max-steps", 2, *SMALL, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "training on 5,000 MNIST digits" in result.stdout  # no CelebA: says so, trains on the digits
    assert assert_image(tmp_path / "run" / "fake_epoch_001.png") == (8 * 66 + 2,) * 2
    for name in ("losses.png", "real_vs_fake.png", "progress.gif"):
        assert_image(tmp_path / "run" / name)
    with Image.open(tmp_path / "run" / "progress.gif") as gif:
        assert gif.n_frames == 1  # this run's one epoch, not the stale grid
    checkpoint = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert {"g_model_state_dict", "d_model_state_dict", "g_optimizer_state_dict", "d_optimizer_state_dict",
            "epoch", "args"} <= set(checkpoint)
    assert checkpoint["epoch"] == 1 and len(checkpoint["losses"]["d"]) == 2
    dc.Generator().load_state_dict(checkpoint["g_model_state_dict"])


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, image_folder):
    common = [*SMALL, "--data-root", image_folder, "--seed", 3, "--save-every", 1]
    straight = run_main(dc, "--epochs", 2, *common, "--out", tmp_path / "straight")
    first = run_main(dc, "--epochs", 1, *common, "--out", tmp_path / "split")
    assert straight.returncode == 0 and first.returncode == 0, straight.stderr + first.stderr
    assert (tmp_path / "split" / "checkpoint_epoch_001.pt").exists()
    second = run_main(dc, "--epochs", 2, *common, "--out", tmp_path / "split",
                        "--resume", tmp_path / "split" / "checkpoint_last.pt")
    assert second.returncode == 0, second.stderr
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint_last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key in ("g_model_state_dict", "d_model_state_dict"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key])
    assert a["losses"] == b["losses"]
    with Image.open(tmp_path / "split" / "progress.gif") as gif:
        assert gif.n_frames == 2  # the resumed run's GIF starts from the first run's grid
    again = run_main(dc, "--epochs", 2, *common, "--out", tmp_path / "split",
                     "--resume", tmp_path / "split" / "checkpoint_last.pt")
    assert again.returncode == 0 and "already has 2 epochs" in again.stdout


def test_given_data_root_that_is_missing_empty_or_a_file_exits_2(tmp_path):
    assert_one_line_error(run_main(dc, "--data-root", tmp_path / "nope", *SMALL), "does not exist")
    (tmp_path / "empty" / "img_align_celeba").mkdir(parents=True)
    assert_one_line_error(run_main(dc, "--data-root", tmp_path / "empty", *SMALL), "holds no images")
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert_one_line_error(run_main(dc, "--data-root", tmp_path / "file.jpg", *SMALL),
                          "is a file, not a folder")


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_image_names_the_file(tmp_path, image_folder, workers):
    bad = image_folder / "img_align_celeba" / "000000.png"
    bad.write_bytes(b"not a picture")
    result = run_main(dc, "--data-root", image_folder, "--max-steps", 2, *SMALL, "--num-workers", workers,
                      "--out", tmp_path / "o")
    assert_one_line_error(result, "unreadable image", "000000.png")


def test_bad_checkpoints_and_flags_exit_2_and_keep_earlier_files(tmp_path):
    out = tmp_path / "run"
    assert run_main(dc, "--max-steps", 1, *SMALL, "--out", out).returncode == 0
    good = (out / "checkpoint_last.pt").read_bytes()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good[: len(good) // 2])
    assert_one_line_error(run_main(dc, "--resume", corrupt, *SMALL, "--out", out), "cannot be read")
    assert_one_line_error(run_main(dc, "--resume", tmp_path / "none.pt", *SMALL), "does not exist")
    assert_one_line_error(run_main(dc, "--resume", tmp_path, *SMALL), "is a folder, not a checkpoint file")
    other = torch.load(out / "checkpoint_last.pt", weights_only=True)
    other["g_model_state_dict"] = {"gen.0.0.weight": torch.zeros(3, 3)}
    torch.save(other, tmp_path / "mismatch.pt")
    assert_one_line_error(run_main(dc, "--resume", tmp_path / "mismatch.pt", *SMALL), "does not fit")
    assert (out / "checkpoint_last.pt").read_bytes() == good
    assert_one_line_error(run_main(dc, "--epochs", 0), "--epochs")
    assert_one_line_error(run_main(dc, "--lr", "inf"), "--lr", "positive")
    assert_one_line_error(run_main(dc, "--seed", 2**32), "--seed", "0 to 2**32 - 1")
    assert_one_line_error(run_main(dc, "--num-workers", -1), "--num-workers", "0 to 64")
    assert_one_line_error(run_main(dc, "--save-every", 0), "--save-every")


def test_unwritable_out_exits_2_before_loading_data(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert_one_line_error(run_main(dc, "--out", a_file, *SMALL), "--out", "is a file, not a folder")
    assert_one_line_error(run_main(dc, "--out", a_file / "run", *SMALL), "--out", "cannot be written")
    assert_one_line_error(run_main(dc, "--out", "/proc/no_such_run", *SMALL), "--out", "cannot be written")
    assert a_file.read_text() == "keep me"
    if not torch.cuda.is_available():
        assert_one_line_error(run_main(dc, "--device", "cuda"), "CUDA is not available")


def torchrun(*args):
    """dcgan_celeba.py as two CPU processes (gloo), the way torchrun starts it on a machine without GPUs."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               os.path.join(ROOT, "dcgan_celeba.py"), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})


def test_torchrun_two_cpu_processes_rank_0_alone_writes_and_resume_works(tmp_path):
    out = tmp_path / "ddp"
    result = torchrun("--max-steps", 2, *SMALL, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("checkpoints, plots and per-epoch grids") == 1  # only rank 0 reports
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["g_model_state_dict"])
    assert not any(name.endswith(".tmp") for name in os.listdir(out))
    resumed = torchrun("--epochs", 2, "--max-steps", 1, "--amp", *SMALL, "--out", out,
                       "--resume", out / "checkpoint_last.pt")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(out / "checkpoint_last.pt", weights_only=True)["epoch"] == 2
    assert resumed.stdout.count("device: cpu") == 1  # said once, not once a process
    assert "deprecated" not in resumed.stderr  # DDP's broadcast_buffers warning, on torch 2.14 and later


def test_ctrl_c_writes_a_checkpoint_and_plots_then_exits_130(tmp_path, image_folder, monkeypatch):
    real_step, calls = dc.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)
    monkeypatch.setattr(dc, "train_step", interrupted_step)
    result = run_main(dc, "--data-root", image_folder, "--epochs", 3, *SMALL, "--out", tmp_path)
    assert result.returncode == 130, result.stderr
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["epoch"] == 1
    assert_image(tmp_path / "losses.png")
    assert_image(tmp_path / "fake_epoch_001.png")


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, image_folder,
                                                                          monkeypatch):
    real_step, calls = dc.train_step, []

    def step_that_diverges(*args, **kwargs):
        calls.append(1)
        d_loss, g_loss = real_step(*args, **kwargs)
        return (d_loss * float("nan"), g_loss) if len(calls) > 2 else (d_loss, g_loss)
    monkeypatch.setattr(dc, "train_step", step_that_diverges)
    result = run_main(dc, "--data-root", image_folder, "--epochs", 3, *SMALL, "--out", tmp_path)
    assert_one_line_error(result, "NaN", "epoch 2")
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["epoch"] == 1


def test_each_epoch_reads_the_loader_once_so_the_progress_bar_starts_no_extra_workers(tmp_path, image_folder,
                                                                                       monkeypatch):
    starts, real_iter = [], torch.utils.data.DataLoader.__iter__

    def counting_iter(loader):  # tqdm.auto's asyncio side calls iter() on what it wraps (tqdm#1598)
        starts.append(1)
        return real_iter(loader)
    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", counting_iter)
    result = run_main(dc, "--epochs", 2, "--data-root", image_folder, *SMALL, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(starts) == 2  # one per epoch: a second would shift the shuffle and, with workers, fork more


def test_a_seeded_bf16_step_on_the_cpu_is_finite_repeatable_and_moves_both_models():
    def run():
        torch.manual_seed(0)
        g, d = dc.Generator().apply(dc.weights_init), dc.Discriminator().apply(dc.weights_init)
        real = torch.stack([dc.make_dataset(dc.parse_args([]), is_main=False)[i][0] for i in range(4)])
        g0, d0 = snapshot(g), snapshot(d)
        losses = dc.train_step(g, d, torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters()), real,
                               amp_dtype=torch.bfloat16)
        assert moved(g0, g) == len(g0) and moved(d0, d) == len(d0)
        assert all(p.dtype == torch.float32 for p in g.parameters())  # autocast: fp32 weights, bf16 math
        return [x.item() for x in losses]
    first = run()
    assert np.isfinite(first).all() and first == run()


@pytest.mark.parametrize("fast_bf16, flags, dtype, said", [
    (True, [], torch.bfloat16, "device: cpu, torch.bfloat16 autocast"),
    (True, ["--no-amp"], None, "device: cpu, fp32"),
    (False, ["--amp"], None, "device: cpu, fp32 (--amp: no fast bf16 on this device)"),
    (False, [], None, "device: cpu, fp32"),
])
def test_amp_is_bf16_on_a_cpu_with_bf16_instructions_and_fp32_without(fast_bf16, flags, dtype, said, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(dc.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: fast_bf16)
    real_step, dtypes = dc.train_step, []

    def recording_step(*args, **kwargs):
        dtypes.append(args[7])  # train() passes (..., real, label_smoothing, scaler, amp_dtype)
        return real_step(*args, **kwargs)
    monkeypatch.setattr(dc, "train_step", recording_step)
    result = run_main(dc, "--max-steps", 1, *SMALL, *flags, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert said in result.stdout.splitlines()
    assert dtypes == [dtype]


def test_without_the_bundled_sample_it_downloads_mnist_or_says_in_one_line_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "HERE", str(tmp_path))  # this file alone, as pasted into a notebook: no data/
    raw = tmp_path / "data" / "MNIST" / "raw"  # what a download leaves: MNIST's IDX files
    raw.mkdir(parents=True)
    digits = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    for split in ("train", "t10k"):
        header = bytes([0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 28, 0, 0, 0, 28])  # uint8, 3 dims: 6 x 28 x 28
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + digits.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 6]) + bytes(range(6)))
    dataset = dc.make_dataset(dc.parse_args([]), is_main=False)
    image, label = dataset[5]
    assert len(dataset) == 6 and image.shape == (3, 64, 64) and label == 5 and image.abs().max() <= 1
    for name in os.listdir(raw):
        os.remove(raw / name)

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.setattr(dc.torchvision.datasets, "MNIST", offline)
    result = run_main(dc, *SMALL, "--out", tmp_path / "out")
    assert_one_line_error(result, "no bundled digits, no MNIST download", "data/celeba")
