"""Both MNIST scripts: models, steps, data path and CLI. Parametrised where they share behaviour."""

import math
import os
import re

import pytest
import torch
from conftest import (
    assert_image,
    assert_one_line_error,
    batchnorm,
    conv,
    linear,
    moved,
    n_params,
    run_bad_input,
    run_main,
    snapshot,
    watch_each_half,
)
from PIL import Image

import dcgan_celeba
import mnist_conv_gan
import mnist_mlp_gan

TUTORIAL_CONV_GENERATOR = """Generator(
  (gen): Sequential(
    (0): ConvTranspose2d(100, 256, kernel_size=(3, 3), stride=(2, 2))
    (1): BatchNorm2d(256, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (2): ReLU(inplace=True)
    (3): ConvTranspose2d(256, 128, kernel_size=(4, 4), stride=(1, 1))
    (4): BatchNorm2d(128, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (5): ReLU(inplace=True)
    (6): ConvTranspose2d(128, 64, kernel_size=(3, 3), stride=(2, 2))
    (7): BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (8): ReLU(inplace=True)
    (9): ConvTranspose2d(64, 1, kernel_size=(4, 4), stride=(2, 2))
    (10): Tanh()
  )
)"""
# the tutorial's printed discriminator, whose last line the page cut off, restored
TUTORIAL_CONV_DISCRIMINATOR = """Discriminator(
  (disc): Sequential(
    (0): Conv2d(1, 16, kernel_size=(4, 4), stride=(2, 2))
    (1): BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (2): LeakyReLU(negative_slope=0.2, inplace=True)
    (3): Conv2d(16, 32, kernel_size=(4, 4), stride=(2, 2))
    (4): BatchNorm2d(32, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (5): LeakyReLU(negative_slope=0.2, inplace=True)
    (6): Conv2d(32, 1, kernel_size=(4, 4), stride=(2, 2))
  )
)"""


def models(script):
    if script is mnist_mlp_gan:
        return mnist_mlp_gan.Generator(), mnist_mlp_gan.Discriminator()
    return mnist_conv_gan.Generator(100, 1), mnist_conv_gan.Discriminator(1)


def test_conv_modules_print_as_the_tutorial():
    # newer torch adds `bias=True` to BatchNorm's repr; everything else must match
    assert (
        str(mnist_conv_gan.Generator(100, 1)).replace(" bias=True,", "") == TUTORIAL_CONV_GENERATOR
    )
    assert (
        str(mnist_conv_gan.Discriminator(1)).replace(" bias=True,", "")
        == TUTORIAL_CONV_DISCRIMINATOR
    )


def test_parameter_counts_equal_the_tutorials_architectures():
    g, d = models(mnist_mlp_gan)
    assert n_params(g) == linear(100, 256) + linear(256, 512) + linear(512, 1024) + linear(
        1024, 784
    )
    assert n_params(d) == linear(784, 1024) + linear(1024, 512) + linear(512, 256) + linear(256, 1)
    g, d = models(mnist_conv_gan)
    assert n_params(g) == (
        conv(100, 256, 3)
        + batchnorm(256)
        + conv(256, 128, 4)
        + batchnorm(128)
        + conv(128, 64, 3)
        + batchnorm(64)
        + conv(64, 1, 4)
    )
    assert n_params(d) == conv(1, 16, 4) + batchnorm(16) + conv(16, 32, 4) + batchnorm(32) + conv(
        32, 1, 4
    )


def test_mlp_shapes_and_ranges():
    g, d = models(mnist_mlp_gan)
    fake = g(torch.randn(5, 100))
    assert fake.shape == (5, 784) and fake.abs().max() <= 1
    score = d(fake)
    assert score.shape == (5, 1) and ((score > 0) & (score < 1)).all()


def test_conv_shapes_and_ranges():
    g, d = models(mnist_conv_gan)
    fake = g(torch.randn(5, 100))
    assert fake.shape == (5, 1, 28, 28) and fake.abs().max() <= 1
    # logits: any real number
    assert d(fake).shape == (5, 1)


def test_mlp_dropout_is_off_in_eval_mode():
    d = mnist_mlp_gan.Discriminator().eval()
    x = torch.randn(4, 784)
    assert torch.equal(d(x), d(x))


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_batches_are_normalised_to_minus_one_one(script, mnist_sample):
    images = torch.from_numpy(mnist_sample[0][:300])
    batches = list(script.batches(images, 128, "cpu"))
    assert all(b.dtype == torch.float32 and b.min() == -1 and b.max() == 1 for b in batches)
    sizes = [len(b) for b in batches]
    # MLP drops the short last batch like the tutorial; the conv tutorial's DataLoader keeps it
    assert sizes == ([128, 128] if script is mnist_mlp_gan else [128, 128, 44])


def steps_on_sample(script, mnist_sample, seed=0, n=3):
    torch.manual_seed(seed)
    g, d = models(script)
    g_opt, d_opt = torch.optim.Adam(g.parameters(), 2e-4), torch.optim.Adam(d.parameters(), 2e-4)
    images = torch.from_numpy(mnist_sample[0])
    losses = []
    for real, _ in zip(script.batches(images, 64, "cpu"), range(n)):
        losses.append([x.item() for x in script.train_step(g, d, g_opt, d_opt, real)])
    return losses


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_steps_on_real_digits_are_finite_and_repeatable(script, mnist_sample):
    first = steps_on_sample(script, mnist_sample)
    assert torch.isfinite(torch.tensor(first)).all()
    assert first == steps_on_sample(script, mnist_sample)


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_d_step_changes_only_d_and_g_step_only_g(script, mnist_sample):
    torch.manual_seed(0)
    g, d = models(script)
    real = next(script.batches(torch.from_numpy(mnist_sample[0]), 32, "cpu"))
    g_opt, d_opt = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    check_each_half = watch_each_half(g, d, g_opt, d_opt)
    script.train_step(g, d, g_opt, d_opt, real)
    check_each_half()


def test_mlp_step_judges_real_and_fake_as_one_batch_and_gives_d_its_gradients_back(mnist_sample):
    import copy

    torch.manual_seed(0)
    g, d = models(mnist_mlp_gan)
    # dropout off, so D's scores do not depend on how the batch is split
    d.eval()
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    real = next(mnist_mlp_gan.batches(torch.from_numpy(mnist_sample[0]), 16, "cpu"))
    torch.manual_seed(1)
    d_loss, g_loss = mnist_mlp_gan.train_step(
        g, d, torch.optim.SGD(g.parameters(), lr=0.0), torch.optim.SGD(d.parameters(), lr=0.0), real
    )
    torch.manual_seed(1)
    fake = g0(torch.randn(16, 100))
    bce = torch.nn.functional.binary_cross_entropy
    assert torch.allclose(
        d_loss, bce(d0(real), torch.ones(16, 1)) + bce(d0(fake), torch.zeros(16, 1))
    )
    assert torch.allclose(g_loss, bce(d0(fake), torch.ones(16, 1)))
    # D was frozen only for G's backward
    assert all(p.requires_grad for p in d.parameters())
    # G's gradient is the one an unfrozen D gives
    bce(d0(fake), torch.ones(16, 1)).backward()
    assert all(torch.allclose(p.grad, q.grad) for p, q in zip(g.parameters(), g0.parameters()))


def test_mlp_bf16_step_is_finite_repeatable_and_moves_both_models(mnist_sample):
    def run():
        torch.manual_seed(0)
        g, d = models(mnist_mlp_gan)
        real = next(mnist_mlp_gan.batches(torch.from_numpy(mnist_sample[0]), 32, "cpu"))
        g0, d0 = snapshot(g), snapshot(d)
        g_opt, d_opt = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
        losses = mnist_mlp_gan.train_step(g, d, g_opt, d_opt, real, amp_dtype=torch.bfloat16)
        assert moved(g0, g) == len(g0) and moved(d0, d) == len(d0)
        # the losses stay in fp32
        assert all(loss.dtype == torch.float32 for loss in losses)
        return [loss.item() for loss in losses]

    first = run()
    assert all(map(math.isfinite, first)) and first == run()


@pytest.mark.parametrize(
    "script, default, tutorial",
    [
        (
            mnist_mlp_gan,
            "training 240 epochs, 9,360 batches of 128",
            "training 120 epochs, 4,680 batches of 128",
        ),
        (
            mnist_conv_gan,
            "training 60 epochs of 64-image batches",
            "training 1200 epochs of 512-image batches",
        ),
    ],
)
def test_defaults_are_the_measured_recipe_and_tutorial_recipe_is_the_tutorials(
    script, default, tutorial, tmp_path, monkeypatch
):
    lrs = []
    monkeypatch.setattr(
        script, "train", lambda args, *rest: lrs.append(args.lr) or (None, [], [], False)
    )
    for flags, said, lr in (
        ([], default, 8e-4 if script is mnist_mlp_gan else 4e-4),
        (["--tutorial-recipe"], tutorial, 2e-4),
    ):
        result = run_main(
            script, *flags, "--data-root", tmp_path / "mnist", "--out", tmp_path, "--device", "cpu"
        )
        assert result.returncode == 0 and said in result.stdout, result.stdout + result.stderr
        assert lrs[-1] == lr


def test_conv_d_loss_on_real_digits_falls_in_first_steps(mnist_sample):
    torch.manual_seed(0)
    g, d = models(mnist_conv_gan)
    g.apply(mnist_conv_gan.weights_init)
    d.apply(mnist_conv_gan.weights_init)
    g_opt = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    real = next(mnist_conv_gan.batches(torch.from_numpy(mnist_sample[0]), 128, "cpu"))

    def real_loss():
        with torch.no_grad():
            logits = d(real)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.ones_like(logits)
        ).item()

    before = real_loss()
    for _ in range(5):
        mnist_conv_gan.train_step(g, d, g_opt, d_opt, real)
    assert real_loss() < before


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_cli_smoke_run_writes_every_output(script, tmp_path):
    out = tmp_path / "out"
    result = run_main(
        script,
        "--max-steps",
        2,
        "--batch-size",
        32,
        "--data-root",
        tmp_path / "mnist",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    # offline: one line says why and that it trains on the bundled real digits
    assert (
        "MNIST download failed" in result.stdout and "bundled 5,000-digit sample" in result.stdout
    )
    # 8x8 grid of 28px + padding
    assert assert_image(out / "samples_epoch_001.png") == (8 * 30 + 2,) * 2
    assert_image(out / "losses.png")
    with Image.open(out / "progress.gif") as gif:
        assert gif.n_frames >= 1
    assert (out / "loss.txt").read_text().startswith("[1/")
    state = torch.load(out / "generator.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_the_progress_bar_shows_d_and_g_loss(script, tmp_path):
    flags = ["--max-steps", 50, "--batch-size", 8, "--device", "cpu", "--out", tmp_path / "out"]
    result = run_main(script, *flags, "--data-root", tmp_path / "mnist")
    assert result.returncode == 0, result.stderr
    assert re.search(r"\[.*loss_d=\d\.\d+, loss_g=\d\.\d+\]", result.stderr)


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_progress_gif_keeps_at_most_51_frames_and_ends_on_the_last_epoch(script, tmp_path):
    paths = []
    # 120 one-pixel "grids", each its own gray level
    for epoch in range(1, 121):
        paths.append(str(tmp_path / f"samples_epoch_{epoch:03d}.png"))
        Image.new("L", (1, 1), epoch).save(paths[-1])
    script.save_plots([[1.0, 0.5], [0.5, 1.0]], paths, str(tmp_path))
    with Image.open(tmp_path / "progress.gif") as gif:
        # epochs 1, 4, ..., 118, then 120
        assert gif.n_frames == 41
        gif.seek(gif.n_frames - 1)
        assert gif.convert("L").getpixel((0, 0)) == 120
    assert_image(tmp_path / "losses.png")


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_bad_flags_exit_2_with_one_line(script):
    assert_one_line_error(run_bad_input(script, "--batch-size", 0), "--batch-size")
    assert_one_line_error(run_bad_input(script, "--epochs", "1e3"), "--epochs", "invalid int value")
    assert_one_line_error(run_bad_input(script, "--lr", "nan"), "--lr", "must be positive")
    assert_one_line_error(run_bad_input(script, "--lr", "inf"), "--lr", "must be positive")
    assert_one_line_error(run_bad_input(script, "--seed", -1), "--seed", "0 to 2**32 - 1")
    assert_one_line_error(run_bad_input(script, "--seed", 2**32), "--seed")
    assert_one_line_error(run_bad_input(script, "--lr", "1e8"), "--lr", "must be at most 1")
    if not torch.cuda.is_available():
        assert_one_line_error(run_bad_input(script, "--device", "cuda"), "CUDA is not available")
    assert run_main(script, "--help").returncode == 0


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_bad_paths_exit_2_before_training_and_name_what_the_path_is(script, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert_one_line_error(
        run_bad_input(script, "--out", a_file), "--out", "cannot be written (File exists)"
    )
    assert_one_line_error(
        run_bad_input(script, "--out", a_file / "run"), "--out", "cannot be written"
    )
    assert_one_line_error(
        run_bad_input(script, "--out", "/proc/no_such_run"), "--out", "cannot be written"
    )
    assert_one_line_error(
        run_bad_input(script, "--data-root", a_file, "--out", tmp_path / "o"),
        "--data-root",
        "is a file, not a folder",
    )
    assert a_file.read_text() == "keep me" and not (tmp_path / "o" / "loss.txt").exists()


def test_mlp_batch_larger_than_the_data_is_an_error_not_a_silent_no_op(tmp_path):
    result = run_bad_input(
        mnist_mlp_gan, "--batch-size", 6000, "--data-root", tmp_path / "mnist", "--out", tmp_path
    )
    assert_one_line_error(result, "--batch-size 6000 is more than the 5000 images")


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_ctrl_c_keeps_generator_and_plots_then_exits_130(script, tmp_path, monkeypatch):
    real_step, calls = script.train_step, []

    def interrupted_step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(script, "train_step", interrupted_step)
    result = run_main(
        script,
        "--batch-size",
        16,
        "--epochs",
        2,
        "--device",
        "cpu",
        "--quiet",
        "--data-root",
        tmp_path / "mnist",
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 130, result.stderr
    assert (tmp_path / "out" / "generator.pt").exists()
    assert_image(tmp_path / "out" / "losses.png")


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
@pytest.mark.parametrize("damage", ["empty", "cut short"])
def test_a_damaged_mnist_file_is_named_in_one_line_with_how_to_fix_it(script, damage, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # 60,000 x 28 x 28 uint8
    header = bytes([0, 0, 8, 3, 0, 0, 0xEA, 0x60, 0, 0, 0, 28, 0, 0, 0, 28])
    (raw / "train-images-idx3-ubyte").write_bytes(
        b"" if damage == "empty" else header + bytes(1000)
    )
    result = run_bad_input(
        script, "--data-root", tmp_path, "--out", tmp_path / "out", "--device", "cpu"
    )
    assert_one_line_error(
        result, str(raw / "train-images-idx3-ubyte"), "delete it to download it again"
    )


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_a_run_that_stops_on_nan_leaves_the_earlier_runs_files_alone(script, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "loss.txt").write_text("[1/1]: an earlier run\n")
    real_step = script.train_step

    def diverging_step(*args):
        d_loss, g_loss = real_step(*args)
        return d_loss * float("nan"), g_loss

    monkeypatch.setattr(script, "train_step", diverging_step)
    result = run_main(
        script,
        "--max-steps",
        2,
        "--batch-size",
        16,
        "--device",
        "cpu",
        "--quiet",
        "--data-root",
        tmp_path / "mnist",
        "--out",
        out,
    )
    # no generator.pt of this run to name
    assert_one_line_error(result, "NaN/inf in epoch 1", "lower --lr)")
    assert (out / "loss.txt").read_text() == "[1/1]: an earlier run\n"
    assert sorted(p.name for p in out.iterdir()) == ["loss.txt"]


@pytest.mark.skipif(
    not dcgan_celeba.cpu_has_fast_bf16(), reason="this CPU has no bf16 instructions: fp32 here"
)
def test_on_a_cpu_with_bf16_instructions_the_mlps_default_run_multiplies_in_bf16(
    tmp_path, monkeypatch
):
    dtypes, build_gan = set(), mnist_mlp_gan.build_gan

    def build_gan_that_records_each_layers_dtype(*args):
        gan = build_gan(*args)
        for module in [*gan.generator.modules(), *gan.discriminator.modules()]:
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda module, x, out: dtypes.add(out.dtype))
        return gan

    monkeypatch.setattr(mnist_mlp_gan, "build_gan", build_gan_that_records_each_layers_dtype)
    flags = ["--max-steps", 1, "--batch-size", 32, "--device", "cpu", "--quiet"]
    result = run_main(mnist_mlp_gan, *flags, "--data-root", tmp_path / "m", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert dtypes == {torch.bfloat16}


def test_mlp_says_when_amp_has_no_fast_bf16_to_use(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mlp_gan.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(mnist_mlp_gan, "train", lambda *args: (None, [], [], False))
    result = run_main(
        mnist_mlp_gan, "--amp", "--device", "cpu", "--data-root", tmp_path / "m", "--out", tmp_path
    )
    assert result.returncode == 0 and "in fp32 (--amp: no fast bf16)" in result.stdout


def test_a_mlp_run_whose_d_scores_become_nan_stops_with_one_line(tmp_path, monkeypatch):
    real_step, calls = mnist_mlp_gan.train_step, []

    # from the third step on, D's weights are NaN: its scores too
    def diverging_step(generator, discriminator, *args):
        calls.append(1)
        if len(calls) == 3:
            for parameter in discriminator.parameters():
                parameter.data.fill_(float("nan"))
        return real_step(generator, discriminator, *args)

    monkeypatch.setattr(mnist_mlp_gan, "train_step", diverging_step)
    flags = ["--max-steps", 5, "--batch-size", 16, "--device", "cpu", "--quiet"]
    result = run_main(mnist_mlp_gan, *flags, "--data-root", tmp_path / "m", "--out", tmp_path)
    assert_one_line_error(result, "loss became NaN/inf in epoch 1", "lower --lr)")


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_a_nan_score_reaches_the_losses_instead_of_ending_the_step(script, mnist_sample):
    # BCE on probabilities refuses a NaN; on CUDA with a device-side assert that ends the process
    g, d = models(script)
    for parameter in d.parameters():
        parameter.data.fill_(float("nan"))
    real = next(script.batches(torch.from_numpy(mnist_sample[0]), 32, "cpu"))
    g_opt, d_opt = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    assert all(loss.isnan() for loss in script.train_step(g, d, g_opt, d_opt, real))


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_offline_with_a_damaged_bundled_sample_it_says_so_in_one_line(
    script, tmp_path, monkeypatch
):
    damaged = tmp_path / "mnist_sample.npz"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    monkeypatch.setattr(script, "SAMPLE", str(damaged))
    result = run_bad_input(script, "--data-root", tmp_path / "m", "--out", tmp_path / "out")
    assert_one_line_error(result, f"{damaged} cannot be read (BadZipFile)", "restore it")


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_the_average_of_g_warms_up_so_a_short_run_is_not_its_random_start(script):
    args = script.parse_args(["--lr", "1e-3"])
    gan = script.build_gan(args, "cpu")
    start = snapshot(gan.averaged.module)
    # the first update takes G as it is; then G moves by 1 and stays there for 20 steps
    gan.averaged.update_parameters(gan.generator)
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.add_(1.0)
    for _ in range(20):
        gan.averaged.update_parameters(gan.generator)
    # how far the average went of G's step of 1: a plain 0.999 (0.995) average, 2% (10%)
    gone = [(a - b).mean().item() for a, b in zip(gan.averaged.module.parameters(), start)]
    assert min(gone) > 0.5


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_a_full_disk_is_one_line_no_tmp_file_and_the_last_good_generator_stays(
    script, tmp_path, monkeypatch
):
    from test_dcgan_celeba import writes_part_then_fails

    monkeypatch.setattr(script.torch, "save", writes_part_then_fails(torch.save, 2))
    # the files, not the steps, are under test: each step takes no time
    one = torch.tensor(1.0)
    monkeypatch.setattr(script, "train_step", lambda *args, **kwargs: (one, one))
    flags = ["--epochs", 2, "--device", "cpu", "--quiet"]
    result = run_main(script, *flags, "--data-root", tmp_path / "m", "--out", tmp_path / "out")
    assert_one_line_error(result, "cannot write", "No space left on device", "free some space")
    monkeypatch.undo()
    assert not [name for name in os.listdir(tmp_path / "out") if name.endswith(".tmp")]
    torch.load(tmp_path / "out" / "generator.pt", weights_only=True)
    assert_image(tmp_path / "out" / "samples_epoch_001.png")


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_mnist_files_of_the_right_size_holding_something_else_are_one_line(script, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    sizes = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008}
    sizes.update({"t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008})
    for name, size in sizes.items():
        (raw / name).write_bytes(bytes(size))
    flags = ["--max-steps", 1, "--device", "cpu", "--out", tmp_path / "out"]
    result = run_main(script, "--data-root", tmp_path, *flags)
    assert_one_line_error(result, "holds no MNIST", "delete it to download it again")


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_an_empty_data_root_is_an_error_not_the_current_folder(script, tmp_path):
    flags = ["--max-steps", 1, "--device", "cpu", "--out", tmp_path]
    assert_one_line_error(run_bad_input(script, "--data-root", "", *flags), "--data-root", "empty")
    assert not (tmp_path / "generator.pt").exists()


def test_mlp_asks_oneDNN_first_and_never_a_missing_private_check(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert mnist_mlp_gan.pick_device(mnist_mlp_gan.parse_args(["--device", "cpu"])) is None
    monkeypatch.undo()
    # torch before 2.5
    monkeypatch.setattr(mnist_mlp_gan.platform, "machine", lambda: "x86_64")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert mnist_mlp_gan.pick_device(mnist_mlp_gan.parse_args(["--device", "cpu"])) is None


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_each_part_of_the_tutorial_recipe_and_of_the_default(script):
    """The tutorial's rates, betas and last G under --tutorial-recipe; ours by default."""
    for flags, betas, shown in (([], (0.5, 0.999), "average"), (["--tutorial-recipe"], None, "G")):
        args = script.parse_args([*flags, "--lr", "3e-4"])
        gan = script.build_gan(args, "cpu")
        g_group, d_group = gan.g_optimizer.param_groups[0], gan.d_optimizer.param_groups[0]
        assert (g_group["lr"], d_group["lr"]) == (3e-4, 2e-4)
        # the MLP tutorial keeps Adam's default betas; the conv tutorial's are (0.5, 0.999)
        tutorial_betas = (0.9, 0.999) if script is mnist_mlp_gan else (0.5, 0.999)
        assert g_group["betas"] == d_group["betas"] == (betas or tutorial_betas)
        # the grids and generator.pt: the average of G, or the tutorial's last G
        expected = gan.averaged.module if shown == "average" else gan.generator
        assert gan.shown is expected


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_offline_it_trains_on_the_bundled_samples_pixels(
    script, tmp_path, monkeypatch, mnist_sample
):
    trained_on = []
    real_train = script.train

    def train(args, images, *rest):
        trained_on.append(images.clone())
        return real_train(args, images, *rest)

    monkeypatch.setattr(script, "train", train)
    flags = ["--max-steps", 1, "--device", "cpu", "--quiet", "--out", tmp_path]
    assert run_main(script, *flags, "--data-root", tmp_path / "m").returncode == 0
    assert torch.equal(trained_on[0], torch.from_numpy(mnist_sample[0]))


def test_mlp_dropout_drops_three_tenths_in_train_mode_and_nothing_in_eval_mode():
    d = mnist_mlp_gan.Discriminator()
    ones = torch.ones(100_000)
    dropped = (d.train().dropout(ones) == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01
    assert torch.equal(d.eval().dropout(ones), ones)
    x = torch.randn(4, 784)
    assert not torch.equal(d.train()(x), d(x))


@pytest.mark.parametrize("script", [mnist_mlp_gan, mnist_conv_gan])
def test_the_grids_and_generator_pt_come_from_the_average_of_g_not_the_last_g(
    script, tmp_path, monkeypatch
):
    real_step, raw = script.train_step, []

    def step(generator, *args, **kwargs):
        raw[:] = [generator]
        return real_step(generator, *args, **kwargs)

    monkeypatch.setattr(script, "train_step", step)
    flags = ["--max-steps", 3, "--batch-size", 64, "--device", "cpu", "--quiet"]
    result = run_main(script, *flags, "--data-root", tmp_path / "m", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    saved = torch.load(tmp_path / "generator.pt", weights_only=True)
    last_g = raw[0].state_dict()
    assert not all(torch.equal(saved[name], last_g[name]) for name in saved)
