import subprocess
import sys

import pytest
import torch
from conftest import assert_image, assert_one_line_error, run_main
from PIL import Image
from test_dcgan_celeba import faces

import dcgan_celeba
import infer


@pytest.fixture
def checkpoint(dcgan_run):
    # a real run's, with the full-size G
    return dcgan_run[0] / "checkpoint_last.pt"


def grid(checkpoint, out, *extra):
    result = run_main(infer, "--checkpoint", checkpoint, "--out", out, "--num-images", 4, *extra)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        return image.convert("RGB").tobytes()


def test_full_prefixed_and_bare_checkpoints_give_the_same_grid(checkpoint, tmp_path):
    # what the grids draw
    state = torch.load(checkpoint, weights_only=True)["g_ema_state_dict"]
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    torch.save({f"_orig_mod.module.{k}": v for k, v in state.items()}, tmp_path / "compiled_ddp.pt")
    torch.save(state, tmp_path / "bare.pt")
    expected = grid(checkpoint, tmp_path / "full.png")
    assert_image(tmp_path / "full.png")
    for name in ("ddp.pt", "compiled_ddp.pt", "bare.pt"):
        assert grid(tmp_path / name, tmp_path / f"{name}.png") == expected


def test_walk_changes_only_dimension_k():
    z = torch.randn(1, 100, 1, 1)
    noise = infer.walk_noise(z, 7, steps=5, span=2.0)
    assert noise.shape == (5, 100, 1, 1)
    assert torch.equal(noise[:, 7, 0, 0], torch.linspace(-2, 2, 5))
    others = torch.ones(100, dtype=torch.bool)
    others[7] = False
    assert torch.equal(noise[:, others], z[:, others].expand(5, -1, -1, -1))


def test_slerp_starts_and_ends_at_the_two_noise_vectors():
    a, b = torch.randn(2, 1, 100, 1, 1)
    path = infer.slerp(a, b, 6)
    assert path.shape == (6, 100, 1, 1)
    assert torch.allclose(path[0], a[0], atol=1e-5) and torch.allclose(path[-1], b[0], atol=1e-5)
    # spherical: the norm stays between the endpoints' instead of dipping through the middle
    assert path.flatten(1).norm(dim=1).min() > 0.95 * min(a.norm(), b.norm())


def test_an_image_does_not_depend_on_its_batch_mates(checkpoint):
    generator = infer.load_generator(str(checkpoint))
    noise = torch.randn(64, 100, 1, 1)
    with torch.no_grad():
        alone, in_batch = generator(noise[:1]), generator(noise)[:1]
    assert torch.allclose(alone, in_batch, atol=1e-5)


def test_walk_and_interpolate_write_one_row(checkpoint, tmp_path):
    for mode, steps in (("--walk", 5), ("--interpolate", 6)):
        result = run_main(
            infer, "--checkpoint", checkpoint, mode, "--steps", steps, "--out", tmp_path / "row.png"
        )
        assert result.returncode == 0, result.stderr
        assert assert_image(tmp_path / "row.png") == (steps * 66 + 2, 68)


def test_bad_checkpoints_exit_2_with_one_line(checkpoint, tmp_path):
    assert_one_line_error(
        run_main(infer, "--checkpoint", tmp_path / "missing.pt"), "does not exist"
    )
    (tmp_path / "corrupt.pt").write_bytes(checkpoint.read_bytes()[:5000])
    assert_one_line_error(
        run_main(infer, "--checkpoint", tmp_path / "corrupt.pt"), "cannot be read"
    )
    torch.save({"gen.0.0.weight": torch.zeros(2, 2)}, tmp_path / "shapes.pt")
    assert_one_line_error(run_main(infer, "--checkpoint", tmp_path / "shapes.pt"), "does not fit")
    torch.save({"epoch": 3, "args": {}}, tmp_path / "no_weights.pt")
    assert_one_line_error(
        run_main(infer, "--checkpoint", tmp_path / "no_weights.pt"), "no generator weights"
    )
    assert_one_line_error(
        run_main(infer, "--checkpoint", checkpoint, "--z-index", 100), "--z-index"
    )
    assert_one_line_error(
        run_main(infer, "--checkpoint", tmp_path), "is a folder, not a checkpoint file"
    )


def test_bad_numbers_and_output_paths_exit_2_before_any_work(checkpoint, tmp_path):
    for flag, value in (
        ("--num-images", 0),
        ("--num-images", 5000),
        ("--steps", 0),
        ("--span", "inf"),
        ("--span", "nan"),
        ("--seed", -1),
    ):
        assert_one_line_error(run_main(infer, "--checkpoint", checkpoint, flag, value), flag)
    # none, or one Pillow cannot write
    for name in ("grid", "grid.psd", "grid.xbm", "grid.h5", "grid.blp"):
        assert_one_line_error(
            run_main(infer, "--checkpoint", checkpoint, "--out", tmp_path / name),
            "is not a picture Pillow can write",
        )
    (tmp_path / "folder.png").mkdir()
    assert_one_line_error(
        run_main(infer, "--checkpoint", checkpoint, "--out", tmp_path / "folder.png"), "is a folder"
    )
    assert_one_line_error(
        run_main(infer, "--checkpoint", checkpoint, "--out", tmp_path / "no" / "grid.png"),
        "cannot be written",
    )
    # nothing written
    assert [p.name for p in tmp_path.iterdir()] == ["folder.png"]


def test_the_average_of_g_is_drawn_as_the_grids_and_epoch_snapshots_are(tmp_path, narrow_g):
    out = tmp_path / "run"
    faces(tmp_path / "faces", 4)
    result = run_main(
        dcgan_celeba,
        "--epochs",
        1,
        "--save-every",
        1,
        "--batch-size",
        2,
        "--device",
        "cpu",
        "--data-root",
        tmp_path / "faces",
        "--num-workers",
        0,
        "--quiet",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    checkpoint = torch.load(out / "checkpoint_last.pt", weights_only=True)
    torch.save(checkpoint["g_ema_state_dict"], tmp_path / "average.pt")
    torch.save(checkpoint["g_model_state_dict"], tmp_path / "last.pt")
    drawn = grid(out / "checkpoint_last.pt", tmp_path / "full.png")
    assert grid(tmp_path / "average.pt", tmp_path / "average.png") == drawn
    assert grid(out / "checkpoint_epoch_001.pt", tmp_path / "snapshot.png") == drawn
    assert grid(tmp_path / "last.pt", tmp_path / "last.png") != drawn


def test_a_tutorial_recipe_checkpoint_loads_its_own_generator(tmp_path):
    torch.manual_seed(0)
    torch.save(
        {"g_model_state_dict": dcgan_celeba.Generator(tutorial=True).state_dict()},
        tmp_path / "t.pt",
    )
    assert infer.load_generator(str(tmp_path / "t.pt")).tutorial


def test_show_draws_the_images_even_in_a_format_matplotlib_cannot_read(
    checkpoint, tmp_path, monkeypatch
):
    shown = []
    monkeypatch.setattr(
        infer.plt, "show", lambda: shown.append(infer.plt.gca().images[0].get_array().shape)
    )
    result = run_main(
        infer,
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "grid.pdf",
        "--num-images",
        4,
        "--show",
    )
    assert result.returncode == 0, result.stderr
    assert shown == [(68, 266, 3)] and (tmp_path / "grid.pdf").read_bytes().startswith(b"%PDF")


def test_ctrl_c_ends_quietly_with_130(checkpoint, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(infer, "load_generator", interrupted)
    result = run_main(infer, "--checkpoint", checkpoint)
    assert result.returncode == 130 and result.stderr == ""


def test_a_picture_too_wide_for_its_format_or_a_read_only_out_is_one_line_and_keeps_the_old(
    checkpoint, tmp_path, monkeypatch
):
    old = tmp_path / "walk.jpg"
    old.write_bytes(b"an earlier picture")
    # 1,024 images of 66 pixels: wider than a JPEG's 65,535 pixels, a WebP's 16,383
    for name, steps in (("walk.jpg", 1024), ("walk.webp", 300)):
        flags = ["--walk", "--steps", steps, "--out", tmp_path / name]
        result = run_main(infer, "--checkpoint", checkpoint, *flags)
        assert_one_line_error(result, "cannot hold this picture", "fewer --steps, or a .png")
    assert old.read_bytes() == b"an earlier picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.jpg"]
    # what a user who is not root meets (root may write anything)
    monkeypatch.setattr(infer.os, "access", lambda path, mode: False)
    result = run_main(infer, "--checkpoint", checkpoint, "--out", old)
    assert_one_line_error(result, "is read-only")


def test_a_jpeg_too_wide_says_so_in_one_line_of_its_own_not_libjpegs(checkpoint, tmp_path, sandbox):
    # libjpeg writes to the process's stderr itself: only a child process shows it
    flags = ["--checkpoint", checkpoint, "--walk", "--steps", 1024, "--out", tmp_path / "w.jpg"]
    command = [sys.executable, "infer.py", *map(str, flags)]
    result = subprocess.run(command, cwd=sandbox, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "cannot hold this picture", "67586 pixels wide")
    assert list(tmp_path.iterdir()) == []
