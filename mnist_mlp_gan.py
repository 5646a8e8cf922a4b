"""Two 4-layer MLPs learn to draw MNIST digits, after Mo's "GAN入门实践" on the Mo platform blog
(its code after lyeoni/pytorch-mnist-GAN): https://momodel.cn/workspace/5f8914daed01547e8804ede7/app

    python mnist_mlp_gan.py                    # full MNIST if it downloads, else the bundled sample
    python mnist_mlp_gan.py --tutorial-recipe  # the tutorial's rates, betas and epochs; the last G

Part 1, the lesson, in the tutorial's order: the digits in batches, the models, one training step,
the loop (train), the pictures. Part 2, after the fence, is what a real run adds: flags, MNIST or
the bundled sample, the files an epoch leaves, device and precision, notebooks, bad input, main().
"""

import argparse
import os
import platform
import sys
import tempfile
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

Z_DIM = 100
MNIST_DIM = 28 * 28
# The bundled data lies beside this file; a notebook cell pasted from it has no __file__: use ".".
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."
SAMPLE = os.path.join(HERE, "data", "mnist_sample.npz")


def batches(images, batch_size, device):
    """Shuffled batches in [-1, 1], shape (B, 784); the tutorial drops a short last batch too."""
    order = torch.randperm(len(images)).to(images.device)
    for start in range(0, len(images) - batch_size + 1, batch_size):
        batch = images[order[start : start + batch_size]].to(device, non_blocking=True)
        # = ToTensor + Normalize(0.5, 0.5)
        yield batch.view(len(batch), -1).float().div_(127.5).sub_(1.0)


class Generator(nn.Module):
    def __init__(self, g_input_dim=Z_DIM, g_output_dim=MNIST_DIM):
        super().__init__()
        self.fc1 = nn.Linear(g_input_dim, 256)
        self.fc2 = nn.Linear(self.fc1.out_features, self.fc1.out_features * 2)
        self.fc3 = nn.Linear(self.fc2.out_features, self.fc2.out_features * 2)
        self.fc4 = nn.Linear(self.fc3.out_features, g_output_dim)

    # (B, 100) -> 256 -> 512 -> 1024 -> (B, 784) in [-1, 1]
    def forward(self, x):
        x = F.leaky_relu(self.fc1(x), 0.2)
        x = F.leaky_relu(self.fc2(x), 0.2)
        x = F.leaky_relu(self.fc3(x), 0.2)
        return torch.tanh(self.fc4(x))


class Discriminator(nn.Module):
    def __init__(self, d_input_dim=MNIST_DIM):
        super().__init__()
        self.fc1 = nn.Linear(d_input_dim, 1024)
        self.fc2 = nn.Linear(self.fc1.out_features, self.fc1.out_features // 2)
        self.fc3 = nn.Linear(self.fc2.out_features, self.fc2.out_features // 2)
        self.fc4 = nn.Linear(self.fc3.out_features, 1)
        self.dropout = nn.Dropout(0.3)  # tutorial: F.dropout(x, 0.3), on in eval() too

    # (B, 784) -> 1024 -> 512 -> 256 -> (B, 1) logit of "real"
    def logit(self, x):
        x = self.dropout(F.leaky_relu(self.fc1(x), 0.2))
        x = self.dropout(F.leaky_relu(self.fc2(x), 0.2))
        x = self.dropout(F.leaky_relu(self.fc3(x), 0.2))
        return self.fc4(x)

    def forward(self, x):
        return torch.sigmoid(self.logit(x))


def train_step(generator, discriminator, g_optimizer, d_optimizer, real, amp_dtype=None):
    """One D update, then one G update on the same fake batch: (d_loss, g_loss) as tensors."""
    # float targets sized by the batch, not by `bs`
    ones = real.new_ones(len(real), 1)
    zeros = real.new_zeros(len(real), 1)
    autocast = torch.autocast(real.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    # the forward passes in bf16 on a bf16 CPU; the losses in fp32
    with autocast:
        # tutorial: G_train draws a second noise batch and runs G again; one fake serves both
        fake = generator(torch.randn(len(real), Z_DIM, device=real.device))
        # (1) Update D: maximize log D(x) + log(1 - D(G(z)))
        # tutorial: D(x_real) and D(x_fake) in two calls; in one, each layer is one matrix multiply
        # tutorial: BCELoss on D's sigmoid; on its logit, a NaN reaches our check, not a CUDA assert
        logits = discriminator.logit(torch.cat([real, fake.detach()])).float()
    d_optimizer.zero_grad()
    # the tutorial's sum of two means
    d_loss = F.binary_cross_entropy_with_logits(logits, torch.cat([ones, zeros])) * 2
    d_loss.backward()
    d_optimizer.step()
    # (2) Update G: maximize log D(G(z))
    # tutorial: G's backward also fills D's weight gradients, then drops them; D is frozen for it
    g_optimizer.zero_grad()
    discriminator.requires_grad_(False)
    with autocast:
        logits = discriminator.logit(fake).float()
    g_loss = F.binary_cross_entropy_with_logits(logits, ones)
    g_loss.backward()
    discriminator.requires_grad_(True)
    g_optimizer.step()
    return d_loss.detach(), g_loss.detach()


@dataclass
class GAN:
    """What trains: G and D, their Adam optimizers, the average of G, and the G that draws the
    pictures (the average; under --tutorial-recipe, G itself)."""

    generator: Generator
    discriminator: Discriminator
    g_optimizer: torch.optim.Adam
    d_optimizer: torch.optim.Adam
    averaged: AveragedModel
    shown: nn.Module


def build_gan(args, device):
    """G, D, their Adam optimizers, and the G whose samples are shown (an average of G)."""
    generator = Generator().to(device)
    discriminator = Discriminator().to(device)
    # tutorial: default betas (0.9, 0.999); with momentum 0.5 G learns digits about twice as fast
    betas = (0.9, 0.999) if args.tutorial_recipe else (0.5, 0.999)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=betas)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=betas)

    # tutorial: samples from the last G; an average of its recent weights draws cleaner digits
    def average(averaged, current, steps):
        # its decay rises to 0.999 (as the DCGAN's): a short run's is not its random start
        return averaged.lerp(current, 1 - ((1 + steps) / (10 + steps)).clamp(max=0.999))

    averaged = AveragedModel(generator, avg_fn=average)
    shown = generator if args.tutorial_recipe else averaged.module
    return GAN(generator, discriminator, g_optimizer, d_optimizer, averaged, shown)


def train(args, images, device, amp_dtype=None):
    """The tutorial's loop: for each epoch, for each batch, one train_step; the epoch's files."""
    gan = build_gan(args, device)
    fixed_noise = torch.randn(64, Z_DIM, device=device)
    # (D, G) losses per step, the grids' paths
    history, grid_paths = [], []
    steps_left = args.max_steps or float("inf")
    interrupted = False
    models = (gan.generator, gan.discriminator, gan.g_optimizer, gan.d_optimizer)
    # one bar for the whole run: its time left is the run's, not the epoch's
    per_epoch = len(images) // args.batch_size
    steps = min(args.epochs * per_epoch, steps_left)
    bar = tqdm(total=steps, unit="step", disable=args.quiet, leave=False)
    with bar:
        for epoch in range(1, args.epochs + 1):
            # (D, G) per step, kept on the device until the epoch ends: no wait for the GPU
            epoch_losses = []
            bar.set_description(f"epoch {epoch}/{args.epochs}")
            try:
                for real in batches(images, args.batch_size, device):
                    losses = train_step(*models, real, amp_dtype)
                    gan.averaged.update_parameters(gan.generator)
                    epoch_losses.append(torch.stack(losses))
                    bar.update()
                    # on a shown bar every 50 steps: reading a loss waits for the GPU
                    if len(epoch_losses) % 50 == 0 and not bar.disable:
                        bar.set_postfix(dict(zip(["loss_d", "loss_g"], epoch_losses[-1].tolist())))
                    if len(epoch_losses) == steps_left:
                        break
            # Ctrl-C, or a notebook's interrupt button: keep what was learned so far
            except KeyboardInterrupt:
                interrupted = True
            if not epoch_losses:
                break
            epoch_losses = torch.stack(epoch_losses).cpu()
            if not epoch_losses.isfinite().all():
                # generator.pt is this run's only after its first epoch
                kept = f"; generator.pt holds epoch {epoch - 1}" if epoch > 1 else ""
                fail(f"loss became NaN/inf in epoch {epoch}", f"lower --lr{kept}")
            history += epoch_losses.tolist()
            grid_paths.append(save_epoch(args, epoch, epoch_losses, gan.shown, fixed_noise))
            steps_left -= len(epoch_losses)
            if interrupted or steps_left == 0:
                break
    return gan.shown, history, grid_paths, interrupted


def save_plots(history, grid_paths, out, show=False):
    """losses.png and progress.gif; with show, the losses and the last grid in windows."""
    plt.figure(figsize=(8, 4))
    plt.plot(history, label=["D", "G"], alpha=0.8)
    title = "Generator and discriminator loss during training"
    plt.gca().set(xlabel="iteration", ylabel="loss", title=title)
    plt.legend()
    plt.savefig(os.path.join(out, "losses.png"), dpi=100, bbox_inches="tight")
    # at most ~50 frames (300 grids make a 14 MB GIF), ending on the last
    every = -(-len(grid_paths) // 50)
    frames = [Image.open(path) for path in grid_paths[::every] + grid_paths[-1:]]
    gif_path = os.path.join(out, "progress.gif")
    frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=200, loop=0)
    if show:
        axes = plt.figure(figsize=(4, 4)).add_axes((0, 0, 1, 1), xticks=[], yticks=[])
        axes.imshow(frames[-1])
        plt.show()
    plt.close("all")


# ---- Part 2: what a real run adds. A first read can stop here: flags, MNIST, files, main(). ----


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    default = " (default: %(default)s)"
    p.add_argument("--epochs", type=int, help="passes over the data (default: 20, the sample 240)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch" + default)
    p.add_argument("--lr", type=float, help="G's rate, D's 2e-4 (default: 8e-4, tutorial: 2e-4)")
    p.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, help="bf16 (default: on a bf16 CPU)"
    )
    p.add_argument("--tutorial-recipe", action="store_true", help="the tutorial's training; last G")
    p.add_argument("--seed", type=int, default=0, help="seeds torch" + default)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help=default)
    p.add_argument("--out", default="runs/mnist_mlp_gan", help="folder for every file" + default)
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--data-root", default="data", help="where MNIST is or goes" + default)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the losses and last grid")
    # Errors in one line, without argparse's usage text.
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")
    args = p.parse_args(argv)
    for flag in ("epochs", "batch_size", "lr", "max_steps"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < float("inf"):
            p.error(f"argument --{flag.replace('_', '-')}: must be positive, got {value}")
    if not 0 <= args.seed < 2**32:
        p.error(f"argument --seed: must be 0 to 2**32 - 1, got {args.seed}")
    # an unset shell variable: never the current folder in its place
    if args.data_root == "":
        p.error("argument --data-root: empty (give the folder MNIST is in or goes to)")
    # an Adam step moves each weight by about lr
    if args.lr is not None and args.lr > 1:
        p.error(f"argument --lr: must be at most 1, got {args.lr}")
    return args


def fail(what, fix):
    print(f"error: {what} ({fix})", file=sys.stderr)
    sys.exit(2)


def load_mnist(data_root):
    """(uint8 digits (N, 28, 28), whether they are all of MNIST's 60,000 or the bundled 5,000)."""
    if os.path.isfile(data_root):
        fail(f"--data-root {data_root} is a file, not a folder", "give the folder MNIST goes to")
    # a download cut short leaves files torchvision would read as garbage
    sizes = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008}
    for name, size in sizes.items():
        path = os.path.join(data_root, "MNIST", "raw", name)
        if os.path.exists(path) and os.path.getsize(path) != size:
            found = f"{os.path.getsize(path):,} bytes"
            fail(f"{path} is not MNIST's: {found}", "delete it to download it again")
    try:
        return torchvision.datasets.MNIST(data_root, train=True, download=True).data, True
    # offline: a note, not an error
    except (RuntimeError, OSError) as error:
        reason = str(error).strip().splitlines()[-1].strip("<>")
        print(f"MNIST download failed ({reason}); training on the bundled 5,000-digit sample")
    # files of MNIST's size holding something else: torchvision asserts on them
    except (AssertionError, ValueError) as error:
        raw = os.path.join(data_root, "MNIST", "raw")
        fail(f"{raw} holds no MNIST ({type(error).__name__})", "delete it to download it again")
    try:
        with np.load(SAMPLE) as sample:
            return torch.from_numpy(sample["images"]), False
    except Exception as error:
        fail(f"{SAMPLE} cannot be read ({type(error).__name__})", "restore it from the repository")


def save_epoch(args, epoch, epoch_losses, shown, fixed_noise):
    """What an epoch leaves: a line in loss.txt, a grid, generator.pt; returns the grid's path."""
    d_mean, g_mean = epoch_losses.mean(0).tolist()
    line = f"[{epoch}/{args.epochs}]: loss_d: {d_mean:.3f}, loss_g: {g_mean:.3f}"
    with open(os.path.join(args.out, "loss.txt"), "a" if epoch > 1 else "w") as loss_file:
        print(line, file=loss_file)
    # above the bar, which stays at the bottom
    tqdm.write(line)
    grid_path = os.path.join(args.out, f"samples_epoch_{epoch:03d}.png")
    # G has no dropout or BatchNorm: no eval() needed
    with torch.no_grad():
        grid = shown(fixed_noise).view(-1, 1, 28, 28)
    torchvision.utils.save_image(grid, grid_path, nrow=8, normalize=True, value_range=(-1, 1))
    # written whole, then renamed: an interrupted save keeps the last good file
    path = os.path.join(args.out, "generator.pt")
    try:
        torch.save(shown.state_dict(), path + ".tmp")
        os.replace(path + ".tmp", path)
    # a full disk: nothing half-written stays
    except (OSError, RuntimeError) as error:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:80]
        fail(f"cannot write {path} ({reason})", "free some space, or give another --out")
    return grid_path


def pick_device(args):
    """The device, and bf16 autocast (on a CPU with bf16 instructions) or fp32 (None)."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    available = {"cuda": cuda, "mps": mps, "cpu": True}
    if args.device == "auto":
        args.device = next(name for name, present in available.items() if present)
    if not available[args.device]:
        fail(f"--device {args.device}: {args.device.upper()} is not available", "use cpu or auto")
    # bf16 instructions (AVX-512 BF16 on x86, BF16 on Arm), asked on a CPU only; the public check
    # first: the private ones are missing from some builds (torch.cpu's before torch 2.5)
    if args.device != "cpu" or args.amp is False or not torch.backends.mkldnn.is_available():
        return None
    try:
        if platform.machine().lower() in ("arm64", "aarch64"):
            fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        else:
            fast_bf16 = torch.cpu._is_avx512_bf16_supported()
    except (AttributeError, RuntimeError):
        fast_bf16 = False
    return torch.bfloat16 if fast_bf16 else None


def check_out(out):
    """Makes --out and writes a file there now, rather than fail after an epoch."""
    try:
        os.makedirs(out, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as error:
        fail(f"--out {out} cannot be written ({error.strerror})", "give a folder you can write to")


def run(args):
    # in a notebook, the last figures show inline
    args.show = args.show or "ipykernel" in sys.modules
    if not args.show:
        plt.switch_backend("Agg")
    amp_dtype = pick_device(args)
    check_out(args.out)
    torch.manual_seed(args.seed)
    images, full = load_mnist(args.data_root)
    if args.batch_size > len(images):
        what = f"--batch-size {args.batch_size} is more than the {len(images)} images"
        fail(what, "use a smaller batch")
    # tutorial: 2e-4 for G and 10 epochs; a 4x faster G ends the collapse onto a few digits
    args.lr = args.lr or (2e-4 if args.tutorial_recipe else 8e-4)
    # about as many steps on the sample as on full MNIST
    args.epochs = args.epochs or (10 if args.tutorial_recipe else 20) * (1 if full else 12)
    precision = "bfloat16 autocast" if amp_dtype else "fp32"
    if args.amp and not amp_dtype:
        precision += " (--amp: no fast bf16)"
    recipe = f"G's lr {args.lr:g}, D's 2e-4, an EMA of G"
    if args.tutorial_recipe:
        recipe = "the tutorial's recipe"
    steps = len(images) // args.batch_size * args.epochs
    print(
        f"training {args.epochs} epochs, {steps:,} batches of {args.batch_size} "
        f"on {args.device} in {precision}: {recipe}"
    )
    images = images.to(args.device)
    generator, history, grid_paths, interrupted = train(args, images, args.device, amp_dtype)
    if grid_paths:
        save_plots(history, grid_paths, args.out, args.show)
        print(f"{len(grid_paths)} grids, losses.png, progress.gif, generator.pt in {args.out}")
    if interrupted:
        print(f"interrupted in epoch {len(grid_paths)}: its files hold the run so far")
        sys.exit(130)
    return generator


def main(argv=None):
    """The command line's entry, and a notebook's: main(["--epochs", "5"]) returns G."""
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
