"""Two 4-layer MLPs learn to draw MNIST digits, after Mo's "GAN入门实践" (after lyeoni/pytorch-mnist-GAN):
https://momodel.cn/workspace/5f8914daed01547e8804ede7/app

    python mnist_mlp_gan.py                     # full MNIST if it can download, else the bundled sample
    python mnist_mlp_gan.py --tutorial-recipe   # the tutorial's learning rates, betas and epochs, the last G
"""
import argparse
import os
import platform
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

Z_DIM, MNIST_DIM = 100, 28 * 28
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."  # "." for a pasted cell
SAMPLE = os.path.join(HERE, "data", "mnist_sample.npz")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, help="passes over the data (default 20, on the sample 240)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch; short last batch dropped")
    p.add_argument("--lr", type=float, help="G's Adam lr (default 8e-4, tutorial 2e-4); D's stays 2e-4")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast: a bf16 CPU's default")
    p.add_argument("--tutorial-recipe", action="store_true", help="the tutorial's lr, betas, epochs; last G")
    p.add_argument("--seed", type=int, default=0, help="seeds torch (0 to 2**32 - 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: GPU first")
    p.add_argument("--out", default="runs/mnist_mlp_gan", help="folder for every file written")
    p.add_argument("--max-steps", type=int, help="stop after this many iterations in total (smoke runs)")
    p.add_argument("--data-root", default="data", help="where MNIST is, or is downloaded to")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the loss figure and last grid in a window")
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
    """Shuffled batches in [-1, 1], shape (B, 784); the short last batch is dropped, as in the tutorial."""
    order = torch.randperm(len(images)).to(images.device)
    for start in range(0, len(images) - batch_size + 1, batch_size):
        batch = images[order[start:start + batch_size]].to(device, non_blocking=True)
        yield batch.view(len(batch), -1).float().div_(127.5).sub_(1.0)  # = ToTensor + Normalize(0.5, 0.5)


class Generator(nn.Module):
    def __init__(self, g_input_dim=Z_DIM, g_output_dim=MNIST_DIM):
        super().__init__()
        self.fc1 = nn.Linear(g_input_dim, 256)
        self.fc2 = nn.Linear(self.fc1.out_features, self.fc1.out_features * 2)
        self.fc3 = nn.Linear(self.fc2.out_features, self.fc2.out_features * 2)
        self.fc4 = nn.Linear(self.fc3.out_features, g_output_dim)

    def forward(self, x):  # (B, 100) -> 256 -> 512 -> 1024 -> (B, 784) in [-1, 1]
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
        self.dropout = nn.Dropout(0.3)  # tutorial: F.dropout(x, 0.3), which stays on in eval() too

    def forward(self, x):  # (B, 784) -> 1024 -> 512 -> 256 -> (B, 1) probability of "real"
        x = self.dropout(F.leaky_relu(self.fc1(x), 0.2))
        x = self.dropout(F.leaky_relu(self.fc2(x), 0.2))
        x = self.dropout(F.leaky_relu(self.fc3(x), 0.2))
        return torch.sigmoid(self.fc4(x))


def train_step(generator, discriminator, g_optimizer, d_optimizer, real, amp_dtype=None):
    """One D update, then one G update on the same fake batch. Returns (d_loss, g_loss) as tensors."""
    ones, zeros = real.new_ones(len(real), 1), real.new_zeros(len(real), 1)  # sized by the batch, not `bs`
    autocast = torch.autocast(real.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    with autocast:  # the forward passes in bf16 on a bf16 CPU; the losses in fp32
        # tutorial: G_train draws a second noise batch and runs G again; one fake batch serves both steps
        fake = generator(torch.randn(len(real), Z_DIM, device=real.device))
        # (1) Update D: maximize log D(x) + log(1 - D(G(z)))
        # tutorial: D(x_real) and D(x_fake) are two calls; one call on both is one matrix multiply a layer
        scores = discriminator(torch.cat([real, fake.detach()])).float()
    d_optimizer.zero_grad()
    d_loss = F.binary_cross_entropy(scores, torch.cat([ones, zeros])) * 2  # the tutorial's sum of two means
    d_loss.backward()
    d_optimizer.step()
    # (2) Update G: maximize log D(G(z))
    # tutorial: G's backward also fills D's weight gradients, only to throw them away; freeze D for it
    g_optimizer.zero_grad()
    discriminator.requires_grad_(False)
    with autocast:
        scores = discriminator(fake).float()
    g_loss = F.binary_cross_entropy(scores, ones)
    g_loss.backward()
    discriminator.requires_grad_(True)
    g_optimizer.step()
    return d_loss.detach(), g_loss.detach()


def train(args, images, device, amp_dtype):
    generator, discriminator = Generator().to(device), Discriminator().to(device)
    # tutorial: default betas (0.9, 0.999); with momentum 0.5 G learns digits about twice as fast
    betas = (0.9, 0.999) if args.tutorial_recipe else (0.5, 0.999)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=betas)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=betas)
    # tutorial: samples from the last G; an average of its recent weights draws cleaner digits
    averaged = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    shown = generator if args.tutorial_recipe else averaged.module
    fixed_noise = torch.randn(64, Z_DIM, device=device)
    history, grid_paths, step, interrupted = [], [], 0, False  # history: (D, G) loss per iteration
    for epoch in range(1, args.epochs + 1):
        epoch_losses = []  # (D, G) per iteration, kept on the device until the epoch ends
        bar = tqdm(batches(images, args.batch_size, device), total=len(images) // args.batch_size,
                   desc=f"epoch {epoch}/{args.epochs}", disable=args.quiet, leave=False)
        try:
            for real in bar:
                d_loss, g_loss = train_step(generator, discriminator, g_optimizer, d_optimizer, real,
                                            amp_dtype)
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
        with torch.no_grad():  # G has no dropout or BatchNorm: no eval() needed
            grid = shown(fixed_noise).view(-1, 1, 28, 28)
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
    arm = platform.machine().lower() in ("arm64", "aarch64")  # bf16 instructions: AVX-512 BF16, Arm's BF16
    fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() if arm else torch.cpu._is_avx512_bf16_supported()
    amp_dtype = torch.bfloat16 if args.device == "cpu" and args.amp is not False and fast_bf16 else None
    precision = "bfloat16 autocast" if amp_dtype else "fp32 (--amp: no fast bf16)" if args.amp else "fp32"
    torch.manual_seed(args.seed)
    images, full = load_mnist(args.data_root)
    if args.batch_size > len(images):
        fail(f"--batch-size {args.batch_size} is more than the {len(images)} images", "use a smaller batch")
    # tutorial: 2e-4 for G and 10 epochs; a 4x faster G ends the collapse onto a few digits (RESULTS)
    args.lr = args.lr or (2e-4 if args.tutorial_recipe else 8e-4)
    args.epochs = args.epochs or (10 if args.tutorial_recipe else 20) * (1 if full else 12)
    recipe = "the tutorial's recipe" if args.tutorial_recipe else f"G's lr {args.lr:g}, D's 2e-4, an EMA of G"
    print(f"training {args.epochs} epochs, {len(images) // args.batch_size * args.epochs:,} batches of "
          f"{args.batch_size} on {args.device} in {precision}: {recipe}")
    generator, history, grid_paths, interrupted = train(args, images.to(args.device), args.device, amp_dtype)
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
