"""A small convolutional GAN that learns to draw MNIST digits.

    python mnist_conv_gan.py             # full MNIST if it can download, else the bundled sample
    python mnist_conv_gan.py --batch-size 64 --epochs 40  # CPU shortcut: digits in about 3 minutes
    python mnist_conv_gan.py --epochs 1 --max-steps 20  # smoke run

Mirrors "Train your first GAN in PyTorch" (shared/tutorials/mnist_conv_gan.md): transposed-conv G,
conv D returning logits, BCEWithLogitsLoss, Adam 2e-4 betas (0.5, 0.999), weights N(0, 0.02), batch 512.
"""
import argparse
import contextlib
import io
import os
import random
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from tqdm import tqdm

Z_DIM = 100
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist_sample.npz")


def positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=positive(int), help="passes over the data (default: about 3,000 batches, "
                   "the fewest that draw digits at batch 512: 25 epochs of full MNIST, 300 of the 5,000-digit sample, "
                   "~15 min on 2 CPU cores; the tutorial's 100 is a GPU figure)")
    p.add_argument("--batch-size", type=positive(int), default=512,
                   help="images per batch (the tutorial's; on a CPU, 64 makes 8x the steps per minute)")
    p.add_argument("--lr", type=positive(float), default=2e-4, help="Adam learning rate for G and D")
    p.add_argument("--seed", type=int, default=0, help="seeds python, numpy and torch")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: cuda, mps, cpu")
    p.add_argument("--out", default="runs/mnist_conv_gan", help="folder for every file written")
    p.add_argument("--max-steps", type=positive(int), help="stop after this many iterations in total (smoke runs)")
    p.add_argument("--data-root", default="data", help="where MNIST is, or is downloaded to")
    p.add_argument("--num-workers", type=int, default=0, help="accepted for a common command line; MNIST is "
                   "batched from one in-memory tensor, so no loader workers are needed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the loss figure in a window")
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, no usage dump
    args = p.parse_args(argv)
    if args.num_workers < 0:
        p.error(f"argument --num-workers: must be 0 or more, got {args.num_workers}")
    return args


def fail(what, fix):
    print(f"error: {what} ({fix})", file=sys.stderr)
    sys.exit(2)


# ---- data: all of MNIST as one uint8 tensor, normalised a batch at a time
def load_mnist(data_root):
    """Returns (images uint8 (N, 28, 28), is_full_mnist)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision narrates each mirror it tries
            return torchvision.datasets.MNIST(data_root, train=True, download=True).data, True
    except (RuntimeError, OSError) as error:
        reason = str(error).strip().splitlines()[-1].strip("<>")
        print(f"MNIST download failed ({reason}); training on the bundled 5,000-digit sample {SAMPLE}")
        with np.load(SAMPLE) as sample:
            return torch.from_numpy(sample["images"]), False


def batches(images, batch_size, device):
    """Shuffled batches in [-1, 1], shape (B, 1, 28, 28); the last one may be short, as the tutorial's."""
    order = torch.randperm(len(images)).to(images.device)
    for start in range(0, len(images), batch_size):
        batch = images[order[start:start + batch_size]].to(device, non_blocking=True)
        # tutorial: ToTensor only, so real images in [0, 1] face a tanh generator's [-1, 1]; rescale them
        yield batch.unsqueeze(1).float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


# ---- models, as the tutorial prints them
class Generator(nn.Module):
    def __init__(self, z_dim, im_chan, hidden_dim=64):
        super().__init__()
        self.z_dim = z_dim
        self.gen = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 4 * hidden_dim, 3, 2),
            nn.BatchNorm2d(4 * hidden_dim),
            nn.ReLU(inplace=True),
            # state size. (hidden_dim*4) x 3 x 3
            nn.ConvTranspose2d(hidden_dim * 4, hidden_dim * 2, 4, 1),
            nn.BatchNorm2d(hidden_dim * 2),
            nn.ReLU(inplace=True),
            # state size. (hidden_dim*2) x 6 x 6
            nn.ConvTranspose2d(hidden_dim * 2, hidden_dim, 3, 2),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            # state size. (hidden_dim) x 13 x 13
            nn.ConvTranspose2d(hidden_dim, im_chan, 4, 2),
            nn.Tanh(),
            # state size. (im_chan) x 28 x 28, in [-1, 1]
        )

    def forward(self, noise):
        return self.gen(noise.view(len(noise), self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, im_chan, hidden_dim=16):
        super().__init__()
        self.disc = nn.Sequential(
            nn.Conv2d(im_chan, hidden_dim, 4, 2),
            nn.BatchNorm2d(hidden_dim),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (hidden_dim) x 13 x 13
            nn.Conv2d(hidden_dim, hidden_dim * 2, 4, 2),
            nn.BatchNorm2d(hidden_dim * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (hidden_dim*2) x 5 x 5
            nn.Conv2d(hidden_dim * 2, 1, 4, 2),
            # state size. 1 x 1 x 1: one logit, no sigmoid (the loss applies it stably)
        )

    def forward(self, image):
        disc_pred = self.disc(image)
        return disc_pred.view(len(disc_pred), -1)


def weights_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    if isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.constant_(m.bias, 0)


# ---- one training iteration
def train_step(generator, discriminator, g_optimizer, d_optimizer, real):
    """One D update, then one G update on the same fake batch. Returns (d_loss, g_loss) as tensors."""
    # tutorial: gen_loss draws a second noise batch and runs G again, and both backward passes use
    # retain_graph=True for nothing; one fake batch serves both steps and each graph is freed
    fake = generator(torch.randn(len(real), Z_DIM, device=real.device))

    # (1) Update D: maximize log D(x) + log(1 - D(G(z))), averaged over the two halves as the tutorial
    d_optimizer.zero_grad()
    fake_logits, real_logits = discriminator(fake.detach()), discriminator(real)
    d_loss = (F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)) +
              F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))) / 2
    d_loss.backward()
    d_optimizer.step()

    # (2) Update G: maximize log D(G(z))
    g_optimizer.zero_grad()
    fake_logits = discriminator(fake)
    g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    g_loss.backward()
    g_optimizer.step()
    return d_loss.detach(), g_loss.detach()


# ---- outputs
def save_atomically(obj, path):
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)  # an interrupted save never leaves a half-written file


def save_grid(generator, fixed_noise, path):
    generator.eval()
    with torch.no_grad():
        images = generator(fixed_noise)
    generator.train()
    torchvision.utils.save_image(images, path, nrow=8, normalize=True, value_range=(-1, 1))


def save_plots(d_losses, g_losses, grid_paths, out, show=False):
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(d_losses, label="D", alpha=0.8)
    ax.plot(g_losses, label="G", alpha=0.8)
    ax.set(xlabel="iteration", ylabel="loss", title="Generator and discriminator loss during training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "losses.png"), dpi=100)
    if show:
        plt.show()
    plt.close(fig)
    every = -(-len(grid_paths) // 50)  # at most ~50 frames: a grid from each of 300 epochs makes a 14 MB GIF
    paths = grid_paths[::every]
    if paths[-1] != grid_paths[-1]:
        paths.append(grid_paths[-1])  # always end on the last epoch
    frames = [Image.open(path) for path in paths]
    frames[0].save(os.path.join(out, "progress.gif"), save_all=True, append_images=frames[1:], duration=200, loop=0)


# ---- the loop
def train(args, images, device):
    # channels_last: the layout oneDNN and cuDNN convolutions run fastest in (~1.3x per step on CPU)
    generator = Generator(Z_DIM, 1).to(device, memory_format=torch.channels_last).apply(weights_init)
    discriminator = Discriminator(1).to(device, memory_format=torch.channels_last).apply(weights_init)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    fixed_noise = torch.randn(64, Z_DIM, device=device)
    images = images.to(device)
    d_history, g_history, grid_paths, step, interrupted = [], [], [], 0, False
    with open(os.path.join(args.out, "loss.txt"), "w") as loss_file:  # the MLP tutorial's format
        for epoch in range(1, args.epochs + 1):
            epoch_losses = []  # (D, G) per iteration, kept on the device until the epoch ends
            bar = tqdm(batches(images, args.batch_size, device), total=-(-len(images) // args.batch_size),
                       desc=f"epoch {epoch}/{args.epochs}", disable=args.quiet, leave=False)
            try:
                for real in bar:
                    d_loss, g_loss = train_step(generator, discriminator, g_optimizer, d_optimizer, real)
                    epoch_losses.append(torch.stack([d_loss, g_loss]))
                    step += 1
                    if step % 20 == 0 and not args.quiet:  # .item() waits for the GPU: not every step
                        bar.set_postfix(D=f"{d_loss.item():.3f}", G=f"{g_loss.item():.3f}")
                    if step == args.max_steps:
                        break
            except KeyboardInterrupt:
                interrupted = True
            if not epoch_losses:
                break
            d_losses, g_losses = torch.stack(epoch_losses).cpu().unbind(dim=1)
            if not (d_losses.isfinite().all() and g_losses.isfinite().all()):
                fail(f"loss became NaN/inf in epoch {epoch}", "try a lower --lr; the last good generator.pt is kept")
            d_history += d_losses.tolist()
            g_history += g_losses.tolist()
            line = f"[{epoch}/{args.epochs}]: loss_d: {d_losses.mean():.3f}, loss_g: {g_losses.mean():.3f}"
            print(line, file=loss_file, flush=True)
            grid_paths.append(os.path.join(args.out, f"samples_epoch_{epoch:03d}.png"))
            save_grid(generator, fixed_noise, grid_paths[-1])
            save_atomically(generator.state_dict(), os.path.join(args.out, "generator.pt"))
            if not args.quiet:
                print(line)
            if interrupted or step == args.max_steps:
                break
    return d_history, g_history, grid_paths, interrupted


def main(argv=None):
    args = parse_args(argv)
    if not args.show:
        plt.switch_backend("Agg")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if args.device == "auto":
        args.device = next(name for name in ("cuda", "mps", "cpu") if available[name])
        print(f"device: {args.device}")
    if not available[args.device]:
        fail(f"--device {args.device} but {args.device.upper()} is not available", "use --device cpu or auto")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    images, full = load_mnist(args.data_root)
    if args.epochs is None:  # progress counts in batches: ~3,000 at batch 512 (fewer leave gray blobs)
        args.epochs = 25 if full else 300
    d_history, g_history, grid_paths, interrupted = train(args, images, torch.device(args.device))
    if grid_paths:
        save_plots(d_history, g_history, grid_paths, args.out, args.show)
        print(f"wrote {len(grid_paths)} sample grids, losses.png, progress.gif, loss.txt, generator.pt to {args.out}")
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
