import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import (
    ROOT,
    NarrowGenerator,
    assert_image,
    assert_one_line_error,
    batchnorm,
    conv,
    isolate,
    moved,
    n_params,
    run_bad_input,
    run_main,
    snapshot,
    watch_each_half,
)
from PIL import Image

import dcgan_celeba as dc

SMALL = ["--batch-size", 4, "--num-workers", 0, "--device", "cpu", "--quiet"]


def faces(folder, count=8, start=0):
    """`count` real face pictures as JPEG/PNG files of CelebA's 178x218 in `folder`."""
    with np.load(os.path.join(ROOT, "data", "faces_sample.npz")) as f:
        pictures = f["images"][start : start + count]
    os.makedirs(folder, exist_ok=True)
    for i, face in enumerate(pictures, start):
        name = f"{i + 1:06d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(face).convert("RGB").resize((178, 218)).save(os.path.join(folder, name))


@pytest.fixture
def image_folder(tmp_path):
    """Eight faces in CelebA's official layout: Img/img_align_celeba/ beside Anno/ and Eval/ text
    files."""
    faces(tmp_path / "celeba" / "Img" / "img_align_celeba")
    for name in ("Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt"):
        (tmp_path / "celeba" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "celeba" / name).write_text("000001.jpg 0\n")
    return tmp_path / "celeba"


def test_models_have_the_tutorials_shapes_and_parameter_counts_less_the_two_batchnorms():
    g, d = dc.Generator(), dc.Discriminator()
    fake = g(torch.randn(3, 100, 1, 1))
    assert fake.shape == (3, 3, 64, 64) and fake.abs().max() <= 1
    assert d(fake).shape == (3, 1)
    # the tutorial's layers, without BatchNorm(3) before G's Tanh and BatchNorm(32) on D's input
    # block
    assert n_params(g) == (
        conv(100, 1024, 4, False)
        + batchnorm(1024)
        + conv(1024, 512, 4, False)
        + batchnorm(512)
        + conv(512, 256, 4, False)
        + batchnorm(256)
        + conv(256, 128, 4, False)
        + batchnorm(128)
        + conv(128, 3, 4, False)
    )
    assert n_params(d) == (
        conv(3, 32, 4)
        + conv(32, 64, 4)
        + batchnorm(64)
        + conv(64, 128, 4)
        + batchnorm(128)
        + conv(128, 128, 4)
        + batchnorm(128)
        + conv(128, 1, 4)
    )
    # padded 4x4 kernels at stride 2 halve the image in each block: 64 -> 32 -> 16 -> 8 -> 4 -> 1
    x, sizes = fake, []
    for block in d.disc:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [32, 16, 8, 4, 1]


def test_tutorial_recipe_builds_the_tutorials_models_exactly_as_printed():
    g, d = dc.Generator(tutorial=True), dc.Discriminator(tutorial=True)
    assert isinstance(g.gen[-1][1], torch.nn.BatchNorm2d) and isinstance(
        d.disc[0][1], torch.nn.BatchNorm2d
    )
    assert n_params(g) == n_params(dc.Generator()) + batchnorm(3)
    assert n_params(d) == n_params(dc.Discriminator()) + batchnorm(32)
    x, sizes = torch.randn(2, 3, 64, 64), []
    # unpadded, its third block at stride 1
    for block in d.disc:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [31, 14, 11, 4, 1]
    assert [m.padding for m in d.modules() if isinstance(m, torch.nn.Conv2d)] == [(0, 0)] * 5


@pytest.mark.parametrize("layout", ["official", "torchvision", "kaggle"])
def test_every_image_under_the_root_is_found_in_each_celeba_layout(layout, tmp_path, capsys):
    root = tmp_path / "celeba"
    folder = {
        "official": root / "Img" / "img_align_celeba",
        "torchvision": root / "img_align_celeba",
        "kaggle": root / "img_align_celeba" / "img_align_celeba",
    }[layout]
    faces(folder, 5)
    # and in a sub-folder
    faces(folder / "more", 3, start=5)
    notes = {
        "official": ["Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt"],
        "torchvision": ["list_attr_celeba.txt", "identity_CelebA.txt"],
        "kaggle": ["list_attr_celeba.csv", "list_bbox_celeba.csv"],
    }[layout]
    for note in notes:
        (root / note).parent.mkdir(parents=True, exist_ok=True)
        (root / note).write_text("image_id,x\n")
    # Jupyter's copies: skipped, as every hidden folder
    faces(root / ".ipynb_checkpoints", 2)
    (root / "empty").mkdir()
    images = dc.make_dataset(dc.parse_args(["--data-root", str(root), *map(str, SMALL)])).images
    assert images.shape == (8, 3, 64, 64) and images.dtype == torch.uint8
    assert capsys.readouterr().out.splitlines()[0] == f"8 images in {folder}"


def test_the_default_data_folder_in_celebas_own_layout_is_used_not_the_digits(
    tmp_path, monkeypatch, capsys
):
    faces(tmp_path / "data" / "celeba" / "Img" / "img_align_celeba", 4)
    (tmp_path / "data" / "celeba" / "Anno").mkdir()
    monkeypatch.setattr(dc, "HERE", str(tmp_path))
    assert dc.make_dataset(dc.parse_args(["--num-workers", "0"])).images.shape == (4, 3, 64, 64)
    assert "MNIST" not in capsys.readouterr().out


def test_cached_pixels_equal_the_decoded_ones_and_no_cache_keeps_the_files(image_folder, capsys):
    cached = dc.make_dataset(
        dc.parse_args(["--data-root", str(image_folder), "--num-workers", "2"])
    ).images
    assert "caching 8 images as uint8: 0.00 GB" in capsys.readouterr().out
    paths = sorted(str(p) for p in (image_folder / "Img" / "img_align_celeba").iterdir())
    assert torch.equal(cached, torch.cat([dc.load_images([path]) for path in paths]))
    # real pictures, as uint8
    assert cached.min() == 0 and cached.max() > 200
    dataset = dc.make_dataset(dc.parse_args(["--data-root", str(image_folder), "--no-cache"]))
    assert dataset.files == paths and dataset.images is None
    assert "not caching 0.0 GB (--no-cache): each epoch decodes them" in capsys.readouterr().out


def report_40_kb_as_windows_does(status):
    """GlobalMemoryStatusEx: MEMORYSTATUSEX's first word holds its size; the second gets the RAM."""
    assert status[0] == 64 and len(status) * 8 == 64
    status[1] = 40_960


@pytest.mark.parametrize("system", ["posix", "windows"])
def test_images_that_do_not_fit_in_memory_are_decoded_every_epoch_and_it_says_so(
    system, image_folder, monkeypatch, capsys, tmp_path, narrow_g
):
    # 40 kB of RAM, a quarter of it for the cache
    if system == "posix":
        monkeypatch.setattr(dc.os, "sysconf", lambda name: 10 if name == "SC_PHYS_PAGES" else 4096)
    else:
        monkeypatch.delattr(dc.os, "sysconf", raising=False)
        kernel32 = SimpleNamespace(GlobalMemoryStatusEx=report_40_kb_as_windows_does)
        monkeypatch.setattr(dc.ctypes, "windll", SimpleNamespace(kernel32=kernel32), raising=False)
    assert dc.make_dataset(dc.parse_args(["--data-root", str(image_folder)])).images is None
    assert "not caching 0.0 GB (over 1/4 of the memory)" in capsys.readouterr().out
    result = run_main(dc, "--data-root", image_folder, "--epochs", 2, *SMALL, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["epoch"] == 2


def test_the_progress_bar_shows_d_and_g_loss(tmp_path, narrow_g):
    flags = ["--max-steps", 20, "--batch-size", 4, "--num-workers", 0, "--device", "cpu"]
    result = run_main(dc, *flags, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\[.*loss_d=\d\.\d+, loss_g=\d\.\d+\]", result.stderr)


def test_without_celeba_it_trains_on_the_bundled_digits_as_uint8_64x64(capsys):
    digits = dc.make_dataset(dc.parse_args([])).images
    assert digits.shape == (5000, 1, 64, 64) and digits.dtype == torch.uint8
    assert digits.min() == 0 and digits.max() == 255
    assert "training on 5,000 MNIST digits" in capsys.readouterr().out


def test_steps_are_finite_repeatable_and_each_half_moves_only_its_model():
    def run():
        torch.manual_seed(0)
        g, d = dc.Generator().apply(dc.weights_init), dc.Discriminator().apply(dc.weights_init)
        real = (
            dc.make_dataset(dc.parse_args(["--quiet"]))
            .images[:4]
            .float()
            .div(127.5)
            .sub(1)
            .expand(-1, 3, -1, -1)
        )
        g_opt, d_opt = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
        check_each_half = watch_each_half(g, d, g_opt, d_opt)
        losses = dc.train_step(g, d, g_opt, d_opt, real)
        check_each_half()
        losses += dc.train_step(g, d, g_opt, d_opt, real, label_smoothing=True)
        return [x.item() for x in losses]

    first = run()
    assert np.isfinite(first).all() and first == run()


def test_the_average_of_g_moves_towards_g_weights_and_batchnorm_statistics():
    g, average = dc.Generator(), dc.Generator()
    with torch.no_grad():
        for model, value in ((g, 1.0), (average, 0.0)):
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.fill_(value)
    dc.update_average(average, g, step=10**6, decay=0.75)
    for name, value in average.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, torch.full_like(value, 0.25)), name


def test_cli_writes_grids_plots_and_a_checkpoint_but_no_snapshot_mid_epoch(dcgan_run):
    run, result = dcgan_run
    # no CelebA: says so, trains on the digits
    assert "training on 5,000 MNIST digits" in result.stdout
    assert assert_image(run / "fake_epoch_001.png") == (8 * 66 + 2,) * 2
    for name in ("losses.png", "real_vs_fake.png", "progress.gif"):
        assert_image(run / name)
    with Image.open(run / "progress.gif") as gif:
        # this run's one epoch, not the stale grid
        assert gif.n_frames == 1
    checkpoint = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert set(checkpoint) == {
        "g_model_state_dict",
        "d_model_state_dict",
        "g_ema_state_dict",
        "epoch",
        "g_optimizer_state_dict",
        "d_optimizer_state_dict",
        "samples_done",
        "epoch_samples",
        "args",
        "rng_states",
        "losses",
    }
    # two steps of 4 images into the first epoch
    assert (checkpoint["epoch"], checkpoint["samples_done"], len(checkpoint["losses"])) == (1, 8, 2)
    dc.Generator().load_state_dict(checkpoint["g_ema_state_dict"])
    # the epoch is not over
    assert not (run / "checkpoint_epoch_001.pt").exists()


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, sandbox):
    """One two-epoch run on four faces, --save-every 2, shared by the tests that read what it
    leaves: (its folder, how many times it drew the plots)."""
    tmp = tmp_path_factory.mktemp("two_epochs")
    faces(tmp / "img", 4)
    real_plots, calls = dc.save_plots, []
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, sandbox)
        patch.setattr(dc, "Generator", NarrowGenerator)
        patch.setattr(
            dc, "save_plots", lambda *args, **kwargs: calls.append(real_plots(*args, **kwargs))
        )
        result = run_main(
            dc,
            "--epochs",
            2,
            *SMALL,
            "--data-root",
            tmp / "img",
            "--save-every",
            2,
            "--out",
            tmp / "run",
        )
    assert result.returncode == 0, result.stderr
    return tmp / "run", len(calls)


def test_an_epoch_snapshot_holds_the_drawn_g_d_and_the_epoch_only(two_epochs):
    run = two_epochs[0]
    assert sorted(name for name in os.listdir(run) if name.endswith(".pt")) == [
        "checkpoint_epoch_002.pt",
        "checkpoint_last.pt",
    ]
    snap = torch.load(run / "checkpoint_epoch_002.pt", weights_only=True)
    last = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert set(snap) == {"g_model_state_dict", "d_model_state_dict", "epoch"} and snap["epoch"] == 2
    # the averaged G, which the grids draw
    for name, value in snap["g_model_state_dict"].items():
        assert torch.equal(value, last["g_ema_state_dict"][name])


def test_plots_and_the_gif_are_drawn_once_at_the_end_not_every_epoch(two_epochs):
    run, plot_calls = two_epochs
    assert plot_calls == 1
    with Image.open(run / "progress.gif") as gif:
        assert gif.n_frames == 2


def interrupt_at(monkeypatch, step):
    """Ctrl-C during the `step`-th call of train_step (1-based): the run ends that step, saves and
    stops."""
    real_step, calls = dc.train_step, []

    def step_with_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            signal.raise_signal(signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(dc, "train_step", step_with_ctrl_c)


def test_ctrl_c_mid_epoch_then_resume_ends_with_the_real_gs_weights_of_a_run_never_stopped(
    tmp_path, image_folder, monkeypatch
):
    common = [*SMALL, "--data-root", image_folder, "--seed", 3, "--epochs", 2]
    straight = run_main(dc, *common, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    with monkeypatch.context() as patch:
        # epochs of 2 batches: the 2nd epoch's 1st batch
        interrupt_at(patch, 3)
        stopped = run_main(dc, *common, "--out", tmp_path / "split")
    assert stopped.returncode == 130 and "interrupted" in stopped.stdout
    checkpoint = torch.load(tmp_path / "split" / "checkpoint_last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["samples_done"], len(checkpoint["losses"])) == (2, 4, 3)
    assert_image(tmp_path / "split" / "progress.gif")
    # the run's flags come back from the checkpoint: seed, batch size, epochs, data, out
    resumed = run_main(dc, "--resume", tmp_path / "split" / "checkpoint_last.pt", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming with" not in resumed.stdout
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint_last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["losses"] == b["losses"]
    for key in ("g_model_state_dict", "d_model_state_dict", "g_ema_state_dict"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    with Image.open(tmp_path / "split" / "progress.gif") as gif:
        # the resumed run's GIF starts from the first run's grids
        assert gif.n_frames == 2


def test_max_steps_mid_epoch_then_resume_goes_on_from_the_next_step_and_says_which_flags_differ(
    tmp_path, image_folder, narrow_g
):
    common = [*SMALL, "--data-root", image_folder, "--epochs", 2]
    assert run_main(dc, *common, "--max-steps", 3, "--out", tmp_path).returncode == 0
    stopped = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert (stopped["epoch"], stopped["samples_done"]) == (2, 4)
    resumed = run_main(
        dc,
        "--resume",
        tmp_path / "checkpoint_last.pt",
        "--lr",
        "1e-4",
        # as the run's: not named
        "--no-label-smoothing",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming with --lr 0.0001 (the run's: 0.0004)" in resumed.stdout.splitlines()
    checkpoint = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["samples_done"], len(checkpoint["losses"])) == (2, 8, 4)
    again = run_main(dc, "--resume", tmp_path / "checkpoint_last.pt")
    assert again.returncode == 0 and "already has 2 epochs" in again.stdout
    # a checkpoint written before the position was kept in samples (one process's batches) and
    # every process's RNG state still resumes
    stopped["batches_done"] = stopped.pop("samples_done") // 4
    stopped["rng_state"] = stopped.pop("rng_states")[0]
    torch.save(stopped, tmp_path / "old.pt")
    resumed = run_main(dc, "--resume", tmp_path / "old.pt")
    assert resumed.returncode == 0, resumed.stderr
    losses = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["losses"]
    assert len(losses) == 4 and losses[:3] == stopped["losses"]
    # a batch that cannot go on from the sample it stopped at says so
    result = run_bad_input(dc, "--resume", tmp_path / "old.pt", "--batch-size", 3)
    assert_one_line_error(result, "stopped 4 images into its epoch", "batches of 3 do not reach")


def test_given_data_root_that_is_missing_empty_or_a_file_exits_2(tmp_path):
    assert_one_line_error(
        run_bad_input(dc, "--data-root", tmp_path / "nope", *SMALL), "does not exist"
    )
    (tmp_path / "empty" / "img_align_celeba").mkdir(parents=True)
    (tmp_path / "empty" / "list_attr_celeba.txt").write_text("not an image")
    assert_one_line_error(
        run_bad_input(dc, "--data-root", tmp_path / "empty", *SMALL), "holds no images"
    )
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert_one_line_error(
        run_bad_input(dc, "--data-root", tmp_path / "file.jpg", *SMALL), "is a file, not a folder"
    )


@pytest.mark.parametrize("workers, cache", [(0, "--cache"), (2, "--no-cache")])
def test_unreadable_image_names_the_file(tmp_path, image_folder, workers, cache, narrow_g):
    bad = image_folder / "Img" / "img_align_celeba" / "000001.png"
    bad.write_bytes(b"not a picture")
    result = run_main(
        dc,
        "--data-root",
        image_folder,
        "--max-steps",
        2,
        *SMALL,
        "--num-workers",
        workers,
        cache,
        "--out",
        tmp_path / "o",
    )
    assert_one_line_error(result, "unreadable image", "000001.png", "cannot identify image file")
    # its workers are gone now: a worker that raises would keep them until a garbage collection,
    # which in a
    # notebook then hangs 5 s a worker at some later cell
    assert multiprocessing.active_children() == []


def test_bad_checkpoints_and_flags_exit_2_and_keep_earlier_files(tmp_path, two_epochs, narrow_g):
    out = two_epochs[0]
    good = (out / "checkpoint_last.pt").read_bytes()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good[: len(good) // 2])
    assert_one_line_error(
        run_bad_input(dc, "--resume", corrupt, *SMALL, "--out", out), "cannot be read"
    )
    assert_one_line_error(
        run_bad_input(dc, "--resume", out / "checkpoint_epoch_002.pt", *SMALL),
        "holds no training state (KeyError)",
        "checkpoint_last.pt",
    )
    assert_one_line_error(
        run_bad_input(dc, "--resume", tmp_path / "none.pt", *SMALL), "(FileNotFoundError)"
    )
    assert_one_line_error(run_bad_input(dc, "--resume", tmp_path, *SMALL), "cannot be read")
    other = torch.load(out / "checkpoint_last.pt", weights_only=True)
    other["g_model_state_dict"] = {"gen.0.0.weight": torch.zeros(3, 3)}
    torch.save(other, tmp_path / "mismatch.pt")
    assert_one_line_error(
        run_bad_input(dc, "--resume", tmp_path / "mismatch.pt", *SMALL), "does not fit"
    )
    assert_one_line_error(
        run_bad_input(dc, "--resume", out / "checkpoint_last.pt", "--tutorial-recipe", *SMALL),
        "does not fit",
    )
    assert (out / "checkpoint_last.pt").read_bytes() == good
    assert_one_line_error(run_bad_input(dc, "--epochs", 0), "--epochs")
    assert_one_line_error(run_bad_input(dc, "--lr", "inf"), "--lr", "positive")
    assert_one_line_error(run_bad_input(dc, "--seed", 2**32), "--seed", "0 to 2**32 - 1")
    assert_one_line_error(run_bad_input(dc, "--num-workers", -1), "--num-workers", "0 to 64")
    assert_one_line_error(run_bad_input(dc, "--save-every", 0), "--save-every")


def test_unwritable_out_exits_2_before_loading_data(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert_one_line_error(
        run_bad_input(dc, "--out", a_file, *SMALL), "--out", "cannot be written (File exists)"
    )
    assert_one_line_error(
        run_bad_input(dc, "--out", a_file / "run", *SMALL), "--out", "cannot be written"
    )
    assert_one_line_error(
        run_bad_input(dc, "--out", "/proc/no_such_run", *SMALL), "--out", "cannot be written"
    )
    assert a_file.read_text() == "keep me"
    if not torch.cuda.is_available():
        assert_one_line_error(run_bad_input(dc, "--device", "cuda"), "CUDA is not available")


# dcgan_celeba.py as torchrun runs it. Each rank writes its process id, its exit code and the
# average of G it ends with in --out; NARROW=<tests folder> trains the narrow G, STEP_SECONDS
# slows each step.
PROBE = """import os, sys, time
import torch
import dcgan_celeba
if os.environ.get("NARROW"):
    sys.path.insert(0, os.environ["NARROW"])
    from conftest import NarrowGenerator
    dcgan_celeba.Generator = NarrowGenerator
step, build_gan, built = dcgan_celeba.train_step, dcgan_celeba.build_gan, []
dcgan_celeba.build_gan = lambda *args: built.append(build_gan(*args)) or built[-1]
def slow_step(*args, **kwargs):
    time.sleep(float(os.environ.get("STEP_SECONDS", 0)))
    return step(*args, **kwargs)
dcgan_celeba.train_step = slow_step
out = sys.argv[sys.argv.index("--out") + 1]
rank = os.environ["RANK"]
os.makedirs(out, exist_ok=True)
open(os.path.join(out, f"rank{rank}.pid"), "w").write(str(os.getpid()))
try:
    generator = dcgan_celeba.main(sys.argv[1:])
except SystemExit as stop:
    open(os.path.join(out, f"rank{rank}.exit"), "w").write(str(stop.code))
    raise
open(os.path.join(out, f"rank{rank}.exit"), "w").write("0")
torch.save(dict(generator.named_parameters()), os.path.join(out, f"rank{rank}.pt"))
torch.save(dict(built[0].d_model.named_parameters()), os.path.join(out, f"rank{rank}_d.pt"))
"""


def torchrun(sandbox, *args, device="cpu", env=None, wait=True):
    """The sandbox's dcgan_celeba.py as two CPU processes (gloo), or one per GPU (nccl), under
    torchrun, through PROBE. wait=False: the running launcher, in a process group of its own."""
    (sandbox / "ddp_probe.py").write_text(PROBE)
    nproc = 2 if device == "cpu" else 1
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, f"--nproc_per_node={nproc}", str(sandbox / "ddp_probe.py")]
    command += ["--device", device, *map(str, args)]
    environment = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # its own process group: the launcher and both ranks end together, whatever happens
    launcher = subprocess.Popen(
        command, cwd=sandbox, env=environment, start_new_session=True, **pipes
    )
    if not wait:
        return launcher
    try:
        # sized for a loaded 2-core machine: alone, a run takes 10 to 20 s
        stdout, stderr = launcher.communicate(timeout=600)
    finally:
        end_group(launcher)
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr)


def end_group(process):
    """Kills what is left of a process group started with start_new_session: a gloo rank left
    alone would wait 30 minutes for the other."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, sandbox):
    """Two CPU processes under torchrun, the narrow G on 16 faces in steps of 4 images for 3 epochs:
    a run left alone; the same run stopped by a SIGTERM to rank 1 alone once its first epoch is
    saved (split/), then resumed (resumed/); and one stopped by a Ctrl-C to all (ctrl_c/).
    Returns (folder, the run left alone, the checkpoint split/ stopped with)."""
    tmp = tmp_path_factory.mktemp("ddp")
    faces(tmp / "faces", 16)
    flags = ["--data-root", tmp / "faces", "--epochs", 3, "--batch-size", 4, "--seed", 5]
    flags += ["--num-workers", 0, "--quiet"]
    narrow = {"NARROW": os.path.join(ROOT, "tests")}
    straight = torchrun(sandbox, *flags, "--out", tmp / "straight", env=narrow)
    assert straight.returncode == 0, straight.stderr[-2000:]
    for name in ("split", "ctrl_c"):
        (tmp / name).mkdir()
        slow = {**narrow, "STEP_SECONDS": "0.3"}
        launcher = torchrun(sandbox, *flags, "--out", tmp / name, env=slow, wait=False)
        try:
            started = time.monotonic()
            while not (tmp / name / "checkpoint_last.pt").exists() and launcher.poll() is None:
                assert time.monotonic() - started < 300, "the first epoch did not end"
                time.sleep(0.05)
            # Ctrl-C in the terminal reaches torchrun and both ranks. A scheduler's SIGTERM may
            # reach rank 1 alone: rank 0 must then stop after the same step, or rank 1 waits for
            # it in DDP's all-reduce.
            if name == "ctrl_c":
                os.killpg(launcher.pid, signal.SIGINT)
            else:
                os.kill(int((tmp / name / "rank1.pid").read_text()), signal.SIGTERM)
            launcher.communicate(timeout=120)
        finally:
            end_group(launcher)
    shutil.copy(tmp / "split" / "checkpoint_last.pt", tmp / "stopped.pt")
    resumed = torchrun(
        sandbox, "--resume", tmp / "stopped.pt", "--out", tmp / "resumed", env=narrow
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return tmp, straight, tmp / "stopped.pt"


def test_torchrun_averages_two_processes_gradients_and_rank_0_alone_writes(ddp_runs):
    tmp, straight, stopped = ddp_runs
    # Each rank trained on its own half of the data with its own noise: only the averaging of
    # their gradients (DDP) leaves both with the same weights.
    rank_0 = torch.load(tmp / "straight" / "rank0.pt", weights_only=True)
    rank_1 = torch.load(tmp / "straight" / "rank1.pt", weights_only=True)
    earlier = torch.load(stopped, weights_only=True)["g_ema_state_dict"]
    assert all(torch.equal(rank_0[name], rank_1[name]) for name in rank_0)
    assert not all(torch.equal(rank_0[name], earlier[name]) for name in rank_0)
    # D's too: each rank's D, the same after every step, and not the D of an earlier step
    d_0 = torch.load(tmp / "straight" / "rank0_d.pt", weights_only=True)
    d_1 = torch.load(tmp / "straight" / "rank1_d.pt", weights_only=True)
    earlier_d = torch.load(stopped, weights_only=True)["d_model_state_dict"]
    assert all(torch.equal(d_0[name], d_1[name]) for name in d_0)
    assert not all(torch.equal(d_0[name], earlier_d[name]) for name in d_0)
    # only rank 0 reports, once
    assert straight.stdout.count("checkpoints, plots and per-epoch grids") == 1
    assert straight.stdout.count("device: cpu") == 1
    # DDP's broadcast_buffers warning, on torch 2.14 and later
    assert "deprecated" not in straight.stderr
    state = torch.load(tmp / "straight" / "checkpoint_last.pt", weights_only=True)
    # 16 images in steps of 4 (2 + 2): 4 steps an epoch, as on one process
    assert len(state["losses"]) == 12 and state["samples_done"] == 16
    assert not any(k.startswith("module.") for k in state["g_model_state_dict"])
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp / "straight"))


def test_a_stop_signal_to_one_rank_stops_both_after_one_step_and_the_run_resumes_exactly(
    ddp_runs,
):
    tmp, _, stopped = ddp_runs
    split = tmp / "split"
    assert [(split / f"rank{rank}.exit").read_text() for rank in (0, 1)] == ["130", "130"]
    # and a Ctrl-C in the terminal, to torchrun and both ranks, the same
    ctrl_c = tmp / "ctrl_c"
    assert [(ctrl_c / f"rank{rank}.exit").read_text() for rank in (0, 1)] == ["130", "130"]
    assert 4 <= len(torch.load(ctrl_c / "checkpoint_last.pt", weights_only=True)["losses"]) < 12
    assert 4 <= len(torch.load(stopped, weights_only=True)["losses"]) < 12
    finished = torch.load(tmp / "resumed" / "checkpoint_last.pt", weights_only=True)
    uninterrupted = torch.load(tmp / "straight" / "checkpoint_last.pt", weights_only=True)
    assert finished["losses"] == uninterrupted["losses"]
    for key in ("g_model_state_dict", "d_model_state_dict", "g_ema_state_dict"):
        assert all(torch.equal(finished[key][k], uninterrupted[key][k]) for k in finished[key])


def test_a_mid_epoch_checkpoint_of_two_processes_goes_on_at_the_same_image_on_one(
    ddp_runs, tmp_path, narrow_g
):
    _, _, stopped = ddp_runs
    done = torch.load(stopped, weights_only=True)
    assert done["samples_done"] % 16 != 0, "stopped at an epoch's end: nothing mid-epoch to test"
    shutil.copy(stopped, tmp_path / "stopped.pt")
    result = run_main(dc, "--resume", tmp_path / "stopped.pt", "--out", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    # the same 4 steps of 4 images an epoch: the steps already taken are not taken again
    assert (state["epoch"], state["samples_done"], len(state["losses"])) == (3, 16, 12)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here: the GPU path is not tested"
)
def test_on_a_cuda_gpu_it_trains_resumes_and_runs_under_torchrun_with_nccl(tmp_path, sandbox):
    flags = ["--device", "cuda", "--batch-size", 16, "--quiet", "--num-workers", 0]
    assert run_main(dc, *flags, "--max-steps", 3, "--out", tmp_path / "one").returncode == 0
    resumed = run_main(dc, "--resume", tmp_path / "one" / "checkpoint_last.pt", "--max-steps", 2)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)["samples_done"] == 80
    )
    checkpoint = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)
    # trained on the GPU: finite losses, and the GPU's RNG state kept for an exact resume
    assert all(math.isfinite(x) for step in checkpoint["losses"] for x in step)
    assert "cuda" in checkpoint["rng_states"][0]
    flags = ["--max-steps", 3, "--batch-size", 16, "--quiet", "--out", tmp_path / "ddp"]
    result = torchrun(sandbox, *flags, device="cuda")
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=True)["epoch"] == 1


def test_nan_loss_stops_with_a_message_keeps_the_last_good_checkpoint_and_writes_the_plots(
    tmp_path, image_folder, monkeypatch, narrow_g
):
    real_step, calls = dc.train_step, []

    def step_that_diverges(*args, **kwargs):
        calls.append(1)
        d_loss, g_loss = real_step(*args, **kwargs)
        return (d_loss * float("nan"), g_loss) if len(calls) > 2 else (d_loss, g_loss)

    monkeypatch.setattr(dc, "train_step", step_that_diverges)
    result = run_main(dc, "--data-root", image_folder, "--epochs", 3, *SMALL, "--out", tmp_path)
    assert_one_line_error(result, "NaN", "epoch 2")
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["epoch"] == 1
    with Image.open(tmp_path / "progress.gif") as gif:
        assert gif.n_frames == 1
    assert_image(tmp_path / "losses.png")


def test_undecoded_epochs_read_each_loader_once_so_the_progress_bar_starts_no_extra_workers(
    tmp_path, image_folder, monkeypatch, narrow_g
):
    starts, real_iter = [], torch.utils.data.DataLoader.__iter__

    # tqdm.auto's asyncio side calls iter() on what it wraps (tqdm#1598)
    def counting_iter(loader):
        starts.append(1)
        return real_iter(loader)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", counting_iter)
    result = run_main(
        dc, "--epochs", 2, "--data-root", image_folder, "--no-cache", *SMALL, "--out", tmp_path
    )
    assert result.returncode == 0, result.stderr
    # one per epoch: a second would start more worker processes
    assert len(starts) == 2


def test_a_seeded_bf16_step_on_the_cpu_is_finite_repeatable_and_moves_both_models():
    def run():
        torch.manual_seed(0)
        # narrow: without bf16 instructions a CPU emulates bf16, and the real G's step takes seconds
        g, d = NarrowGenerator().apply(dc.weights_init), dc.Discriminator().apply(dc.weights_init)
        real = torch.rand(2, 3, 64, 64) * 2 - 1
        g0, d0 = snapshot(g), snapshot(d)
        losses = dc.train_step(
            g,
            d,
            torch.optim.Adam(g.parameters()),
            torch.optim.Adam(d.parameters()),
            real,
            amp_dtype=torch.bfloat16,
        )
        assert moved(g0, g) == len(g0) and moved(d0, d) == len(d0)
        # autocast: fp32 weights, bf16 math
        assert all(p.dtype == torch.float32 for p in g.parameters())
        return [x.item() for x in losses]

    first = run()
    assert np.isfinite(first).all() and first == run()


@pytest.mark.skipif(
    not dc.cpu_has_fast_bf16(), reason="this CPU has no bf16 instructions: runs train in fp32 here"
)
def test_on_a_cpu_with_bf16_instructions_a_default_run_convolves_in_bf16(tmp_path, monkeypatch):
    dtypes, build_gan = set(), dc.build_gan

    def build_gan_that_records_each_convolutions_dtype(*args):
        gan = build_gan(*args)
        for module in [*gan.g_model.modules(), *gan.d_model.modules()]:
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.register_forward_hook(lambda module, x, out: dtypes.add(out.dtype))
        return gan

    monkeypatch.setattr(dc, "build_gan", build_gan_that_records_each_convolutions_dtype)
    result = run_main(dc, "--max-steps", 1, *SMALL, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert dtypes == {torch.bfloat16}


@pytest.mark.parametrize(
    "fast_bf16, flags, dtype, said",
    [
        (True, [], torch.bfloat16, "device: cpu, torch.bfloat16 autocast"),
        (True, ["--no-amp"], None, "device: cpu, fp32"),
        (False, ["--amp"], None, "device: cpu, fp32 (--amp: no fast bf16 on this device)"),
        (False, [], None, "device: cpu, fp32"),
    ],
)
def test_amp_is_bf16_on_a_cpu_with_bf16_instructions_and_fp32_without(
    fast_bf16, flags, dtype, said, tmp_path, monkeypatch
):
    monkeypatch.setattr(dc.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: fast_bf16)
    dtypes = []

    # records what run() chose, trains nothing
    def train(args, device, rank, world, amp_dtype, checkpoint):
        dtypes.append(amp_dtype)
        return None, False

    monkeypatch.setattr(dc, "train", train)
    result = run_main(dc, *SMALL, *flags, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert said in result.stdout.splitlines()
    assert dtypes == [dtype]


def test_without_the_bundled_sample_it_reads_a_downloaded_mnist_or_says_what_to_do(
    tmp_path, monkeypatch
):
    # this file alone, as pasted into a notebook: no data/
    monkeypatch.setattr(dc, "HERE", str(tmp_path))
    # what a download leaves: MNIST's IDX files
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    digits = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    for split in ("train", "t10k"):
        # uint8, 3 dims: 6 x 28 x 28
        header = bytes([0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 28, 0, 0, 0, 28])
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + digits.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1, 0, 0, 0, 6]) + bytes(range(6))
        )
    dataset = dc.make_dataset(dc.parse_args([])).images
    assert dataset.shape == (6, 1, 64, 64) and dataset.dtype == torch.uint8
    for name in os.listdir(raw):
        os.remove(raw / name)

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(dc.torchvision.datasets, "MNIST", offline)
    result = run_bad_input(dc, *SMALL, "--out", tmp_path / "out")
    assert_one_line_error(result, "no digits either (RuntimeError)", "data/celeba", "go online")


def many_small_jpegs(folder, count):
    """`count` small real JPEGs (faces, each its own brightness) in `folder`."""
    with np.load(os.path.join(ROOT, "data", "faces_sample.npz")) as f:
        pictures = f["images"]
    folder.mkdir(parents=True)
    for i in range(count):
        face = pictures[i % len(pictures)].astype(np.int32) + i % 50
        picture = Image.fromarray(face.clip(0, 255).astype(np.uint8)).resize((64, 64))
        picture.convert("RGB").save(folder / f"{i:06d}.jpg", quality=90)


IN_A_CONTAINER = [
    *("unshare", "--mount", "--propagation", "private", "sh", "-c"),
    'mount -t tmpfs -o size=16m tmpfs /dev/shm && ulimit -n 128 && exec "$0" -c "$1"',
]


def test_caching_works_in_a_container_with_64_mb_of_shared_memory_and_few_open_files(
    tmp_path, sandbox
):
    # Docker's and Kubernetes' defaults, made here: a private /dev/shm (16 MB, a quarter of theirs)
    # and `ulimit -n 128`
    trial = subprocess.run([*IN_A_CONTAINER, sys.executable, "pass"], capture_output=True)
    if trial.returncode:
        pytest.skip(f"cannot make a container's conditions here (root and unshare needed): {trial}")
    many_small_jpegs(tmp_path / "faces", 4000)
    program = f"""import sys
sys.path.insert(0, {str(sandbox)!r})
import dcgan_celeba as dc
flags = ["--data-root", {str(tmp_path / "faces")!r}, "--num-workers", "2", "--quiet"]
images = dc.make_dataset(dc.parse_args(flags)).images
path = {str(tmp_path / "faces" / "003999.jpg")!r}
print(tuple(images.shape), bool((images[-1] == dc.load_images([path])[0]).all()))
"""
    result = subprocess.run(
        [*IN_A_CONTAINER, sys.executable, program], capture_output=True, text=True, timeout=60
    )
    # a cache of 49 MB, three times the shared memory: each decoded batch was released
    assert result.returncode == 0, result.stderr[-2000:]
    assert "caching 4,000 images as uint8: 0.05 GB" in result.stdout
    assert result.stdout.splitlines()[-1] == "(4000, 3, 64, 64) True"


def test_a_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch, tmp_path):
    # what torchrun --nproc_per_node=2 sets, less RANK: no process group is started
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_bad_input(dc, "--batch-size", 3, "--out", tmp_path)
    assert_one_line_error(result, "--batch-size 3 does not split over 2 processes")


def test_an_image_over_pillows_decompression_bomb_limit_is_an_unreadable_image(
    tmp_path, image_folder, monkeypatch
):
    # CelebA's 178x218 pictures, against a limit of 10,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    result = run_bad_input(dc, "--data-root", image_folder, *SMALL, "--out", tmp_path)
    assert_one_line_error(result, "unreadable image", "decompression bomb")


def test_a_damaged_bundled_sample_is_named_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist_sample.npz").write_bytes(b"PK\x03\x04 cut short")
    monkeypatch.setattr(dc, "HERE", str(tmp_path))
    result = run_bad_input(dc, *SMALL, "--out", tmp_path / "out")
    assert_one_line_error(result, "no digits either (BadZipFile)", "restore data/mnist_sample.npz")


def test_the_gif_holds_about_100_evenly_spaced_grids_the_first_and_the_last(tmp_path):
    for epoch in range(1, 251):
        Image.new("L", (1, 1), epoch).save(tmp_path / f"fake_epoch_{epoch:03d}.png")
    dc.save_gif(str(tmp_path), 250)
    with Image.open(tmp_path / "progress.gif") as gif:
        # epochs 1, 4, ..., 250
        assert gif.n_frames == 84
        assert gif.convert("L").getpixel((0, 0)) == 1
        gif.seek(gif.n_frames - 1)
        assert gif.convert("L").getpixel((0, 0)) == 250


def test_the_default_is_batch_64_and_g_at_4e4_and_the_tutorial_recipe_is_128_and_2e4(
    tmp_path, monkeypatch
):
    chosen = []

    # records what run() chose, trains nothing
    def train(args, device, rank, world, amp_dtype, checkpoint):
        chosen.append((args.batch_size, args.lr))
        return None, False

    monkeypatch.setattr(dc, "train", train)
    for flags in ([], ["--tutorial-recipe"], ["--batch-size", 32, "--lr", 1e-4]):
        assert run_main(dc, *flags, "--device", "cpu", "--out", tmp_path).returncode == 0
    assert chosen == [(64, 4e-4), (128, 2e-4), (32, 1e-4)]
    # the optimizers take it: G at --lr, D at 2e-4
    gan = dc.build_gan(dc.parse_args(["--lr", "4e-4"]), torch.device("cpu"))
    assert gan.g_optimizer.param_groups[0]["lr"] == 4e-4
    assert gan.d_optimizer.param_groups[0]["lr"] == 2e-4


def test_a_resumed_run_trains_at_the_rate_given_again_and_its_checkpoint_says_so(
    tmp_path, image_folder, narrow_g
):
    common = [*SMALL, "--data-root", image_folder, "--epochs", 2, "--out", tmp_path]
    assert run_main(dc, *common, "--max-steps", 1).returncode == 0
    first = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert first["g_optimizer_state_dict"]["param_groups"][0]["lr"] == 4e-4
    resumed = run_main(dc, "--resume", tmp_path / "checkpoint_last.pt", "--lr", "1e-4")
    assert resumed.returncode == 0, resumed.stderr
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert state["args"]["lr"] == 1e-4
    # the optimizer's own rate, not only the flag: G at 1e-4, D still at 2e-4
    assert state["g_optimizer_state_dict"]["param_groups"][0]["lr"] == 1e-4
    assert state["d_optimizer_state_dict"]["param_groups"][0]["lr"] == 2e-4


def test_the_position_counts_the_images_seen_so_another_batch_goes_on_after_a_whole_epoch(
    tmp_path, image_folder, narrow_g
):
    # 8 images in batches of 3: 3 + 3 + 2
    common = [*SMALL, "--data-root", image_folder, "--out", tmp_path]
    assert run_main(dc, *common, "--epochs", 1, "--batch-size", 3).returncode == 0
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert (state["epoch"], state["samples_done"], state["epoch_samples"]) == (1, 8, 8)
    resumed = run_main(
        dc, "--resume", tmp_path / "checkpoint_last.pt", "--batch-size", 4, "--epochs", 2
    )
    assert resumed.returncode == 0, resumed.stderr
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    # the second epoch in batches of 4: 2 steps
    assert (state["epoch"], state["samples_done"], len(state["losses"])) == (2, 8, 5)


def writes_part_then_fails(real_save, fail_at):
    """A torch.save that, from its `fail_at`-th call, writes half a file and runs out of disk."""
    calls = []

    def save(content, path, *args, **kwargs):
        calls.append(path)
        if len(calls) < fail_at:
            return real_save(content, path, *args, **kwargs)
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    return save


def test_a_full_disk_is_one_line_no_tmp_file_and_the_last_good_checkpoint_and_plots_stay(
    tmp_path, image_folder, monkeypatch, narrow_g
):
    # the first epoch's checkpoint is written; the second's runs out of disk
    monkeypatch.setattr(dc.torch, "save", writes_part_then_fails(torch.save, 2))
    result = run_main(dc, "--data-root", image_folder, "--epochs", 2, *SMALL, "--out", tmp_path)
    assert_one_line_error(result, "cannot write", "No space left on device", "free some space")
    monkeypatch.undo()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["epoch"] == 1
    assert_image(tmp_path / "losses.png")
    assert_image(tmp_path / "real_vs_fake.png")


def test_an_empty_data_root_is_an_error_not_the_default_folder(tmp_path):
    result = run_main(dc, "--data-root", "", *SMALL, "--max-steps", 1, "--out", tmp_path)
    assert_one_line_error(result, "--data-root", "empty")
    assert not (tmp_path / "checkpoint_last.pt").exists()


def test_the_gpus_rng_state_is_saved_and_restored_on_a_gpu_of_the_same_kind(monkeypatch):
    # a GPU's generator, as torch.cuda keeps it, made here on a CPU
    generator = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *device: generator["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, *d: generator.update(state=s))
    [saved] = dc.rng_states(torch.device("cuda", 0))
    assert torch.equal(saved["cuda"], torch.tensor([1, 2, 3], dtype=torch.uint8))
    assert torch.equal(saved["cpu"], torch.get_rng_state())
    generator["state"] = torch.tensor([9], dtype=torch.uint8)
    dc.restore_rng(saved, torch.device("cuda", 0))
    assert torch.equal(generator["state"], torch.tensor([1, 2, 3], dtype=torch.uint8))
    # a CPU run's checkpoint on a CPU: the CPU's state alone; a GPU's is not touched there
    [cpu_saved] = dc.rng_states(torch.device("cpu"))
    assert set(cpu_saved) == {"cpu"}
    dc.restore_rng(saved, torch.device("cpu"))
    assert torch.equal(generator["state"], torch.tensor([1, 2, 3], dtype=torch.uint8))


def test_bf16_is_asked_of_the_device_first_and_fp32_where_it_cannot_say(monkeypatch, capsys):
    # a build without oneDNN: the private checks are never called
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert dc.cpu_has_fast_bf16() is False
    monkeypatch.undo()
    # torch before 2.5: no torch.cpu._is_avx512_bf16_supported
    monkeypatch.setattr(dc.platform, "machine", lambda: "x86_64")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert dc.cpu_has_fast_bf16() is False
    # a GPU without bf16 (Colab's T4): --amp runs fp32 and says so
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args: False)
    device, dtype = dc.pick_device(dc.parse_args(["--device", "cuda", "--amp"]))
    assert device.type == "cuda" and dtype is None
    assert "fp32 (--amp: no fast bf16 on this device)" in capsys.readouterr().out


def test_a_nan_stops_the_run_within_100_steps_not_at_the_epochs_end(
    tmp_path, monkeypatch, narrow_g
):
    calls = []

    def step_that_diverges(*args, **kwargs):
        calls.append(1)
        nan = torch.tensor(float("nan"))
        return (nan, nan) if len(calls) > 2 else (torch.tensor(1.0), torch.tensor(1.0))

    monkeypatch.setattr(dc, "train_step", step_that_diverges)
    # the digits in batches of 4: 1,250 steps an epoch
    result = run_main(dc, *SMALL, "--out", tmp_path)
    assert_one_line_error(result, "NaN", "epoch 1")
    assert len(calls) == 100


def test_workers_default_to_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(dc.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert dc.parse_args([]).num_workers == 1


def test_a_checkpoint_that_does_not_fit_is_refused_before_any_image_is_decoded(
    tmp_path, image_folder, monkeypatch, narrow_g
):
    assert run_main(dc, *SMALL, "--max-steps", 1, "--out", tmp_path).returncode == 0
    decoded = []
    monkeypatch.setattr(dc, "load_images", lambda paths: decoded.append(paths))
    flags = ["--resume", tmp_path / "checkpoint_last.pt", "--tutorial-recipe"]
    result = run_bad_input(dc, *flags, "--data-root", image_folder, "--out", tmp_path / "o")
    assert_one_line_error(result, "does not fit")
    assert decoded == []


def test_a_second_ctrl_c_ends_the_run_at_once(tmp_path, monkeypatch, narrow_g):
    real_step, finished = dc.train_step, []

    # Ctrl-C twice in the first step, as a user does when a loader hangs
    def step_interrupted_twice(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        finished.append(real_step(*args, **kwargs))
        return finished[-1]

    monkeypatch.setattr(dc, "train_step", step_interrupted_twice)
    result = run_main(dc, *SMALL, "--max-steps", 5, "--out", tmp_path)
    assert result.returncode == 130
    assert finished == []


def test_each_part_of_the_tutorial_recipe_is_built_into_what_trains():
    tutorial = dc.build_gan(dc.parse_args(["--tutorial-recipe"]), torch.device("cpu"))
    ours = dc.build_gan(dc.parse_args([]), torch.device("cpu"))
    # the models as printed: BatchNorm before G's Tanh and on D's first block
    assert isinstance(tutorial.g_model.gen[-1][1], torch.nn.BatchNorm2d)
    assert isinstance(tutorial.d_model.disc[0][1], torch.nn.BatchNorm2d)
    assert len(ours.g_model.gen[-1]) == 2 and len(ours.d_model.disc[0]) == 2
    # G and D at 2e-4, betas (0.5, 0.999); ours: G at 4e-4
    for gan, g_rate in ((tutorial, 2e-4), (ours, 4e-4)):
        g_group, d_group = gan.g_optimizer.param_groups[0], gan.d_optimizer.param_groups[0]
        assert (g_group["lr"], d_group["lr"]) == (g_rate, 2e-4)
        assert g_group["betas"] == d_group["betas"] == (0.5, 0.999)
    # the pictures from the last G: after a step its average is G itself; ours lags behind
    for gan in (tutorial, ours):
        with torch.no_grad():
            for p in gan.g_model.parameters():
                p.add_(1.0)
        dc.update_average(gan.g_ema, gan.g_model, step=10**6, decay=gan.ema_decay)
    assert all(
        torch.equal(a, b)
        for a, b in zip(tutorial.g_ema.parameters(), tutorial.g_model.parameters())
    )
    assert not any(
        torch.equal(a, b) for a, b in zip(ours.g_ema.parameters(), ours.g_model.parameters())
    )


def test_the_grids_are_drawn_with_batchnorms_running_statistics_which_drawing_leaves_alone(
    tmp_path, monkeypatch, narrow_g
):
    real_save_epoch, drawn = dc.save_epoch, []

    def save_epoch(gan, *args):
        before = {k: v.clone() for k, v in gan.g_ema.state_dict().items()}
        fake = real_save_epoch(gan, *args)
        after = gan.g_ema.state_dict()
        drawn.append(all(torch.equal(before[k], after[k]) for k in before))
        return fake

    monkeypatch.setattr(dc, "save_epoch", save_epoch)
    assert run_main(dc, *SMALL, "--max-steps", 2, "--out", tmp_path).returncode == 0
    # in train mode, drawing the fixed noise would move the average's running statistics
    assert drawn == [True]
