"""Speed of our training iterations against the tutorials' loops as printed, side by side.

    python bench/speed.py                 # CPU: tutorial batch sizes, 5 timed repeats each
    python bench/speed.py --quick         # small batches, 2 repeats: a smoke run
    python bench/speed.py --device cuda   # GPU: the train steps in fp32, bf16 autocast and compiled

For each image script it builds the same models and the same real batch, then alternates
(tutorial, ours, tutorial, ours, ...) after a warm-up, so machine noise hits both alike, and
reports the median images/s of each and their ratio, for our step in fp32 and under bf16 autocast
(and, on CUDA, the DCGAN's step compiled). Each of our steps' achieved GFLOP/s (FlopCounterMode) is
set against a large matmul of the same precision on the same device: the most that precision gives.
On the CPU it also times one pass over the bundled MNIST sample through our in-memory data path
against torchvision's per-image ToTensor DataLoader, and a whole MNIST epoch over the sample (data
loading and training, as the tutorials run it, against ours). `--only batch` times the DCGAN's own
step at batch 128, 64 and 32 side by side: a run's images per second at each.
"""

import argparse
import inspect
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dcgan_celeba  # noqa: E402
import mnist_conv_gan  # noqa: E402
import mnist_mlp_gan  # noqa: E402

# what an AVX2 CPU without AVX-512 runs, on a CPU that has more
AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
SAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mnist_sample.npz"
)


# ---- the tutorials' iterations, as printed (undefined names filled in, tensors made on the batch's
# device)
def tutorial_mlp_step(G, D, G_optimizer, D_optimizer, x, criterion=nn.BCELoss(), z_dim=100):
    bs = len(x)
    # D_train
    D.zero_grad()
    x_real, y_real = x.view(-1, 784), torch.ones(bs, 1, device=x.device)
    D_real_loss = criterion(D(x_real), y_real)
    z = torch.randn(bs, z_dim, device=x.device)
    # not detached: D's backward also runs through G
    x_fake, y_fake = G(z), torch.zeros(bs, 1, device=x.device)
    D_fake_loss = criterion(D(x_fake), y_fake)
    (D_real_loss + D_fake_loss).backward()
    D_optimizer.step()
    # G_train: a second noise batch and generator pass
    G.zero_grad()
    z, y = torch.randn(bs, z_dim, device=x.device), torch.ones(bs, 1, device=x.device)
    G_loss = criterion(D(G(z)), y)
    G_loss.backward()
    G_optimizer.step()


def tutorial_conv_step(
    gen, disc, gen_opt, disc_opt, real_images, Loss=nn.BCEWithLogitsLoss(), latent_dim=100
):
    num_images = len(real_images)
    disc_opt.zero_grad()
    img_gen = gen(torch.randn(num_images, latent_dim, device=real_images.device)).detach()
    disc_gen, disc_real = disc(img_gen), disc(real_images)
    D_loss = (
        (Loss(disc_gen, torch.zeros_like(disc_gen)) + Loss(disc_real, torch.ones_like(disc_real)))
        / 2
    ).mean()
    D_loss.backward(retain_graph=True)
    disc_opt.step()
    gen_opt.zero_grad()
    disc_gen = disc(gen(torch.randn(num_images, latent_dim, device=real_images.device)))
    G_loss = Loss(disc_gen, torch.ones_like(disc_gen))
    G_loss.backward(retain_graph=True)
    gen_opt.step()


def tutorial_dcgan_step(
    gen, disc, gen_optimizer, disc_optimizer, real, criterion=nn.BCEWithLogitsLoss(), z_dim=100
):
    cur_batch_size = len(real)
    disc_optimizer.zero_grad()
    fake_images = gen(torch.randn(cur_batch_size, z_dim, 1, 1, device=real.device))
    logits_fake, logits_real = disc(fake_images.detach()), disc(real)
    disc_loss = (
        criterion(logits_fake, torch.zeros_like(logits_fake))
        + criterion(logits_real, torch.ones_like(logits_real))
    ) / 2
    disc_loss.backward(retain_graph=True)
    disc_optimizer.step()
    gen_optimizer.zero_grad()
    logits_fake = disc(gen(torch.randn(cur_batch_size, z_dim, 1, 1, device=real.device)))
    gen_loss = criterion(logits_fake, torch.ones_like(logits_fake))
    gen_loss.backward()
    gen_optimizer.step()


def setup(make_models, channels_last, device="cpu"):
    g, d = make_models()
    g, d = g.to(device), d.to(device)
    if channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    return (
        g,
        d,
        torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999)),
        torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999)),
    )


def interleaved(fns, repeats, calls=1):
    """Median seconds of `calls` calls of each callable, alternating them after one warm-up call
    each."""

    def timed(fn):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if torch.cuda.is_available():
            # a GPU runs behind Python: wait for the work, not its launch
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / calls

    for fn in fns:
        timed(fn)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i].append(timed(fn))
    return [statistics.median(t) for t in times]


def row(name, n_images, seconds_tutorial, seconds_ours):
    a, b = n_images / seconds_tutorial, n_images / seconds_ours
    print(f"{name:<34} {a:>12.1f} {b:>12.1f} {b / a:>7.2f}x")


def matmul_rates(device, n, repeats, bf16=True):
    """GFLOP/s of an n x n matmul in fp32 and in bf16 on `device`: the ceiling each precision can
    reach."""
    rates = {torch.bfloat16: float("nan")}
    for dtype in (torch.float32, torch.bfloat16) if bf16 else (torch.float32,):
        a, b = (
            torch.randn(n, n, device=device, dtype=dtype),
            torch.randn(n, n, device=device, dtype=dtype),
        )
        (seconds,) = interleaved([lambda: a @ b], repeats, calls=10 if device != "cpu" else 1)
        rates[dtype] = 2 * n**3 / seconds / 1e9
    return rates


def bench_steps(quick, repeats, device, only=None, compile_rows=True):
    """Each image script's train_step: the tutorial's loop, then ours in fp32, bf16 autocast,
    compiled."""
    images = torch.from_numpy(np.load(SAMPLE)["images"])
    # uint8, 1 x 64 x 64
    digits = dcgan_celeba.make_dataset(dcgan_celeba.parse_args(["--quiet"])).images
    cases = [
        (
            "mnist_mlp_gan",
            mnist_mlp_gan,
            lambda: (mnist_mlp_gan.Generator(), mnist_mlp_gan.Discriminator()),
            tutorial_mlp_step,
            128,
            False,
            lambda b: next(mnist_mlp_gan.batches(images, b, "cpu")),
        ),
        (
            "mnist_conv_gan",
            mnist_conv_gan,
            lambda: (mnist_conv_gan.Generator(100, 1), mnist_conv_gan.Discriminator(1)),
            tutorial_conv_step,
            128 if quick else 512,
            True,
            lambda b: next(mnist_conv_gan.batches(images, b, "cpu")),
        ),
        (
            "dcgan_celeba",
            dcgan_celeba,
            lambda: (dcgan_celeba.Generator(), dcgan_celeba.Discriminator()),
            tutorial_dcgan_step,
            16 if quick else 128,
            True,
            lambda b: digits[:b].float().div(127.5).sub(1.0).expand(-1, 3, -1, -1).contiguous(),
        ),
    ]
    # as the scripts decide on their default; under AVX2 kernels, as an AVX2 CPU would
    fast_bf16 = dcgan_celeba.cpu_has_fast_bf16() and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2"
    matmul = matmul_rates(
        device,
        1024 if quick else 4096 if device == "cpu" else 8192,
        repeats,
        device != "cpu" or fast_bf16,
    )
    bf16_rate = matmul[torch.bfloat16]
    print(
        f"\nmatmul ceiling on {device}: fp32 {matmul[torch.float32]:.0f} GFLOP/s, "
        f"bf16 {'not timed' if np.isnan(bf16_rate) else f'{bf16_rate:.0f} GFLOP/s'}"
    )
    print(
        f"{'train step (images per second)':<40} {'tutorial/s':>12} {'ours/s':>12} {'ratio':>8}"
        f" {'GFLOP/s':>9} {'of matmul':>10}"
    )
    # a GPU step takes milliseconds: time 20 in a row
    calls = 1 if device == "cpu" else 20
    if device == "cpu" and not fast_bf16:
        print(
            "bf16 autocast: not timed, this CPU has no bf16 instructions"
            " (the scripts train in fp32 here)"
        )
    for name, script, make, tutorial_step, batch, channels_last, make_batch in cases:
        if only and name not in only:
            continue
        real = make_batch(batch).to(device)
        ours_real = real.contiguous(memory_format=torch.channels_last) if channels_last else real
        # the tutorials use the default memory layout
        theirs = setup(make, False, device)
        variants = [("fp32", setup(make, channels_last, device), None, ours_real)]
        # elsewhere bf16 is emulated, many times slower, and never used
        if device != "cpu" or fast_bf16:
            variants.append(
                ("bf16 autocast", setup(make, channels_last, device), torch.bfloat16, ours_real)
            )
        # the layouts, and --compile (the default layout)
        if device != "cpu" and script is dcgan_celeba:
            variants += [
                ("fp32 contiguous", setup(make, False, device), None, real),
                ("bf16 contiguous", setup(make, False, device), torch.bfloat16, real),
            ]
            compiled = (
                ("compiled fp32", None, None),
                # with CUDA graphs
                ("compiled fp32 reduce-overhead", None, "reduce-overhead"),
            )
            for label, dtype, mode in compiled if compile_rows else ():
                g, d, g_opt, d_opt = setup(make, False, device)
                models = (torch.compile(g, mode=mode), torch.compile(d, mode=mode), g_opt, d_opt)
                variants.append((label, models, dtype, real))
        with FlopCounterMode(display=False) as counter:
            script.train_step(*variants[0][1], ours_real)
        flops = counter.get_total_flops()
        # the script's own --amp
        own_amp = "amp_dtype" in inspect.signature(script.train_step).parameters
        for label, models, dtype, batch_in in variants:

            def ours(models=models, dtype=dtype, batch_in=batch_in):
                if own_amp:
                    return script.train_step(*models, batch_in, amp_dtype=dtype)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype is not None):
                    return script.train_step(*models, batch_in)

            try:
                t_tutorial, t_ours = interleaved(
                    [lambda: tutorial_step(*theirs, real), ours], repeats, calls
                )
            # BCELoss after a sigmoid, which CUDA autocast refuses; compile errors
            except Exception as error:
                print(
                    f"{name} {label} (batch {batch}): not run ({str(error).splitlines()[0][:60]})"
                )
                continue
            rate = flops / t_ours / 1e9
            row = f"{name} {label} (batch {batch})"
            share = rate / matmul[dtype or torch.float32]
            print(
                f"{row:<40} {batch / t_tutorial:>12.1f} {batch / t_ours:>12.1f}"
                f" {t_tutorial / t_ours:>7.2f}x {rate:>9.1f} {share:>9.0%}"
            )
    print(
        "GFLOP/s: our step's FLOPs (FlopCounterMode) per second;"
        " of matmul: against the ceiling above"
    )


def bench_layouts(quick, repeats, device):
    """The DCGAN's fp32 step at batch 64 with its models and batch in channels_last (as the script
    builds them) and in the default layout, interleaved: which the CPU's kernels run faster."""
    batch = 16 if quick else 64
    real = torch.rand(batch, 3, 64, 64, device=device) * 2 - 1
    steps = []
    for channels_last in (True, False):
        models = setup(
            lambda: (dcgan_celeba.Generator(), dcgan_celeba.Discriminator()), channels_last, device
        )
        layout = torch.channels_last if channels_last else torch.contiguous_format
        steps.append(
            lambda m=models, r=real.contiguous(memory_format=layout): dcgan_celeba.train_step(*m, r)
        )
    seconds = interleaved(steps, repeats)
    print(
        f"\n{'the DCGAN fp32 step, batch ' + str(batch):<40} {'seconds':>12} {'of the first':>12}"
    )
    for label, t in zip(("channels_last (the script's)", "default layout"), seconds):
        print(f"  {label:<38} {t:>12.3f} {t / seconds[0]:>11.2f}x")


def bench_batches(quick, repeats, device):
    """The DCGAN's step and its average of G at batch 128, 64 and 32, interleaved, in fp32 and in
    the bf16 the script picks: a 20-epoch run is the same images in fewer or more of these steps,
    and nothing else in it (grids, checkpoints) depends on the batch."""
    sizes = (32, 16) if quick else (128, 64, 32)
    args = dcgan_celeba.parse_args(["--quiet"])
    digits = dcgan_celeba.make_dataset(args).images
    # as the script decides; under AVX2 kernels, as an AVX2 CPU would
    avx2 = os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2"
    bf16 = device != "cpu" or (dcgan_celeba.cpu_has_fast_bf16() and not avx2)
    calls = 1 if device == "cpu" else 20
    print(f"\n{'the DCGAN step and its average of G':<40} {'images/s':>12} {'of the first':>12}")
    for dtype in (None, torch.bfloat16) if bf16 else (None,):
        steps = []
        for batch in sizes:
            gan = dcgan_celeba.build_gan(args, torch.device(device))
            real = dcgan_celeba.to_real(digits[:batch], device)
            models = (gan.g_model, gan.d_model, gan.g_optimizer, gan.d_optimizer)

            def step(models=models, real=real, gan=gan, dtype=dtype):
                dcgan_celeba.train_step(*models, real, amp_dtype=dtype)
                dcgan_celeba.update_average(gan.g_ema, gan.g_model, 1000, gan.ema_decay)

            steps.append(step)
        seconds = interleaved(steps, repeats, calls)
        for batch, t in zip(sizes, seconds):
            label = f"  batch {batch}, {'bf16 autocast' if dtype else 'fp32'}"
            print(f"{label:<40} {batch / t:>12.1f} {batch * seconds[0] / (sizes[0] * t):>11.2f}x")


class PerImage(torch.utils.data.Dataset):
    """What datasets.MNIST does per item: a PIL image through the tutorial's transform."""

    def __init__(self, images_np, transform):
        self.images_np, self.transform = images_np, transform

    def __len__(self):
        return len(self.images_np)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images_np[i], mode="L")), 0


def tutorial_loader(images_np, batch_size, normalize):
    import torchvision.transforms as T

    # the MLP tutorial: ToTensor + Normalize(0.5, 0.5); the conv tutorial: ToTensor alone
    transform = (
        T.Compose([T.ToTensor(), T.Normalize(mean=(0.5,), std=(0.5,))])
        if normalize
        else T.ToTensor()
    )
    return torch.utils.data.DataLoader(
        PerImage(images_np, transform), batch_size=batch_size, shuffle=True
    )


def bench_data(quick, repeats):
    images_np = np.load(SAMPLE)["images"][: 1024 if quick else None]
    images = torch.from_numpy(images_np)
    loader = tutorial_loader(images_np, 128, normalize=True)
    ours = lambda: sum(len(x) for x in mnist_mlp_gan.batches(images, 128, "cpu"))  # noqa: E731
    t_tutorial, t_ours = interleaved([lambda: sum(len(x) for x, _ in loader), ours], repeats)
    row(f"MNIST data pass ({len(images):,} img)", len(images), t_tutorial, t_ours)


def bench_epochs(quick, repeats):
    """A whole epoch, as a learner waits for it: the tutorial's per-image loader feeding its loop
    as printed, against our in-memory batches feeding our train_step, over the same digits."""
    images_np = np.load(SAMPLE)["images"][: 256 if quick else None]
    images = torch.from_numpy(images_np)
    cases = [
        (
            "mnist_mlp_gan",
            mnist_mlp_gan,
            lambda: (mnist_mlp_gan.Generator(), mnist_mlp_gan.Discriminator()),
            tutorial_mlp_step,
            128,
            True,
            False,
        ),
        (
            "mnist_conv_gan",
            mnist_conv_gan,
            lambda: (mnist_conv_gan.Generator(100, 1), mnist_conv_gan.Discriminator(1)),
            tutorial_conv_step,
            128 if quick else 512,
            False,
            True,
        ),
    ]
    for name, script, make, tutorial_step, batch, drop_short, channels_last in cases:
        loader = tutorial_loader(images_np, batch, normalize=script is mnist_mlp_gan)
        theirs, ours = setup(make, False), setup(make, channels_last)

        def tutorial_epoch():
            for x, _ in loader:
                # the MLP tutorial's `if(len(x) != bs): continue`
                if drop_short and len(x) != batch:
                    continue
                tutorial_step(*theirs, x)

        def our_epoch():
            for real in script.batches(images, batch, "cpu"):
                script.train_step(*ours, real)

        t_tutorial, t_ours = interleaved([tutorial_epoch, our_epoch], repeats)
        row(f"{name} epoch ({len(images):,} img)", len(images), t_tutorial, t_ours)


def make_celeba_like(folder, n, start=0):
    """n JPEGs of 178x218 (CelebA's img_align_celeba size): bundled digits, coloured, noisy,
    numbered from `start`; real JPEG decoding work without the 1.4 GB download."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    images = np.load(SAMPLE)["images"]
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        digit = np.asarray(
            Image.fromarray(images[i % len(images)]).resize((178, 218)), dtype=np.float32
        )
        colour = rng.uniform(0.3, 1.0, 3) * digit[..., None] + rng.uniform(0, 80, 3)
        pixels = np.clip(colour + rng.normal(0, 12, colour.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i + 1:06d}.jpg"), quality=90)


def bench_loader(quick, repeats, device, workers=(2,), folder=None):
    """A CelebA-shaped folder: images/s of an epoch that decodes every JPEG (with each number of
    `workers`; 2: Colab's 2 cores) against one that indexes the decoded uint8 cache, beside the
    DCGAN step's images/s."""
    import tempfile

    n = 256 if quick else 4096
    with tempfile.TemporaryDirectory() as scratch:
        folder = folder or os.path.join(scratch, "img_align_celeba")
        if not os.path.isdir(folder):
            make_celeba_like(folder, n)
        args = dcgan_celeba.parse_args(
            ["--data-root", folder, "--num-workers", "2", "--quiet", "--cache"]
        )
        cache = dcgan_celeba.make_dataset(args).images
        paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
        n = len(paths)

        def decoding_epoch(num_workers):
            order = torch.randperm(n).split(128)
            loader = torch.utils.data.DataLoader(
                paths,
                batch_sampler=order,
                num_workers=num_workers,
                collate_fn=dcgan_celeba.load_images,
            )
            for batch in loader:
                batch.to(device).float()

        gpu_cache = cache.to(device)

        # the script's cached epoch: its order copied to the device once, then indexed there
        def cached_epoch():
            for batch in dcgan_celeba.epoch_batches(
                dcgan_celeba.ImageSet(gpu_cache), 128, args, 1, 0
            ):
                dcgan_celeba.to_real(batch, device)

        # as before: each step's indices copied from the host, so the GPU waits for it
        def per_step_copy_epoch():
            for indices in torch.randperm(n).split(128):
                dcgan_celeba.to_real(gpu_cache[indices.to(device)], device)

        epochs = [lambda w=w: decoding_epoch(w) for w in workers]
        epochs += [cached_epoch, per_step_copy_epoch]
        *t_decode, t_cached, t_per_step = interleaved(epochs, max(1, repeats // 2))
    g, d, g_opt, d_opt = setup(
        lambda: (dcgan_celeba.Generator(), dcgan_celeba.Discriminator()), True, device
    )
    batch = 16 if quick else 128
    real = (
        gpu_cache[:batch].float().div(127.5).sub(1.0).contiguous(memory_format=torch.channels_last)
    )
    (t_step,) = interleaved(
        [lambda: dcgan_celeba.train_step(g, d, g_opt, d_opt, real)],
        repeats,
        calls=1 if device == "cpu" else 20,
    )
    print(f"\nCelebA-shaped folder, {n:,} JPEGs of 178x218 on {device} (images per second):")
    for w, t in zip(workers, t_decode):
        print(f"  an epoch decoding every JPEG ({w:>2} workers) {n / t:>9,.0f}")
    print(f"  an epoch indexing the uint8 cache, indices copied each step {n / t_per_step:>10,.0f}")
    print(
        f"  an epoch indexing the uint8 cache        {n / t_cached:>10,.0f}   "
        f"{min(t_decode) / t_cached:,.0f}x the fastest decoding, "
        f"{t_per_step / t_cached:.2f}x indices copied each step"
    )
    print(f"  the DCGAN train step, batch {batch}, fp32 {batch / t_step:>14,.0f}")


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="small batches, a few hundred images, 2 repeats"
    )
    p.add_argument(
        "--repeats", type=int, help="timed repeats of each side (default 5, or 2 with --quick)"
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the train steps only"
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=["mnist_mlp_gan", "mnist_conv_gan", "dcgan_celeba", "loader", "batch", "layout"],
        help="these scripts' train steps, the CelebA-shaped loader row, the DCGAN at 3 batches",
    )
    p.add_argument(
        "--workers", type=int, nargs="+", default=[2], help="loader row: worker counts to try"
    )
    p.add_argument(
        "--no-compile", action="store_true", help="on CUDA, skip the compiled rows (minutes)"
    )
    p.add_argument(
        "--kernels",
        action="store_true",
        help="the DCGAN's step on AVX2 kernels, then on this CPU's own, each against its matmul",
    )
    p.add_argument(
        "--make-celeba", nargs=2, metavar=("FOLDER", "N"), help="write N CelebA-like JPEGs, stop"
    )
    args = p.parse_args(argv)
    if args.make_celeba:
        from multiprocessing import Pool

        folder, n = args.make_celeba[0], int(args.make_celeba[1])
        chunks = [(folder, min(1000, n - start), start) for start in range(0, n, 1000)]
        with Pool() as pool:
            pool.starmap(make_celeba_like, chunks)
        return
    repeats = args.repeats or (2 if args.quick else 5)
    if args.kernels:
        # each in a process of its own: the kernels are chosen when torch starts
        for label, env in (("AVX2 kernels", AVX2), ("this CPU's own kernels", {})):
            print(f"\n== {label} {env or ''}", flush=True)
            command = [
                sys.executable,
                __file__,
                "--only",
                "dcgan_celeba",
                "--repeats",
                str(repeats),
            ]
            command += ["--quick"] if args.quick else []
            subprocess.run(command, env={**os.environ, **env}, check=True)
        return
    torch.manual_seed(0)
    where = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(
        f"torch {torch.__version__}, {where}, {os.cpu_count()} CPUs; "
        f"median of {repeats} interleaved repeats after a warm-up"
    )
    if args.device == "cpu" and not args.only:
        print(f"{'':<34} {'tutorial/s':>12} {'ours/s':>12} {'ratio':>8}")
        bench_data(args.quick, repeats)
        bench_epochs(args.quick, repeats)
    if not args.only or "loader" in args.only:
        bench_loader(args.quick, repeats, args.device, args.workers)
    if not args.only or "batch" in args.only:
        bench_batches(args.quick, repeats, args.device)
    if not args.only or "layout" in args.only:
        bench_layouts(args.quick, repeats, args.device)
    if not args.only or {"mnist_mlp_gan", "mnist_conv_gan", "dcgan_celeba"} & set(args.only):
        bench_steps(args.quick, repeats, args.device, args.only, not args.no_compile)


if __name__ == "__main__":
    main()
