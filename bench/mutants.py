"""Does the suite catch a broken script? Each promised behaviour, broken on purpose, one at a time.

    python bench/mutants.py                 # every break, about 10 minutes on 2 cores
    python bench/mutants.py --only resume   # the breaks whose name holds a word
    python bench/mutants.py --list          # the breaks, without running them

Each break replaces one exact piece of one script's text (a "mutant") in a copy of the repository
made for it in a temporary folder, then runs there the tests that promise to catch it. A break is
"caught" when those tests fail, "survived" when they pass (a hole in the suite), and "no longer
applies" when its text is not in the script any more (the script changed: update the break). Run by
hand, not in CI; it exits 1 if any break survived or no longer applies.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DC, MLP, CONV, GAUSS, INFER = (
    "dcgan_celeba.py",
    "mnist_mlp_gan.py",
    "mnist_conv_gan.py",
    "gaussian_gan.py",
    "infer.py",
)
T_DC, T_MNIST, T_GAUSS, T_INFER, T_LAYOUT = (
    "tests/test_dcgan_celeba.py",
    "tests/test_mnist_gans.py",
    "tests/test_gaussian_gan.py",
    "tests/test_infer.py",
    "tests/test_layout.py",
)

# (name, script, the text as it is, the text broken, (the test file, -k of the tests that catch it))
MUTANTS = [
    (
        "dcgan: --resume --lr X keeps the checkpoint's rate",
        DC,
        'group["lr"] = args.lr',
        "pass",
        (T_DC, "test_a_resumed_run_trains"),
    ),
    (
        "dcgan: a checkpoint written in place, not through a temporary file",
        DC,
        'torch.save(content, path + ".tmp")\n        os.replace(path + ".tmp", path)',
        "torch.save(content, path)",
        (T_DC, "test_a_full_disk_is_one"),
    ),
    (
        "dcgan: a failed save leaves its .tmp",
        DC,
        'os.remove(path + ".tmp")',
        "pass",
        (T_DC, "test_a_full_disk_is_one"),
    ),
    (
        "dcgan: D not in DDP (its gradients not averaged)",
        DC,
        "discriminator = DDP(gan.d_model, broadcast_buffers=False)",
        "discriminator = gan.d_model",
        (T_DC, "test_torchrun_averages"),
    ),
    (
        "dcgan: G not in DDP",
        DC,
        "generator = DDP(gan.g_model)",
        "generator = gan.g_model",
        (T_DC, "test_torchrun_averages"),
    ),
    (
        "dcgan: the stop is not agreed between processes",
        DC,
        "torch.distributed.all_reduce(flag, torch.distributed.ReduceOp.MAX, group=group)",
        "pass",
        (T_DC, "test_a_stop_signal_to"),
    ),
    (
        "dcgan: --tutorial-recipe ignored for D",
        DC,
        "d_model = Discriminator(tutorial=args.tutorial_recipe)",
        "d_model = Discriminator()",
        (T_DC, "test_each_part_of_the"),
    ),
    (
        "dcgan: --tutorial-recipe ignored for G",
        DC,
        "g_model = Generator(tutorial=args.tutorial_recipe)",
        "g_model = Generator()",
        (T_DC, "test_each_part_of_the"),
    ),
    (
        "dcgan: --tutorial-recipe keeps the average of G",
        DC,
        "ema_decay = 0.0 if args.tutorial_recipe else EMA_DECAY",
        "ema_decay = EMA_DECAY",
        (T_DC, "test_each_part_of_the"),
    ),
    (
        "dcgan: the tutorial's models not as printed (no BatchNorm before the Tanh)",
        DC,
        "if final_layer and not self.tutorial:",
        "if final_layer:",
        (T_DC, "test_tutorial_recipe"),
    ),
    (
        "dcgan: a missing --data-root quietly trains on the digits",
        DC,
        "    # The user named this folder: never swap in other data.\n    if args.data_root:",
        "    if False:",
        (T_DC, "test_given_data_root"),
    ),
    (
        "dcgan: --data-root '' is the default folder",
        DC,
        'if args.data_root == "":',
        "if False:",
        (T_DC, "test_an_empty_data_root"),
    ),
    (
        "dcgan: the RNG state not restored on resume",
        DC,
        'restore_rng(checkpoint["rng_states"][rank], device)',
        "pass",
        (T_DC, "test_ctrl_c_mid_epoch"),
    ),
    (
        "dcgan: the GPU's RNG state not saved",
        DC,
        "state[device.type] = getattr(torch, device.type).get_rng_state()",
        "pass",
        (T_DC, "test_the_gpus_rng_state"),
    ),
    (
        "dcgan: Ctrl-C ignored",
        DC,
        "        stop.set()\n",
        "        pass\n",
        (T_DC, "test_ctrl_c_mid_epoch"),
    ),
    (
        "dcgan: a second Ctrl-C waits for the step",
        DC,
        "            raise KeyboardInterrupt",
        "            pass",
        (T_DC, "test_a_second_ctrl_c"),
    ),
    (
        "dcgan: the images not cached",
        DC,
        "return ImageSet(images=cache_images(files, args))",
        "return ImageSet(files=files)",
        (T_DC, "test_cached_pixels_equal"),
    ),
    (
        "dcgan: a NaN found only at the epoch's end",
        DC,
        "    if len(epoch_losses) % every == 0 and not",
        "    if len(epoch_losses) % 10**9 == 0 and not",
        (T_DC, "test_a_nan_stops_the"),
    ),
    (
        "dcgan: the position counts a short last batch as full",
        DC,
        "samples_done = min(batches_done * args.batch_size, epoch_samples)",
        "samples_done = batches_done * args.batch_size",
        (T_DC, "test_the_position_counts"),
    ),
    (
        "dcgan: bf16 not used on a CPU with bf16 instructions",
        DC,
        "bf16 = on_cpu or on_cuda",
        "bf16 = on_cuda",
        (T_DC, "test_on_a_cpu_with_bf16"),
    ),
    (
        "dcgan: bf16 asked of a GPU that has none",
        DC,
        "and torch.cuda.is_bf16_supported()",
        "",
        (T_DC, "test_bf16_is_asked_of"),
    ),
    (
        "dcgan: workers counted from the machine's CPUs",
        DC,
        'cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")',
        "cpus = range(os.cpu_count()) if True",
        (T_DC, "test_workers_default"),
    ),
    (
        "dcgan: --out not checked before the data",
        DC,
        "    check_out(args.out)\n",
        "",
        (T_DC, "test_unwritable_out_exits"),
    ),
    (
        "dcgan: the grids drawn in train mode (batch statistics)",
        DC,
        "fake = gan.g_ema.eval()(fixed_noise).float()",
        "fake = gan.g_ema(fixed_noise).float()",
        (T_DC, "test_the_grids_are_drawn_with_batchnorms"),
    ),
    (
        "mlp: offline, it trains on blank images shaped like the sample",
        MLP,
        'return torch.from_numpy(sample["images"]), False',
        'return torch.zeros_like(torch.from_numpy(sample["images"])), False',
        (T_MNIST, "test_offline_it_trains"),
    ),
    (
        "conv: offline, it trains on blank images shaped like the sample",
        CONV,
        'return torch.from_numpy(sample["images"]), False',
        'return torch.zeros_like(torch.from_numpy(sample["images"])), False',
        (T_MNIST, "test_offline_it_trains"),
    ),
    (
        "mlp: offline is an error, not the sample",
        MLP,
        'print(f"MNIST download failed ({reason}); training on the bundled 5,000-digit sample")',
        "raise",
        (T_MNIST, "test_cli_smoke_run_writes"),
    ),
    (
        "conv: the grids from the last G, not the average",
        CONV,
        "shown = generator if args.tutorial_recipe else averaged.module",
        "shown = generator",
        (T_MNIST, "test_the_grids_and_generator"),
    ),
    (
        "mlp: --tutorial-recipe without the tutorial's betas",
        MLP,
        "betas = (0.9, 0.999) if args.tutorial_recipe else (0.5, 0.999)",
        "betas = (0.5, 0.999)",
        (T_MNIST, "test_each_part_of_the"),
    ),
    (
        "mlp: dropout set to 0",
        MLP,
        "self.dropout = nn.Dropout(0.3)",
        "self.dropout = nn.Dropout(0.0)",
        (T_MNIST, "test_mlp_dropout_drops"),
    ),
    (
        "mlp: the average of G without its warm-up",
        MLP,
        "return averaged.lerp(current, 1 - ((1 + steps) / (10 + steps)).clamp(max=0.999))",
        "return averaged.lerp(current, 1 - 0.999)",
        (T_MNIST, "test_the_average_of_g"),
    ),
    (
        "conv: the average of G without its warm-up",
        CONV,
        "return averaged.lerp(current, 1 - ((1 + steps) / (10 + steps)).clamp(max=0.995))",
        "return averaged.lerp(current, 1 - 0.995)",
        (T_MNIST, "test_the_average_of_g_warms"),
    ),
    (
        "conv: a failed save leaves its .tmp",
        CONV,
        'os.remove(path + ".tmp")',
        "pass",
        (T_MNIST, "test_a_full_disk_is_one"),
    ),
    (
        "mlp: bf16 not used on a CPU with bf16 instructions",
        MLP,
        "return torch.bfloat16 if fast_bf16 else None",
        "return None",
        (T_MNIST, "test_on_a_cpu_with_bf16"),
    ),
    (
        "conv: the tutorial's batch of 512 ignored",
        CONV,
        "args.batch_size = args.batch_size or (512 if args.tutorial_recipe else 64)",
        "args.batch_size = args.batch_size or 64",
        (T_MNIST, "test_defaults_are_the"),
    ),
    (
        "gaussian: --seed without its upper bound",
        GAUSS,
        "if not 0 <= args.seed < 2**32:",
        "if not 0 <= args.seed:",
        (T_LAYOUT, "test_every_training_script"),
    ),
    (
        "gaussian: --tutorial-recipe reports the average of G",
        GAUSS,
        "return (generator if tutorial else averaged.module), history, interrupted",
        "return averaged.module, history, interrupted",
        (T_GAUSS, "test_each_part_of_the"),
    ),
    (
        "gaussian: a NaN is not checked",
        GAUSS,
        "if not torch.stack([d_real, d_fake, g_err]).isfinite().all():",
        "if False:",
        (T_GAUSS, ""),
    ),
    (
        "infer: no eval(): an image depends on its batch-mates",
        INFER,
        "return generator.to(device).eval()",
        "return generator.to(device)",
        (T_INFER, "test_an_image_does_not"),
    ),
    (
        "infer: the walk sets every dimension, as the tutorial's code",
        INFER,
        "noise[:, z_index, 0, 0] = torch.linspace(-span, span, steps)",
        "noise[:] = torch.linspace(-span, span, steps).view(-1, 1, 1, 1)",
        (T_INFER, "test_walk_changes_only"),
    ),
    (
        "infer: prefixes left on the keys",
        INFER,
        "while key.startswith(PREFIXES):",
        "while False:",
        (T_INFER, "test_full_prefixed_and"),
    ),
    (
        "infer: the grids' average of G not preferred to the last G",
        INFER,
        'state_dict = checkpoint.get("g_ema_state_dict", state_dict)',
        "pass",
        (T_INFER, "test_the_average_of_g"),
    ),
    (
        "infer: a too-wide JPEG left to libjpeg",
        INFER,
        "if widest > MAX_SIDE.get(picture_format, widest):",
        "if False:",
        (T_INFER, "test_a_jpeg_too_wide"),
    ),
]


def copy_repository(folder):
    """The scripts, tests, bundled data and pytest's settings: what the tests read."""
    for name in os.listdir(ROOT):
        if name.endswith(".py") or name in ("pytest.ini", "ruff.toml"):
            shutil.copy(os.path.join(ROOT, name), folder)
    shutil.copytree(os.path.join(ROOT, "tests"), os.path.join(folder, "tests"))
    os.makedirs(os.path.join(folder, "data"))
    for name in os.listdir(os.path.join(ROOT, "data")):
        if name.endswith(".npz"):
            shutil.copy(os.path.join(ROOT, "data", name), os.path.join(folder, "data"))


def run_mutant(script, before, after, tests, timeout):
    """'caught', 'survived' or 'no longer applies', and the seconds its tests took."""
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        source = f.read()
    if source.count(before) != 1:
        return "no longer applies", 0.0
    with tempfile.TemporaryDirectory(prefix="mutant_") as folder:
        copy_repository(folder)
        with open(os.path.join(folder, script), "w", encoding="utf-8") as f:
            f.write(source.replace(before, after))
        test_file, keyword = tests
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test_file]
        command += ["-k", keyword] if keyword else []
        started = time.monotonic()
        try:
            # its own process group: a test's child processes end with it
            result = subprocess.run(
                command, cwd=folder, capture_output=True, timeout=timeout, start_new_session=True
            )
            caught = result.returncode != 0
        except subprocess.TimeoutExpired:
            # a test that hangs on a break catches it, slowly
            caught = True
        seconds = time.monotonic() - started
    return ("caught" if caught else "survived"), seconds


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", help="run the breaks whose name holds this text")
    p.add_argument("--list", action="store_true", help="list the breaks and stop")
    p.add_argument("--timeout", type=int, default=600, help="seconds for one break's tests")
    args = p.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or args.only in m[0]]
    if args.list:
        for name, script, *_ in mutants:
            print(f"{script:18} {name}")
        return 0
    started = time.monotonic()
    results = []
    for name, script, before, after, tests in mutants:
        outcome, seconds = run_mutant(script, before, after, tests, args.timeout)
        results.append(outcome)
        print(f"{outcome:>17}  {seconds:6.1f} s  {name}", flush=True)
    minutes = (time.monotonic() - started) / 60
    counts = {outcome: results.count(outcome) for outcome in sorted(set(results))}
    print(f"{len(results)} breaks in {minutes:.1f} minutes: {counts}")
    return 0 if counts.get("caught", 0) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
