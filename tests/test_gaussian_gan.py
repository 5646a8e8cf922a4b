import warnings

import numpy as np
import torch
from conftest import (
    assert_image,
    assert_one_line_error,
    linear,
    n_params,
    run_bad_input,
    run_main,
    watch_each_half,
)

import gaussian_gan as gg


def test_generator_maps_each_noise_value_to_one_sample():
    out = gg.Generator()(gg.noise_batch(4, 100))
    assert out.shape == (400, 1) and out.dtype == torch.float32


def test_discriminator_gives_one_probability_per_minibatch():
    decorated = gg.decorate_with_diffs(gg.real_batch(3, 100))
    # 100 samples + 100 squared deviations
    assert decorated.shape == (3, 200)
    out = gg.Discriminator()(decorated)
    assert out.shape == (3, 1) and ((out > 0) & (out < 1)).all()


def test_parameter_counts_equal_the_tutorials_architecture():
    assert n_params(gg.Generator()) == linear(1, 50) + linear(50, 50) + linear(50, 1)
    assert n_params(gg.Discriminator()) == linear(200, 50) + linear(50, 50) + linear(50, 1)


def test_decorate_with_diffs_appends_squared_deviation_from_the_mean():
    data = torch.tensor([[1.0, 2.0, 6.0]])
    assert torch.equal(gg.decorate_with_diffs(data), torch.tensor([[1.0, 2.0, 6.0, 4.0, 1.0, 9.0]]))


def seeded_losses(steps=5, seed=0):
    torch.manual_seed(seed)
    g, d = gg.Generator(), gg.Discriminator()
    g_opt, d_opt = torch.optim.Adam(g.parameters(), 2e-4), torch.optim.Adam(d.parameters(), 2e-4)
    losses = []
    for _ in range(steps):
        real, noise = gg.real_batch(4, 100), gg.noise_batch(4, 100)
        d_real, d_fake, g_err, _ = gg.train_step(g, d, g_opt, d_opt, real, noise)
        losses.append((d_real.item(), d_fake.item(), g_err.item()))
    return losses


def test_seeded_steps_are_repeatable_and_finite():
    first = seeded_losses()
    assert first == seeded_losses()
    assert np.isfinite(first).all()


def test_d_step_changes_only_d_and_g_step_only_g():
    torch.manual_seed(0)
    g, d = gg.Generator(), gg.Discriminator()
    g_opt, d_opt = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    check_each_half = watch_each_half(g, d, g_opt, d_opt)
    gg.train_step(g, d, g_opt, d_opt, gg.real_batch(1, 100), gg.noise_batch(1, 100))
    check_each_half()


def test_short_seeded_run_gets_the_generated_mean_within_0_3_of_4_and_writes_both_plots(tmp_path):
    result = run_main(gg, "--steps", 4000, "--seed", 0, "--print-interval", 1000, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    # the tutorial's line, every 1,000
    assert sum("D: " in line for line in result.stdout.splitlines()) >= 4
    final = result.stdout.strip().splitlines()[-1]
    mean = float(final.split("generated mean ")[1].split(",")[0])
    # G starts near 0.4
    assert abs(mean - 4.0) < 0.3, final
    assert_image(tmp_path / "stats.png")
    assert_image(tmp_path / "histogram.png")


def test_help_exits_0():
    result = run_main(gg, "--help")
    assert result.returncode == 0 and "--tutorial-recipe" in result.stdout


def test_nonsense_flags_exit_2_with_one_line():
    assert_one_line_error(run_bad_input(gg, "--steps", 0), "--steps", "positive")
    assert_one_line_error(run_bad_input(gg, "--batch-size", -1), "--batch-size")
    assert_one_line_error(run_bad_input(gg, "--lr", "nan"), "--lr", "positive")
    assert_one_line_error(run_bad_input(gg, "--d-lr", "inf"), "--d-lr", "positive")
    assert_one_line_error(run_bad_input(gg, "--batch-size", 20000), "--batch-size", "at most 10000")
    assert_one_line_error(run_bad_input(gg, "--print-interval", 0), "--print-interval")
    assert_one_line_error(run_bad_input(gg, "--seed", -1), "--seed", "0 to 2**32 - 1")
    assert_one_line_error(run_bad_input(gg, "--lr", "1e30"), "--lr", "must be at most 1")


def test_unwritable_out_exits_2_before_training(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert_one_line_error(
        run_bad_input(gg, "--out", a_file), "--out", "cannot be written (File exists)"
    )
    assert_one_line_error(run_bad_input(gg, "--out", a_file / "run"), "--out", "cannot be written")
    assert_one_line_error(
        run_bad_input(gg, "--out", "/proc/no_such_run"), "--out", "cannot be written"
    )
    assert a_file.read_text() == "keep me"


def test_ctrl_c_keeps_the_plots_so_far_and_exits_130(tmp_path, monkeypatch):
    real_step, calls = gg.train_step, []

    def interrupted_step(*args):
        calls.append(1)
        if len(calls) == 300:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(gg, "train_step", interrupted_step)
    result = run_main(gg, "--quiet", "--print-interval", 100, "--out", tmp_path)
    assert result.returncode == 130, result.stderr
    assert "final: generated mean" in result.stdout
    assert_image(tmp_path / "stats.png")
    assert_image(tmp_path / "histogram.png")


def test_a_run_whose_losses_become_nan_stops_with_one_line(tmp_path, monkeypatch):
    real_step, calls = gg.train_step, []

    # from the fifth step on, D's weights are NaN: its scores too
    def diverging_step(generator, discriminator, *args):
        calls.append(1)
        if len(calls) == 5:
            for parameter in discriminator.parameters():
                parameter.data.fill_(float("nan"))
        return real_step(generator, discriminator, *args)

    monkeypatch.setattr(gg, "train_step", diverging_step)
    result = run_main(gg, "--steps", 100, "--print-interval", 10, "--quiet", "--out", tmp_path)
    assert_one_line_error(result, "losses became NaN by step 10", "lower --lr")


def test_a_nan_score_reaches_the_losses_instead_of_ending_the_step():
    # BCE on probabilities refuses a NaN; on CUDA with a device-side assert that ends the process
    g, d = gg.Generator(), gg.Discriminator()
    for parameter in d.parameters():
        parameter.data.fill_(float("nan"))
    g_opt, d_opt = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    losses = gg.train_step(g, d, g_opt, d_opt, gg.real_batch(4, 100), gg.noise_batch(4, 100))
    assert all(loss.isnan() for loss in losses[:3])


def test_the_histogram_holds_a_generator_that_ran_away_from_the_target(tmp_path):
    # the tutorial's recipe, seed 1, ends near 20: every sample outside N(4, 1.25)'s 5 sigmas
    samples = np.full(1000, 20.0, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gg.save_plots([(0, 20.0, 0.0)], samples, str(tmp_path))
    assert_image(tmp_path / "histogram.png")


def test_each_part_of_the_tutorial_recipe_and_of_the_default(monkeypatch):
    for flags, rates, betas in (
        ([], (1e-3, 1e-4), (0.5, 0.999)),
        (["--tutorial-recipe"], (2e-4, 2e-4), (0.9, 0.999)),
    ):
        args = gg.parse_args([*flags, "--steps", "2", "--quiet"])
        g, d, g_opt, d_opt = gg.build_gan(args, "cpu")
        groups = g_opt.param_groups[0], d_opt.param_groups[0]
        assert (groups[0]["lr"], groups[1]["lr"]) == rates
        assert groups[0]["betas"] == groups[1]["betas"] == betas
        # D's minibatches a step, fresh noise for G's half, and the G reported
        seen, real_step = [], gg.train_step
        monkeypatch.setattr(gg, "train_step", lambda *a: seen.append(a) or real_step(*a))
        reported, _, _ = gg.train(args, "cpu")
        monkeypatch.undo()
        generator, real, g_noise = seen[-1][0], seen[-1][4], seen[-1][6]
        tutorial = bool(flags)
        assert real.shape == ((1 if tutorial else 4), 100)
        assert (g_noise is not None) == tutorial
        assert (reported is generator) == tutorial
