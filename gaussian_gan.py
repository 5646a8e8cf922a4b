"""Learn N(4, 1.25) from uniform noise, after Dev Nag's "GANs in 50 lines of code (PyTorch)" (Medium):
https://medium.com/@devnag/generative-adversarial-networks-gans-in-50-lines-of-code-pytorch-e81b79659e3f

    python gaussian_gan.py                    # 30,000 steps on one CPU thread: 40 s to 100 s
"""
import argparse
import os
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

DATA_MEAN, DATA_STDDEV = 4.0, 1.25


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30000, help="iterations, each on fresh batches")
    p.add_argument("--batch-size", type=int, default=100, help="samples in a minibatch D sees as one vector")
    p.add_argument("--lr", type=float, help="G's Adam learning rate (default 1e-3; tutorial 2e-4)")
    p.add_argument("--d-lr", type=float, help="D's Adam learning rate (default 1e-4; tutorial 2e-4)")
    p.add_argument("--seed", type=int, default=0, help="seeds torch (0 to 2**32 - 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="cpu",
                   help="cpu by default: these 50-unit layers gain nothing on a GPU")
    p.add_argument("--out", default="runs/gaussian_gan", help="folder for stats.png and histogram.png")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--print-interval", type=int, default=200, help="steps between printed lines")
    p.add_argument("--tutorial-recipe", action="store_true", help="exactly the tutorial's training")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-interval lines")
    p.add_argument("--show", action="store_true", help="also open the figures in a window")
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, no usage dump
    args = p.parse_args(argv)
    for flag in ("steps", "batch_size", "lr", "d_lr", "max_steps", "print_interval"):
        if getattr(args, flag) is not None and not 0 < getattr(args, flag) < float("inf"):
            p.error(f"argument --{flag.replace('_', '-')}: must be positive, got {getattr(args, flag)}")
    if not (args.batch_size <= 10000 and 0 <= args.seed < 2**32):  # D's first layer: 2 x batch-size inputs
        p.error(f"--batch-size must be at most 10000, --seed 0 to 2**32 - 1 ({args.batch_size}, {args.seed})")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if args.device == "auto":
        args.device = next(name for name in ("cuda", "mps", "cpu") if available[name])
    if not available[args.device]:
        p.error(f"--device {args.device}: {args.device.upper()} is not available; use --device cpu or auto")
    try:  # now, not after 30,000 steps
        os.makedirs(args.out, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as error:
        what = f"cannot be written ({error.strerror})"
        what = "is a file, not a folder" if os.path.isfile(args.out) else what
        p.error(f"--out {args.out} {what}; give a folder you can write to")
    return args


def real_batch(num_sets, batch_size, device="cpu"):
    return torch.randn(num_sets, batch_size, device=device) * DATA_STDDEV + DATA_MEAN


def noise_batch(num_sets, batch_size, device="cpu"):  # uniform: G must reshape it, not shift and scale
    return torch.rand(num_sets * batch_size, 1, device=device)


class Generator(nn.Module):
    def __init__(self, input_size=1, hidden_size=50, output_size=1):
        super().__init__()
        self.map1 = nn.Linear(input_size, hidden_size)
        self.map2 = nn.Linear(hidden_size, hidden_size)
        self.map3 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        x = F.elu(self.map1(x))
        x = torch.sigmoid(self.map2(x))
        return self.map3(x)


class Discriminator(nn.Module):
    def __init__(self, input_size=200, hidden_size=50, output_size=1):
        super().__init__()
        self.map1 = nn.Linear(input_size, hidden_size)
        self.map2 = nn.Linear(hidden_size, hidden_size)
        self.map3 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        x = F.elu(self.map1(x))
        x = F.elu(self.map2(x))
        return torch.sigmoid(self.map3(x))


def decorate_with_diffs(data, exponent=2.0):
    """(sets, n) -> (sets, 2n): each sample, then its deviation from its set's mean, to the exponent."""
    mean = data.mean(dim=1, keepdim=True).detach()  # tutorial: `data.data`, i.e. no gradient through the mean
    return torch.cat([data, (data - mean) ** exponent], dim=1)


def train_step(generator, discriminator, g_optimizer, d_optimizer, real, noise, g_noise=None):
    """D's then G's update on real (sets, n) and noise (sets * n, 1); G reuses `fake` unless given g_noise."""
    sets = real.shape[0]
    ones, zeros = real.new_ones(sets, 1), real.new_zeros(sets, 1)  # tutorial: shape (1,), crashes
    fake = generator(noise).view(sets, -1)
    # (1) Update D: maximize log D(x) + log(1 - D(G(z))); real and fake go through D in one pass
    d_optimizer.zero_grad()
    decisions = discriminator(decorate_with_diffs(torch.cat([real, fake.detach()])))
    errors = F.binary_cross_entropy(decisions, torch.cat([ones, zeros]), reduction="none")
    d_real_error, d_fake_error = errors[:sets].mean(), errors[sets:].mean()
    (d_real_error + d_fake_error).backward()
    d_optimizer.step()
    # (2) Update G: maximize log D(G(z)); D's gradients are computed but D is not stepped
    g_optimizer.zero_grad()
    if g_noise is not None:
        fake = generator(g_noise).view(sets, -1)
    g_error = F.binary_cross_entropy(discriminator(decorate_with_diffs(fake)), ones)
    g_error.backward()
    g_optimizer.step()
    return d_real_error.detach(), d_fake_error.detach(), g_error.detach(), fake.detach()


def train(args, device):
    betas = (0.9, 0.999) if args.tutorial_recipe else (0.5, 0.999)  # tutorial: 0.9, with which G overshoots
    num_sets = 1 if args.tutorial_recipe else 4  # tutorial: 1 minibatch per D step; its gradient is too noisy
    generator = Generator().to(device)
    discriminator = Discriminator(input_size=2 * args.batch_size).to(device)
    # tutorial: 2e-4 for both, and G can sit collapsed near 0 for 15,000 steps; 10x faster, it escapes
    g_lr = args.lr or (2e-4 if args.tutorial_recipe else 1e-3)
    d_lr = args.d_lr or (2e-4 if args.tutorial_recipe else 1e-4)
    # fused=True: one kernel per step for all parameters; at this size Python overhead is the cost
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=g_lr, betas=betas, fused=True)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=d_lr, betas=betas, fused=True)
    # tutorial: reports the last G; an exponential moving average of G's weights damps its late swings
    averaged = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    steps = min(args.steps, args.max_steps or args.steps)
    history, interrupted = [], False  # history: (step, fake mean, fake std)
    bar = tqdm(range(steps), disable=args.quiet, mininterval=1.0)
    try:
        for step in bar:
            real = real_batch(num_sets, args.batch_size, device)
            noise = noise_batch(num_sets, args.batch_size, device)
            g_noise = noise_batch(num_sets, args.batch_size, device) if args.tutorial_recipe else None
            d_real, d_fake, g_err, fake = train_step(generator, discriminator, g_optimizer, d_optimizer,
                                                     real, noise, g_noise)
            averaged.update_parameters(generator)
            if step % args.print_interval == 0 or step == steps - 1:
                r, f = real[0].cpu().numpy(), fake[0].cpu().numpy()
                history.append((step, float(f.mean()), float(f.std())))
                if not args.quiet:  # the tutorial's line
                    tqdm.write(f"{step}: D: {d_real.item():.4f}/{d_fake.item():.4f} G: {g_err.item():.4f} "
                               f"(Real: [{r.mean():.3f}, {r.std():.3f}], "
                               f"Fake: [{f.mean():.3f}, {f.std():.3f}])")
    except KeyboardInterrupt:  # Ctrl-C, or a notebook's interrupt: the plots show what was learned so far
        interrupted = True
    return (generator if args.tutorial_recipe else averaged.module), history, interrupted


def ks_distance(samples):  # Kolmogorov-Smirnov: the largest gap between the samples' CDF and N(4, 1.25)
    x, n = np.sort(samples), len(samples)
    cdf = 0.5 * (1.0 + torch.erf(torch.from_numpy((x - DATA_MEAN) / (DATA_STDDEV * np.sqrt(2.0)))).numpy())
    return float(max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max()))


def save_plots(history, samples, out, show=False):
    steps, means, stds = zip(*history) if history else ((), (), ())  # none if stopped at once
    fig, (ax_mean, ax_std) = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, values, target, name in ((ax_mean, means, DATA_MEAN, "mean"), (ax_std, stds, DATA_STDDEV, "std")):
        ax.plot(steps, values, label=f"generated {name}")
        ax.axhline(target, color="k", linestyle="--", label=f"target {target}")
        ax.set(xlabel="step", title=f"generated {name} over training")
        ax.legend()
    fig.savefig(os.path.join(out, "stats.png"), dpi=100, bbox_inches="tight")
    fig2, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(DATA_MEAN - 5 * DATA_STDDEV, DATA_MEAN + 5 * DATA_STDDEV, 80)
    ax.hist(real_batch(1, len(samples)).flatten().numpy(), bins=bins, density=True, alpha=0.5, label="real")
    ax.hist(samples, bins=bins, density=True, alpha=0.5, label="generated")
    density = np.exp(-0.5 * ((bins - DATA_MEAN) / DATA_STDDEV) ** 2) / (DATA_STDDEV * np.sqrt(2 * np.pi))
    ax.plot(bins, density, "k", label="N(4, 1.25)")
    ax.set_title("final generator vs target")
    ax.legend()
    fig2.savefig(os.path.join(out, "histogram.png"), dpi=100, bbox_inches="tight")
    if show:
        plt.show()
    plt.close("all")


def main(argv=None):  # the command line's entry, and a notebook's: main(["--steps", "5000"]) returns G
    try:  # pasted into a notebook cell (no __file__), sys.argv holds the kernel's flags, not the user's
        args = parse_args(argv if argv is not None or "__file__" in globals() else [])
        args.show = args.show or "ipykernel" in sys.modules  # in a notebook, the figures show inline
        if not args.show:
            plt.switch_backend("Agg")
        torch.manual_seed(args.seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # 50-unit layers: extra threads only add synchronisation overhead
        generator, history, interrupted = train(args, torch.device(args.device))
        torch.set_num_threads(threads)  # as it was, for a notebook's next cell
        samples = generator(noise_batch(1, 10000, args.device)).detach().flatten().cpu().numpy()
        save_plots(history, samples, args.out, args.show)
        print(f"final: generated mean {samples.mean():.3f}, std {samples.std():.3f}, KS distance "
              f"{ks_distance(samples):.4f} to N(4, 1.25) over 10000 samples; plots in {args.out}")
        if interrupted:
            sys.exit(130)
        return generator
    except SystemExit:  # its line is printed; a notebook's cell ends here, not with a SystemExit
        if "ipykernel" not in sys.modules:
            raise


if __name__ == "__main__":
    main()
