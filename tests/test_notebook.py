"""Each script's whole text pasted into a notebook cell, and run with %run, as a learner would."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from conftest import NO_DOWNLOAD, ROOT, assert_image

import dcgan_celeba

# What a Jupyter or Colab kernel has: its own command line, ipykernel imported, and a cell has no
# __file__. It runs a notebook's cells one after another in one interpreter.
KERNEL = (
    NO_DOWNLOAD
    + """import signal, sys, types
# a kernel's interrupt button raises KeyboardInterrupt, also where the suite's parent ignores SIGINT
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ["/usr/lib/python3/dist-packages/ipykernel_launcher.py", "-f", "/x/kernel-1234.json"]
sys.modules["ipykernel"] = types.ModuleType("ipykernel")
for path in sys.argv_cells:
    print("CELL_STARTS", flush=True)
    print("CELL_STARTS", file=sys.stderr, flush=True)
    exec(compile(open(path).read(), "<cell>", "exec"), {"__name__": "__main__"})
    print("cell finished", flush=True)
"""
)


def pasted(script, last_line, before_guard=""):
    """The script's text as a learner pastes it, its last line edited to `last_line`."""
    with open(os.path.join(ROOT, script)) as f:
        text = f.read()
    assert text.endswith('\nif __name__ == "__main__":\n    main()\n'), (
        "the guard is the file's last lines"
    )
    text = text[: -len("    main()\n")] + f"    {last_line}\n"
    return text.replace(
        '\nif __name__ == "__main__":', before_guard + '\nif __name__ == "__main__":'
    )


def run_cells(cells, tmp_path, folder):
    """Runs the cells in turn, as a kernel does, in one fresh interpreter started in `folder`:
    each cell's (stdout, stderr). Each must end by itself, without a traceback or a SystemExit
    that would end the kernel."""
    paths = []
    for i, cell in enumerate(cells):
        (tmp_path / f"cell_{i}.py").write_text(cell)
        paths.append(str(tmp_path / f"cell_{i}.py"))
    program = KERNEL.replace("sys.argv_cells", repr(paths))
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=folder,
        capture_output=True,
        text=True,
        # a loaded 2-core machine: these cells take about 50 s alone
        timeout=900,
        env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = list(
        zip(result.stdout.split("CELL_STARTS\n")[1:], result.stderr.split("CELL_STARTS\n")[1:])
    )
    assert len(outputs) == len(cells), result.stderr[-2000:]
    for out, err in outputs:
        # main() returned: no SystemExit ended the cell
        assert "cell finished" in out, err[-2000:]
        assert "Traceback" not in err and "SystemExit" not in err, err[-2000:]
    return outputs


@pytest.fixture(scope="module")
def generator_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("g") / "generator.pt"
    torch.save(dcgan_celeba.Generator().state_dict(), path)
    return path


MNIST_FILES = ["samples_epoch_001.png", "losses.png", "progress.gif", "generator.pt"]
# script: (flags of a short run, files it writes, what main returns)
SHORT_RUNS = {
    "gaussian_gan.py": (["--steps", "300", "--quiet"], ["stats.png", "histogram.png"], "Generator"),
    "mnist_mlp_gan.py": (
        ["--max-steps", "2", "--batch-size", "32", "--quiet"],
        MNIST_FILES,
        "Generator",
    ),
    "mnist_conv_gan.py": (
        ["--max-steps", "2", "--batch-size", "32", "--quiet"],
        MNIST_FILES,
        "Generator",
    ),
    "dcgan_celeba.py": (
        ["--max-steps", "2", "--batch-size", "4", "--num-workers", "0", "--quiet"],
        ["fake_epoch_001.png", "losses.png", "real_vs_fake.png", "checkpoint_last.pt"],
        "Generator",
    ),
}


BAD_INPUT = {
    "mnist_mlp_gan.py": (["--epochs", "0"], "error: argument --epochs: must be positive"),
    "mnist_conv_gan.py": (["--batch-size", "-1"], "error: argument --batch-size: must be positive"),
    "dcgan_celeba.py": (["--data-root", "/no/such"], "error: --data-root /no/such does not exist"),
    "gaussian_gan.py": (["--steps", "0"], "error: argument --steps: must be positive"),
}
INTERRUPT = """
train_step_as_written, calls = train_step, []


# the kernel's interrupt button (a SIGINT), pressed during the third step
def train_step(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        import signal
        signal.raise_signal(signal.SIGINT)
    return train_step_as_written(*args, **kwargs)
"""
# as macOS, Windows
SPAWN = "import multiprocessing\nmultiprocessing.set_start_method('spawn', force=True)\n"


@pytest.fixture(scope="module")
def session(tmp_path_factory, generator_checkpoint, sandbox):
    """One kernel runs every cell below in turn, as a learner's notebook would (an interpreter's
    start-up is most of each cell's time): returns the folder and {cell name: (stdout, stderr)}."""
    from test_dcgan_celeba import faces

    tmp = tmp_path_factory.mktemp("kernel")
    cells = {}
    for script, (flags, _) in BAD_INPUT.items():
        # a dropped check then fails in a step, not a whole run
        flags = flags + ["--max-steps", "1", "--out", str(tmp / "bad")]
        cells[f"bad {script}"] = pasted(script, f"print('returned', main({flags!r}))")
    # 4 batches of 2: the third step is in the first epoch, one checkpoint saved
    faces(tmp / "faces", 8)
    # each is interrupted during its third step; the last sets the start method to spawn
    interrupted = {
        "mnist_mlp_gan.py": [
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--data-root",
            str(tmp / "mnist"),
        ],
        "gaussian_gan.py": ["--steps", "5000"],
        # where processes spawn too: the 2 workers asked for would fail to import this cell's code
        "dcgan_celeba.py": [
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--num-workers",
            "2",
            "--data-root",
            str(tmp / "faces"),
        ],
    }
    for script, flags in interrupted.items():
        flags = flags + ["--quiet", "--out", str(tmp / f"interrupted_{script}")]
        before_guard = SPAWN + INTERRUPT if script == "dcgan_celeba.py" else INTERRUPT
        cells[f"interrupt {script}"] = pasted(script, f"main({flags!r})", before_guard=before_guard)
    flags = [
        "--checkpoint",
        str(generator_checkpoint),
        "--out",
        str(tmp / "grid.png"),
        "--num-images",
        "4",
    ]
    cells["infer"] = pasted("infer.py", f"print('returned', tuple(main({flags!r}).shape))")
    # last, as it moves the kernel's folder: the unedited last line, main(), with no checkpoint in
    # reach
    in_tmp = f"import os\nos.chdir({str(tmp)!r})\n"
    cells["infer main()"] = in_tmp + pasted("infer.py", "print('returned', main())")
    # the kernel starts in the sandbox: a pasted cell looks for data/ in its folder
    return tmp, dict(zip(cells, run_cells(list(cells.values()), tmp, sandbox)))


def test_pasted_infer_returns_its_images_and_ignores_the_kernels_argv(session):
    tmp, outputs = session
    assert "returned (4, 3, 64, 64)" in outputs["infer"][0]
    assert_image(tmp / "grid.png")
    # the kernel's `-f kernel.json` is not taken for flags
    out, err = outputs["infer main()"]
    assert "unrecognized arguments" not in err
    assert err.strip() == (
        "error: checkpoint runs/dcgan_celeba/checkpoint_last.pt does not exist "
        "(train one with `python dcgan_celeba.py` or pass --checkpoint)"
    )
    assert "returned None" in out


def test_bad_input_in_a_cell_prints_its_one_line_and_ends_the_cell(session):
    for script, (_, message) in BAD_INPUT.items():
        out, err = session[1][f"bad {script}"]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (script, err)
        assert "returned None" in out, script


def test_interrupting_the_kernel_stops_the_run_says_so_keeps_its_files_and_ends_the_cell(session):
    tmp, outputs = session
    said = {
        "mnist_mlp_gan.py": "interrupted in epoch 1: its files hold the run so far",
        "gaussian_gan.py": "interrupted: the plots show the run so far",
        "dcgan_celeba.py": f"interrupted: checkpoints, plots and per-epoch grids in {tmp}",
    }
    for script, line in said.items():
        out = outputs[f"interrupt {script}"][0]
        assert "cell finished" in out
        assert any(printed.startswith(line) for printed in out.splitlines()), (script, out)
        assert_image(tmp / f"interrupted_{script}" / SHORT_RUNS[script][1][0])
    # each stopped after the step it was interrupted in, the third, not at the end of its run
    losses = (tmp / "interrupted_mnist_mlp_gan.py" / "loss.txt").read_text().splitlines()
    assert len(losses) == 1 and losses[0].startswith("[1/3]")
    checkpoint = tmp / "interrupted_dcgan_celeba.py" / "checkpoint_last.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert (state["epoch"], state["samples_done"], len(state["losses"])) == (1, 6, 3)


def test_pasted_where_processes_spawn_images_are_decoded_in_the_kernel_with_one_line(session):
    tmp, outputs = session
    # that cell set the start method to spawn
    out = outputs["interrupt dcgan_celeba.py"][0]
    assert (
        "decoding in this process: spawned workers cannot import a pasted cell's code"
        in out.splitlines()
    )
    assert "caching 8 images as uint8: 0.00 GB" in out.splitlines()
    assert_image(tmp / "interrupted_dcgan_celeba.py" / "fake_epoch_001.png")


def test_in_a_real_jupyter_kernel_pasted_cells_and_percent_run_work_and_show_figures_inline(
    tmp_path, monkeypatch, generator_checkpoint, sandbox
):
    reason = "the notebook tests need a Jupyter kernel: pip install -r requirements-dev.txt"
    nbformat = pytest.importorskip("nbformat", reason=reason)
    nbclient = pytest.importorskip("nbclient", reason=reason)
    # found, not imported (see below)
    if importlib.util.find_spec("ipykernel") is None:
        pytest.skip(reason)
    # the kernel's own inline backend, as in Jupyter
    monkeypatch.delenv("MPLBACKEND", raising=False)
    cells = {}
    for script, (flags, _, _) in SHORT_RUNS.items():
        flags = flags + ["--out", str(tmp_path / script)]
        if script.startswith("mnist"):
            flags += ["--data-root", str(tmp_path / "mnist")]
        returned = f"print('returned', type(main({flags!r})).__name__)"
        cells[script] = NO_DOWNLOAD + pasted(script, returned)
    cells["infer.py"] = pasted(
        "infer.py",
        f"main(['--checkpoint', {str(generator_checkpoint)!r}, "
        f"'--out', {str(tmp_path / 'grid.png')!r}])",
    )
    cells["%run"] = (
        f"%run {sandbox / 'mnist_conv_gan.py'} --max-steps 2 --quiet "
        f"--data-root {tmp_path / 'mnist'} --out {tmp_path / 'percent_run'}"
    )
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(cell) for cell in cells.values()]
    )
    imported = set(sys.modules)
    nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(sandbox)}}
    ).execute()
    # jupyter_client imports ipykernel.kernelspec for the kernel:
    for name in set(sys.modules) - imported:
        # left here, the scripts in later tests would think they run in one
        if name.startswith("ipykernel"):
            del sys.modules[name]
    for name, cell in zip(cells, notebook.cells):
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert not errors, (name, errors)
        images = [output for output in cell.outputs if "image/png" in output.get("data", {})]
        assert len(images) == (1 if name == "infer.py" else 2), (
            f"{name}: {len(images)} figures shown inline"
        )
    assert_image(tmp_path / "grid.png")
    assert_image(tmp_path / "percent_run" / "samples_epoch_001.png")
    # main() took its flags, wrote, returned
    for script, (_, files, returned) in SHORT_RUNS.items():
        printed = [
            output.text
            for output in notebook.cells[list(cells).index(script)].outputs
            if output.get("name") == "stdout"
        ]
        assert f"returned {returned}" in "".join(printed), script
        for name in files:
            assert (tmp_path / script / name).exists(), (script, name)
        assert_image(tmp_path / script / files[0])
