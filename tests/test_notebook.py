"""Each script's whole text pasted into a notebook cell, and run with %run, as a learner would."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import dcgan_celeba
from conftest import ROOT, assert_image

# what a Jupyter or Colab kernel has: its own command line, ipykernel imported, and a cell has no __file__
KERNEL = """import sys, types
sys.argv = ["/usr/local/lib/python3/dist-packages/ipykernel_launcher.py", "-f", "/x/kernel-1234.json"]
sys.modules["ipykernel"] = types.ModuleType("ipykernel")
exec(compile(open(sys.argv_cell).read(), "<cell>", "exec"), {"__name__": "__main__"})
print("cell finished")
"""


def pasted(script, last_line, before_guard=""):
    """The script's text as a learner pastes it, its last line edited to `last_line`."""
    with open(os.path.join(ROOT, script)) as f:
        text = f.read()
    assert text.endswith('\nif __name__ == "__main__":\n    main()\n'), "the guard is the file's last lines"
    text = text[: -len("    main()\n")] + f"    {last_line}\n"
    return text.replace('\nif __name__ == "__main__":', before_guard + '\nif __name__ == "__main__":')


def run_cell(cell, tmp_path, cwd=ROOT):
    """Runs `cell` the way a kernel runs it, in a fresh interpreter: returns the CompletedProcess."""
    (tmp_path / "cell.py").write_text(cell)
    program = KERNEL.replace("sys.argv_cell", repr(str(tmp_path / "cell.py")))
    return subprocess.run([sys.executable, "-c", program], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ROOT})


def assert_finished_quietly(result):
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cell finished" in result.stdout  # main() returned: no SystemExit ended the cell
    assert "Traceback" not in result.stderr and "SystemExit" not in result.stderr, result.stderr[-2000:]


@pytest.fixture(scope="module")
def generator_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("g") / "generator.pt"
    torch.save(dcgan_celeba.Generator().state_dict(), path)
    return path


MNIST_FILES = ["samples_epoch_001.png", "losses.png", "progress.gif", "generator.pt"]
SHORT_RUNS = {  # script: (flags of a short run, files it writes, what main returns)
    "gaussian_gan.py": (["--steps", "300", "--quiet"], ["stats.png", "histogram.png"], "Generator"),
    "mnist_mlp_gan.py": (["--max-steps", "2", "--batch-size", "32", "--quiet"], MNIST_FILES, "Generator"),
    "mnist_conv_gan.py": (["--max-steps", "2", "--batch-size", "32", "--quiet"], MNIST_FILES, "Generator"),
    "dcgan_celeba.py": (["--max-steps", "2", "--batch-size", "4", "--num-workers", "0", "--quiet"],
                        ["fake_epoch_001.png", "losses.png", "real_vs_fake.png", "checkpoint_last.pt"],
                        "Generator"),
}


@pytest.mark.parametrize("script", list(SHORT_RUNS))
def test_pasted_into_a_cell_main_takes_flags_writes_its_files_and_returns_the_generator(script, tmp_path):
    flags, files, returned = SHORT_RUNS[script]
    flags = flags + ["--out", str(tmp_path / "out")]
    if script.startswith("mnist"):
        flags += ["--data-root", str(tmp_path / "mnist")]  # offline: the bundled sample, found under data/
    result = run_cell(pasted(script, f"print('returned', type(main({flags!r})).__name__)"), tmp_path)
    assert_finished_quietly(result)
    assert f"returned {returned}" in result.stdout
    for name in files:
        assert (tmp_path / "out" / name).exists(), name
    assert_image(tmp_path / "out" / files[0])


def test_pasted_infer_returns_its_images_and_ignores_the_kernels_argv(tmp_path, generator_checkpoint):
    flags = ["--checkpoint", str(generator_checkpoint), "--out", str(tmp_path / "grid.png"),
             "--num-images", "4"]
    result = run_cell(pasted("infer.py", f"print('returned', tuple(main({flags!r}).shape))"), tmp_path)
    assert_finished_quietly(result)
    assert "returned (4, 3, 64, 64)" in result.stdout
    assert_image(tmp_path / "grid.png")
    # the unedited last line, main(): the kernel's `-f kernel.json` is not taken for flags
    result = run_cell(pasted("infer.py", "print('returned', main())"), tmp_path, cwd=tmp_path)
    assert_finished_quietly(result)
    assert "unrecognized arguments" not in result.stderr
    assert result.stderr.strip() == ("error: checkpoint runs/dcgan_celeba/checkpoint_last.pt does not exist "
                                     "(train one with `python dcgan_celeba.py` or pass --checkpoint)")
    assert "returned None" in result.stdout


@pytest.mark.parametrize("script, flags, message", [
    ("mnist_mlp_gan.py", ["--epochs", "0"], "error: argument --epochs: must be positive"),
    ("mnist_conv_gan.py", ["--batch-size", "-1"], "error: argument --batch-size: must be positive"),
    ("dcgan_celeba.py", ["--data-root", "/no/such"], "error: --data-root /no/such does not exist"),
    ("gaussian_gan.py", ["--steps", "0"], "error: argument --steps: must be positive"),
])
def test_bad_input_in_a_cell_prints_its_one_line_and_ends_the_cell(script, flags, message, tmp_path):
    flags = flags + ["--out", str(tmp_path / "out")]
    result = run_cell(pasted(script, f"print('returned', main({flags!r}))"), tmp_path)
    assert_finished_quietly(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "returned None" in result.stdout


@pytest.mark.parametrize("script", ["mnist_mlp_gan.py", "dcgan_celeba.py", "gaussian_gan.py"])
def test_interrupting_the_kernel_keeps_the_files_and_ends_the_cell_without_systemexit(script, tmp_path):
    flags, files, _ = SHORT_RUNS[script]
    flags = [f for f in flags if f not in ("--max-steps", "2", "--steps", "300")]
    flags += ["--out", str(tmp_path / "o")]
    flags += ["--epochs", "3"] if script != "gaussian_gan.py" else ["--steps", "5000"]
    if script == "mnist_mlp_gan.py":
        flags += ["--data-root", str(tmp_path / "mnist")]
    interrupt = """
train_step_as_written, calls = train_step, []


def train_step(*args, **kwargs):  # the kernel's interrupt button (a SIGINT), pressed during the third step
    calls.append(1)
    if len(calls) == 3:
        import signal
        signal.raise_signal(signal.SIGINT)
    return train_step_as_written(*args, **kwargs)
"""
    result = run_cell(pasted(script, f"main({flags!r})", before_guard=interrupt), tmp_path)
    assert_finished_quietly(result)
    assert_image(tmp_path / "o" / files[0])


def test_pasted_where_processes_spawn_images_are_decoded_in_the_kernel_with_one_line(tmp_path):
    from test_dcgan_celeba import faces
    faces(tmp_path / "faces", 4)
    flags = ["--max-steps", "1", "--batch-size", "2", "--num-workers", "2", "--quiet", "--data-root",
             str(tmp_path / "faces"), "--out", str(tmp_path / "o")]
    spawn = "import multiprocessing\nmultiprocessing.set_start_method('spawn', force=True)\n"  # as macOS
    result = run_cell(pasted("dcgan_celeba.py", f"main({flags!r})", before_guard=spawn), tmp_path)
    assert_finished_quietly(result)
    assert "decoding in this process: spawned workers cannot import code pasted into a notebook cell" in \
        result.stdout.splitlines()
    assert_image(tmp_path / "o" / "fake_epoch_001.png")


def test_in_a_real_jupyter_kernel_pasted_cells_and_percent_run_work_and_show_figures_inline(
        tmp_path, monkeypatch, generator_checkpoint):
    reason = "the notebook tests need a Jupyter kernel: pip install -r requirements-dev.txt"
    nbformat = pytest.importorskip("nbformat", reason=reason)
    nbclient = pytest.importorskip("nbclient", reason=reason)
    if importlib.util.find_spec("ipykernel") is None:  # found, not imported (see below)
        pytest.skip(reason)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as in Jupyter
    cells = {}
    for script, (flags, _, _) in SHORT_RUNS.items():
        flags = flags + ["--out", str(tmp_path / script)]
        if script.startswith("mnist"):
            flags += ["--data-root", str(tmp_path / "mnist")]
        cells[script] = pasted(script, f"main({flags!r})")
    cells["infer.py"] = pasted("infer.py", f"main(['--checkpoint', {str(generator_checkpoint)!r}, "
                                           f"'--out', {str(tmp_path / 'grid.png')!r}])")
    cells["%run"] = (f"%run mnist_conv_gan.py --max-steps 2 --quiet --data-root {tmp_path / 'mnist'} "
                     f"--out {tmp_path / 'percent_run'}")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells.values()])
    imported = set(sys.modules)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": ROOT}}).execute()
    for name in set(sys.modules) - imported:  # jupyter_client imports ipykernel.kernelspec for the kernel:
        if name.startswith("ipykernel"):  # left here, the scripts in later tests would think they run in one
            del sys.modules[name]
    for name, cell in zip(cells, notebook.cells):
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert not errors, (name, errors)
        images = [output for output in cell.outputs if "image/png" in output.get("data", {})]
        assert len(images) == (1 if name == "infer.py" else 2), f"{name}: {len(images)} figures shown inline"
    assert_image(tmp_path / "grid.png")
    assert_image(tmp_path / "percent_run" / "samples_epoch_001.png")
    for script in SHORT_RUNS:
        assert (tmp_path / script / SHORT_RUNS[script][1][0]).exists(), script
