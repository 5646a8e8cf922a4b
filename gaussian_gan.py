"""Learn N(4, 1.25) from uniform noise, after Dev Nag's "Generative Adversarial Networks (GANs) in
50 lines of code (PyTorch)", Medium, 2017 (the README has the full link): medium.com/p/e81b79659e3f

    python gaussian_gan.py                    # 30,000 steps on one CPU thread: 40 s to 100 s

Part 1, the lesson, in the tutorial's order: the real data and the noise, the models, one step,
the loop (train), the pictures. Part 2, after the fence: flags, bad input, a distance, main().
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


def real_batch(num_sets, batch_size, device="cpu"):
    return torch.randn(num_sets, batch_size, device=device) * DATA_STDDEV + DATA_MEAN


def noise_batch(num_sets, batch_size, device="cpu"):
    """Uniform noise: G must reshape it, not only shift and scale it."""
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

    # the logit of "real", which the loss takes
    def logit(self, x):
        x = F.elu(self.map1(x))
        x = F.elu(self.map2(x))
        return self.map3(x)

    def forward(self, x):
        return torch.sigmoid(self.logit(x))


def decorate_with_diffs(data, exponent=2.0):
    """(sets, n) -> (sets, 2n): the samples, then their deviations from their mean, squared."""
    # tutorial: `data.data`, i.e. no gradient through the mean
    mean = data.mean(dim=1, keepdim=True).detach()
    return torch.cat([data, (data - mean) ** exponent], dim=1)


def train_step(generator, discriminator, g_optimizer, d_optimizer, real, noise, g_noise=None):
    """D's update, then G's, on real (sets, n) and noise (sets * n, 1); G's on g_noise if given."""
    sets = real.shape[0]
    # tutorial: targets of shape (1,) against D's (1, 1), which crashes on current torch
    ones, zeros = real.new_ones(sets, 1), real.new_zeros(sets, 1)
    bce = F.binary_cross_entropy_with_logits
    fake = generator(noise).view(sets, -1)
    # (1) Update D: maximize log D(x) + log(1 - D(G(z))); real and fake go through D in one pass
    d_optimizer.zero_grad()
    # tutorial: BCELoss on D's sigmoid; on its logit, a NaN reaches our check, not a CUDA assert
    logits = discriminator.logit(decorate_with_diffs(torch.cat([real, fake.detach()])))
    errors = bce(logits, torch.cat([ones, zeros]), reduction="none")
    d_real_error, d_fake_error = errors[:sets].mean(), errors[sets:].mean()
    (d_real_error + d_fake_error).backward()
    d_optimizer.step()
    # (2) Update G: maximize log D(G(z)); D's gradients are computed but D is not stepped
    g_optimizer.zero_grad()
    if g_noise is not None:
        fake = generator(g_noise).view(sets, -1)
    g_error = bce(discriminator.logit(decorate_with_diffs(fake)), ones)
    g_error.backward()
    g_optimizer.step()
    return d_real_error.detach(), d_fake_error.detach(), g_error.detach(), fake.detach()


def build_gan(args, device):
    generator = Generator().to(device)
    discriminator = Discriminator(input_size=2 * args.batch_size).to(device)
    # tutorial: 2e-4 for both: G can sit collapsed near 0 for 15,000 steps; 10x faster, it escapes
    g_lr = args.lr or (2e-4 if args.tutorial_recipe else 1e-3)
    d_lr = args.d_lr or (2e-4 if args.tutorial_recipe else 1e-4)
    # tutorial: betas (0.9, 0.999), with which G overshoots
    betas = (0.9, 0.999) if args.tutorial_recipe else (0.5, 0.999)
    # fused=True: one kernel a step for all parameters; at this size the Python overhead is the cost
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=g_lr, betas=betas, fused=True)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=d_lr, betas=betas, fused=True)
    return generator, discriminator, g_optimizer, d_optimizer


def train(args, device):
    generator, discriminator, g_optimizer, d_optimizer = build_gan(args, device)
    # tutorial: reports the last G; an exponential moving average of its weights damps late swings
    averaged = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    tutorial = args.tutorial_recipe
    # tutorial: one minibatch a D step, whose gradient is too noisy
    num_sets = 1 if tutorial else 4
    steps = min(args.steps, args.max_steps or args.steps)
    history = []
    interrupted = False
    models = (generator, discriminator, g_optimizer, d_optimizer)
    try:
        for step in tqdm(range(steps), disable=args.quiet, mininterval=1.0):
            real = real_batch(num_sets, args.batch_size, device)
            noise = noise_batch(num_sets, args.batch_size, device)
            # tutorial: G's update draws fresh noise
            g_noise = noise_batch(num_sets, args.batch_size, device) if tutorial else None
            d_real, d_fake, g_err, fake = train_step(*models, real, noise, g_noise)
            averaged.update_parameters(generator)
            if step % args.print_interval == 0 or step == steps - 1:
                # a NaN loss: the run diverged, and no later step can learn
                if not torch.stack([d_real, d_fake, g_err]).isfinite().all():
                    print(f"error: losses became NaN by step {step} (lower --lr)", file=sys.stderr)
                    sys.exit(2)
                r, f = real[0].cpu().numpy(), fake[0].cpu().numpy()
                # (step, generated mean, generated std), for stats.png
                history.append((step, float(f.mean()), float(f.std())))
                # the tutorial's line
                errors = f"D: {d_real.item():.4f}/{d_fake.item():.4f} G: {g_err.item():.4f}"
                real_stats = f"Real: [{r.mean():.3f}, {r.std():.3f}]"
                fake_stats = f"Fake: [{f.mean():.3f}, {f.std():.3f}]"
                if not args.quiet:
                    tqdm.write(f"{step}: {errors} ({real_stats}, {fake_stats})")
    # Ctrl-C, or a notebook's interrupt: the plots show what was learned so far
    except KeyboardInterrupt:
        interrupted = True
    return (generator if tutorial else averaged.module), history, interrupted


def save_plots(history, samples, out, show=False):
    """stats.png: G's mean and std over training; histogram.png: G's samples against N(4, 1.25)."""
    # none if stopped at once
    steps, means, stds = zip(*history) if history else ((), (), ())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    targets = ((means, DATA_MEAN, "mean"), (stds, DATA_STDDEV, "std"))
    for ax, (values, target, name) in zip(axes, targets):
        ax.plot(steps, values, label=f"generated {name}")
        ax.axhline(target, color="k", linestyle="--", label=f"target {target}")
        ax.set(xlabel="step", title=f"generated {name} over training")
        ax.legend()
    fig.savefig(os.path.join(out, "stats.png"), dpi=100, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(6, 4))
    # wide enough for a G that ran away from the target too
    low = min(DATA_MEAN - 5 * DATA_STDDEV, samples.min())
    bins = np.linspace(low, max(DATA_MEAN + 5 * DATA_STDDEV, samples.max()), 80)
    real = real_batch(1, len(samples)).flatten().numpy()
    ax.hist(real, bins=bins, density=True, alpha=0.5, label="real")
    ax.hist(samples, bins=bins, density=True, alpha=0.5, label="generated")
    gaussian = np.exp(-0.5 * ((bins - DATA_MEAN) / DATA_STDDEV) ** 2)
    ax.plot(bins, gaussian / (DATA_STDDEV * np.sqrt(2 * np.pi)), "k", label="N(4, 1.25)")
    ax.set_title("final generator vs target")
    ax.legend()
    fig.savefig(os.path.join(out, "histogram.png"), dpi=100, bbox_inches="tight")
    if show:
        plt.show()
    plt.close("all")


# ---- Part 2: what a real run adds. A first read can stop here: flags, bad input, main(). ----


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    default = " (default: %(default)s)"
    p.add_argument("--steps", type=int, default=30000, help="each on fresh batches" + default)
    p.add_argument("--batch-size", type=int, default=100, help="samples D sees as one" + default)
    p.add_argument("--lr", type=float, help="G's Adam rate (default: 1e-3, tutorial: 2e-4)")
    p.add_argument("--d-lr", type=float, help="D's Adam rate (default: 1e-4, tutorial: 2e-4)")
    p.add_argument("--seed", type=int, default=0, help="seeds torch" + default)
    # cpu by default: these 50-unit layers gain nothing on a GPU
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="cpu", help=default)
    p.add_argument("--out", default="runs/gaussian_gan", help="folder for the plots" + default)
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--print-interval", type=int, default=200, help="steps a line" + default)
    p.add_argument("--tutorial-recipe", action="store_true", help="exactly the tutorial's training")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed lines")
    p.add_argument("--show", action="store_true", help="also open the figures in a window")
    # Errors in one line, without argparse's usage text.
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")
    args = p.parse_args(argv)
    # An Adam step moves each weight by about its rate; D's first layer has 2 x batch-size inputs.
    highest = {"lr": 1, "d_lr": 1, "batch_size": 10000}
    for flag in ("steps", "batch_size", "lr", "d_lr", "max_steps", "print_interval"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < float("inf"):
            p.error(f"argument --{flag.replace('_', '-')}: must be positive, got {value}")
        if value is not None and value > highest.get(flag, value):
            p.error(f"argument --{flag.replace('_', '-')}: must be at most {highest[flag]}")
    if not 0 <= args.seed < 2**32:
        p.error(f"argument --seed: must be 0 to 2**32 - 1, got {args.seed}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    available = {"cuda": cuda, "mps": mps, "cpu": True}
    if args.device == "auto":
        args.device = next(name for name, present in available.items() if present)
    if not available[args.device]:
        p.error(f"--device {args.device}: {args.device.upper()} is not available")
    # --out is made and written to now, not after 30,000 steps
    try:
        os.makedirs(args.out, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as error:
        p.error(f"--out {args.out} cannot be written ({error.strerror})")
    return args


def ks_distance(samples):
    """Kolmogorov-Smirnov: the largest gap between the samples' CDF and N(4, 1.25)'s."""
    x, n = np.sort(samples), len(samples)
    z = torch.from_numpy((x - DATA_MEAN) / (DATA_STDDEV * np.sqrt(2.0)))
    cdf = 0.5 * (1.0 + torch.erf(z).numpy())
    return float(max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max()))


def run(args):
    # in a notebook, the figures show inline
    args.show = args.show or "ipykernel" in sys.modules
    if not args.show:
        plt.switch_backend("Agg")
    torch.manual_seed(args.seed)
    threads = torch.get_num_threads()
    # 50-unit layers: more threads only add synchronisation
    torch.set_num_threads(1)
    generator, history, interrupted = train(args, torch.device(args.device))
    # as it was, for a notebook's next cell
    torch.set_num_threads(threads)
    samples = generator(noise_batch(1, 10000, args.device)).detach().flatten().cpu().numpy()
    save_plots(history, samples, args.out, args.show)
    print(
        f"final: generated mean {samples.mean():.3f}, std {samples.std():.3f}, KS distance "
        f"{ks_distance(samples):.4f} to N(4, 1.25) over 10000 samples; plots in {args.out}"
    )
    if interrupted:
        print("interrupted: the plots show the run so far")
        sys.exit(130)
    return generator


def main(argv=None):
    """The command line's entry, and a notebook's: main(["--steps", "5000"]) returns G."""
    # Pasted into a notebook cell (no __file__), sys.argv holds the kernel's flags, not ours.
    if argv is None and "__file__" not in globals():
        argv = []
    try:
        return run(parse_args(argv))
    # its line is printed; in a notebook the cell ends here, not with a SystemExit
    except SystemExit:
        if "ipykernel" not in sys.modules:
            raise


if __name__ == "__main__":
    main()
