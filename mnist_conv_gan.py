"""A small conv GAN learns MNIST digits, after AskPython's "Training your first GAN in PyTorch":
https://www.askpython.com/python-modules/training-gan-in-pytorch

    python mnist_conv_gan.py                    # full MNIST if it can download, else the bundled sample
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
import torchvision
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

Z_DIM = 100
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."  # "." for a pasted cell
SAMPLE = os.path.join(HERE, "data", "mnist_sample.npz")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, help="passes over the data (default 5 of MNIST, 60 of the sample)")
    p.add_argument("--batch-size", type=int, help="images per batch (default 64; the tutorial's 512)")
    p.add_argument("--lr", type=float, help="G's Adam lr (default 4e-4, tutorial 2e-4); D's stays 2e-4")
    p.add_argument("--tutorial-recipe", action="store_true", help="batch 512, 100 epochs, one lr, the last G")
    p.add_argument("--seed", type=int, default=0, help="seeds torch (0 to 2**32 - 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: GPU first")
    p.add_argument("--out", default="runs/mnist_conv_gan", help="folder for every file written")
    p.add_argument("--max-steps", type=int, help="stop after this many iterations in total (smoke runs)")
    p.add_argument("--data-root", default="data", help="where MNIST is, or is downloaded to")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the loss figure in a window")
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, no usage dump
    args = p.parse_args(argv)
    for flag in ("epochs", "batch_size", "lr", "max_steps"):
        if getattr(args, flag) is not None and not 0 < getattr(args, flag) < float("inf"):
            p.error(f"argument --{flag.replace('_', '-')}: must be positive, got {getattr(args, flag)}")
    if not 0 <= args.seed < 2**32 or (args.lr or 0) > 1:  # an Adam step moves each weight by about lr
        p.error(f"argument --seed must be 0 to 2**32 - 1 and --lr at most 1 (got {args.seed}, {args.lr})")
    return args


def fail(what, fix):
    print(f"error: {what} ({fix})", file=sys.stderr)
    sys.exit(2)


def load_mnist(data_root):  # returns (images uint8 (N, 28, 28), is_full_mnist)
    if os.path.isfile(data_root):
        fail(f"--data-root {data_root} is a file, not a folder", "give the folder MNIST is in or goes to")
    for name, size in (("train-images-idx3-ubyte", 47_040_016), ("train-labels-idx1-ubyte", 60_008)):
        path = os.path.join(data_root, "MNIST", "raw", name)  # downloaded before, and since damaged?
        if os.path.exists(path) and os.path.getsize(path) != size:
            fail(f"{path} is not MNIST's: {os.path.getsize(path):,} bytes", "delete it to download it again")
    try:
        return torchvision.datasets.MNIST(data_root, train=True, download=True).data, True
    except (RuntimeError, OSError) as error:  # offline: a note, not an error
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


class Generator(nn.Module):
    def __init__(self, z_dim, im_chan, hidden_dim=64):
        super().__init__()
        self.z_dim = z_dim
        self.gen = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 4 * hidden_dim, 3, 2),  # (hidden_dim*4) x 3 x 3
            nn.BatchNorm2d(4 * hidden_dim),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(hidden_dim * 4, hidden_dim * 2, 4, 1),  # (hidden_dim*2) x 6 x 6
            nn.BatchNorm2d(hidden_dim * 2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(hidden_dim * 2, hidden_dim, 3, 2),  # (hidden_dim) x 13 x 13
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(hidden_dim, im_chan, 4, 2),  # (im_chan) x 28 x 28
            nn.Tanh(),  # in [-1, 1]
        )

    def forward(self, noise):
        return self.gen(noise.view(len(noise), self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, im_chan, hidden_dim=16):
        super().__init__()
        self.disc = nn.Sequential(
            nn.Conv2d(im_chan, hidden_dim, 4, 2),  # (hidden_dim) x 13 x 13
            nn.BatchNorm2d(hidden_dim),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim * 2, 4, 2),  # (hidden_dim*2) x 5 x 5
            nn.BatchNorm2d(hidden_dim * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden_dim * 2, 1, 4, 2),  # 1 x 1 x 1: a logit; the loss applies the sigmoid stably
        )

    def forward(self, image):
        disc_pred = self.disc(image)
        return disc_pred.view(len(disc_pred), -1)


def weights_init(m):  # the tutorial's: N(0, 0.02) for convolution weights and BatchNorm scales
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    if isinstance(m, nn.BatchNorm2d):
        nn.init.constant_(m.bias, 0)


def train_step(generator, discriminator, g_optimizer, d_optimizer, real):
    """One D update, then one G update on the same fake batch. Returns (d_loss, g_loss) as tensors."""
    # tutorial: a second noise batch for G, and retain_graph=True for nothing; one fake batch serves both
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


def train(args, images, device):
    # channels_last: the layout oneDNN and cuDNN convolutions run fastest in (~1.3x per step on CPU)
    generator = Generator(Z_DIM, 1).to(device, memory_format=torch.channels_last).apply(weights_init)
    discriminator = Discriminator(1).to(device, memory_format=torch.channels_last).apply(weights_init)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    averaged = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(0.995), use_buffers=True)
    shown = generator if args.tutorial_recipe else averaged.module  # tutorial: the last G; ours: an average
    fixed_noise = torch.randn(64, Z_DIM, device=device)
    history, grid_paths, step, interrupted = [], [], 0, False  # history: (D, G) loss per iteration
    for epoch in range(1, args.epochs + 1):
        epoch_losses = []  # (D, G) per iteration, kept on the device until the epoch ends
        bar = tqdm(batches(images, args.batch_size, device), total=-(-len(images) // args.batch_size),
                   desc=f"epoch {epoch}/{args.epochs}", disable=args.quiet, leave=False)
        try:
            for real in bar:
                d_loss, g_loss = train_step(generator, discriminator, g_optimizer, d_optimizer, real)
                averaged.update_parameters(generator)
                epoch_losses.append(torch.stack([d_loss, g_loss]))
                step += 1
                if step == args.max_steps:
                    break
        except KeyboardInterrupt:
            interrupted = True
        if not epoch_losses:
            break
        epoch_losses = torch.stack(epoch_losses).cpu()
        if not epoch_losses.isfinite().all():
            kept = f"; generator.pt holds epoch {epoch - 1}" if epoch > 1 else ""  # else it is not this run's
            fail(f"loss became NaN/inf in epoch {epoch}", f"lower --lr{kept}")
        history += epoch_losses.tolist()
        line = "[{}/{}]: loss_d: {:.3f}, loss_g: {:.3f}".format(epoch, args.epochs, *epoch_losses.mean(0))
        with open(os.path.join(args.out, "loss.txt"), "a" if epoch > 1 else "w") as loss_file:
            print(line, file=loss_file)
        grid_paths.append(os.path.join(args.out, f"samples_epoch_{epoch:03d}.png"))
        with torch.no_grad():  # eval(): BatchNorm's running statistics, not this batch's
            grid = shown.eval()(fixed_noise)
        shown.train()
        torchvision.utils.save_image(grid, grid_paths[-1], nrow=8, normalize=True, value_range=(-1, 1))
        torch.save(shown.state_dict(), os.path.join(args.out, "generator.pt.tmp"))
        os.replace(os.path.join(args.out, "generator.pt.tmp"), os.path.join(args.out, "generator.pt"))
        print(line)
        if interrupted or step == args.max_steps:
            break
    return shown, history, grid_paths, interrupted


def save_plots(history, grid_paths, out, show=False):
    plt.figure(figsize=(8, 4))
    plt.plot(history, label=["D", "G"], alpha=0.8)
    plt.gca().set(xlabel="iteration", ylabel="loss", title="Generator and discriminator loss during training")
    plt.legend()
    plt.savefig(os.path.join(out, "losses.png"), dpi=100, bbox_inches="tight")
    every = -(-len(grid_paths) // 50)  # at most ~50 frames (300 grids make a 14 MB GIF), ending on the last
    frames = [Image.open(path) for path in grid_paths[::every] + grid_paths[-1:]]
    frames[0].save(os.path.join(out, "progress.gif"), save_all=True, append_images=frames[1:],
                   duration=200, loop=0)
    if show:  # the losses and the last grid, in windows or inline in a notebook
        plt.figure(figsize=(4, 4)).add_axes((0, 0, 1, 1), xticks=[], yticks=[]).imshow(frames[-1])
        plt.show()
    plt.close("all")


def run(args):
    args.show = args.show or "ipykernel" in sys.modules  # in a notebook, the last figures show inline
    if not args.show:
        plt.switch_backend("Agg")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    args.device = next(k for k in available if available[k]) if args.device == "auto" else args.device
    if not available[args.device]:
        fail(f"--device {args.device} but {args.device.upper()} is not available", "use --device cpu or auto")
    try:  # now, not after an epoch
        os.makedirs(args.out, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as error:
        what = f"cannot be written ({error.strerror})"
        what = "is a file, not a folder" if os.path.isfile(args.out) else what
        fail(f"--out {args.out} {what}", "give a folder you can write to")
    torch.manual_seed(args.seed)
    images, full = load_mnist(args.data_root)
    # tutorial: batch 512 for 100 epochs; 64 gives a CPU 8x the steps a minute and better digits sooner
    args.batch_size = args.batch_size or (512 if args.tutorial_recipe else 64)
    args.epochs = args.epochs or ((100 if full else 1200) if args.tutorial_recipe else (5 if full else 60))
    args.lr = args.lr or (2e-4 if args.tutorial_recipe else 4e-4)  # tutorial: 2e-4; a 2x faster G learns more
    recipe = "the tutorial's recipe" if args.tutorial_recipe else f"G's lr {args.lr:g}, D's 2e-4, an EMA of G"
    print(f"training {args.epochs} epochs of {args.batch_size}-image batches on {args.device}: {recipe}")
    generator, history, grid_paths, interrupted = train(args, images.to(args.device), args.device)
    if grid_paths:
        save_plots(history, grid_paths, args.out, args.show)
        print(f"{len(grid_paths)} grids, losses.png, progress.gif, loss.txt and generator.pt in {args.out}")
    if interrupted:
        sys.exit(130)
    return generator


def main(argv=None):  # the command line's entry, and a notebook's: main(["--epochs", "5"]) returns G
    try:  # pasted into a notebook cell (no __file__), sys.argv holds the kernel's flags, not the user's
        return run(parse_args(argv if argv is not None or "__file__" in globals() else []))
    except SystemExit:  # its line is printed; a notebook's cell ends here, not with a SystemExit
        if "ipykernel" not in sys.modules:
            raise


if __name__ == "__main__":
    main()
