"""DCGAN on 64x64 images, after Aniket Maurya's "DCGAN Tutorial" (Analytics Vidhya on Medium):
https://medium.com/analytics-vidhya/dcgan-tutorial-by-aniket-maurya-f6c137ef0053

    python dcgan_celeba.py --epochs 20                       # CelebA in data/celeba, else digits
    torchrun --nproc_per_node=4 dcgan_celeba.py --epochs 20  # one process per GPU (DDP)

Part 1, the lesson, in the tutorial's order: the models, their weights, the images D sees, one
training step, the loop (train), the pictures. Part 2, after the fence, is what a real run adds:
flags, image folders and the cache, checkpoints and resume, several GPUs and the agreed stop,
device and precision, notebooks, bad input, then run() and main().
"""

import argparse
import contextlib
import copy
import ctypes
import glob
import os
import platform
import signal
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

Z_DIM = 100
# The grids and infer.py draw from an average of G over about its last 1 / (1 - 0.995) = 200 steps.
EMA_DECAY = 0.995


class Generator(nn.Module):
    def __init__(self, in_channels=3, z_dim=Z_DIM, tutorial=False):
        super().__init__()
        self.tutorial = tutorial
        # tutorial: 3 channels in the last block, whatever in_channels says
        self.gen = nn.Sequential(
            self.create_upblock(z_dim, 1024, kernel_size=4, stride=1, padding=0),  # 1024 x 4 x 4
            self.create_upblock(1024, 512, kernel_size=4, stride=2, padding=1),  # 512 x 8 x 8
            self.create_upblock(512, 256, kernel_size=4, stride=2, padding=1),  # 256 x 16 x 16
            self.create_upblock(256, 128, kernel_size=4, stride=2, padding=1),  # 128 x 32 x 32
            # 3 x 64 x 64, in [-1, 1]
            self.create_upblock(128, in_channels, 4, stride=2, padding=1, final_layer=True),
        )

    def create_upblock(
        self, in_channels, out_channels, kernel_size=5, stride=2, padding=1, final_layer=False
    ):
        conv = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=False
        )
        # tutorial: BatchNorm before the Tanh too, which pins each batch's mean at grey
        if final_layer and not self.tutorial:
            return nn.Sequential(conv, nn.Tanh())
        activation = nn.Tanh() if final_layer else nn.ReLU(True)
        return nn.Sequential(conv, nn.BatchNorm2d(out_channels), activation)

    # tutorial: asserts noise has 4 dimensions, which the first layer checks anyway
    def forward(self, noise):
        return self.gen(noise)


class Discriminator(nn.Module):
    def __init__(self, im_chan=3, hidden_dim=32, tutorial=False):
        super().__init__()
        self.tutorial = tutorial
        # tutorial: unpadded, 64 -> 31 -> 14 -> 11 -> 4 -> 1, its third block at stride 1
        self.disc = nn.Sequential(
            self.make_disc_block(im_chan, hidden_dim, norm=tutorial),  # 32 x 32 x 32
            self.make_disc_block(hidden_dim, hidden_dim * 2),  # 64 x 16 x 16
            # 128 x 8 x 8
            self.make_disc_block(hidden_dim * 2, hidden_dim * 4, stride=1 if tutorial else 2),
            self.make_disc_block(hidden_dim * 4, hidden_dim * 4, stride=2),  # 128 x 4 x 4
            self.make_disc_block(hidden_dim * 4, 1, final_layer=True),  # 1 x 1 x 1: a logit
        )

    # tutorial: BatchNorm on the input block too, with which D wins at once
    def make_disc_block(
        self, input_channels, output_channels, kernel_size=4, stride=2, final_layer=False, norm=True
    ):
        padding = 0 if final_layer or self.tutorial else 1
        conv = nn.Conv2d(input_channels, output_channels, kernel_size, stride, padding)
        if final_layer:
            return nn.Sequential(conv)
        layers = [conv, nn.BatchNorm2d(output_channels)] if norm else [conv]
        return nn.Sequential(*layers, nn.LeakyReLU(0.2))

    def forward(self, image):
        disc_pred = self.disc(image)
        return disc_pred.view(len(disc_pred), -1)


def weights_init(m):
    """N(0, 0.02) for convolutions; BatchNorm's scale N(1, 0.02), as zhangxiann's lesson 8."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def to_real(batch, device):
    """uint8 images to the [-1, 1] RGB batch D sees: ToTensor and Normalize(0.5, 0.5) at once."""
    real = batch.to(device).float().div_(127.5).sub_(1.0)
    # grey digits become RGB
    return real.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


def train_step(
    generator, discriminator, g_optimizer, d_optimizer, real, label_smoothing=False, amp_dtype=None
):
    """One D update on real and fake.detach(), then one G update on the same fake: both losses."""
    # zhangxiann's lesson 8 trick: targets of 0.9 and 0.1
    real_label = 0.9 if label_smoothing else 1.0
    fake_label = 0.1 if label_smoothing else 0.0
    autocast = torch.autocast(real.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    # on logits: the sigmoid inside the loss, where it is numerically stable
    bce = F.binary_cross_entropy_with_logits
    # (1) Update D: maximize log D(x) + log(1 - D(G(z)))
    d_optimizer.zero_grad()
    with autocast:
        # tutorial: a second fake batch for G, and retain_graph=True on D's loss; one serves both
        fake = generator(torch.randn(len(real), Z_DIM, 1, 1, device=real.device))
        fake_logits = discriminator(fake.detach())
        real_logits = discriminator(real)
        loss_fake = bce(fake_logits, torch.full_like(fake_logits, fake_label))
        loss_real = bce(real_logits, torch.full_like(real_logits, real_label))
        # the tutorial averages the two halves
        d_loss = (loss_fake + loss_real) / 2
    d_loss.backward()
    d_optimizer.step()
    # (2) Update G: maximize log D(G(z))
    g_optimizer.zero_grad()
    with autocast:
        fake_logits = discriminator(fake)
        g_loss = bce(fake_logits, torch.ones_like(fake_logits))
    g_loss.backward()
    g_optimizer.step()
    return d_loss.detach(), g_loss.detach()


def update_average(g_ema, g_model, step, decay=EMA_DECAY):
    """As AveragedModel(use_buffers=True) with an EMA, without a host sync."""
    # A warm-up: early on, the average forgets its random start faster.
    decay = min(decay, (1 + step) / (10 + step))
    # state_dict() tensors are detached: no torch.no_grad() needed
    for averaged, current in zip(g_ema.state_dict().values(), g_model.state_dict().values()):
        # weights and BatchNorm statistics, not BatchNorm's count of batches
        if averaged.is_floating_point():
            averaged.lerp_(current, 1 - decay)


@dataclass
class GAN:
    """What trains: G and D (the tutorial's g_model and d_model), their optimizers, and the average
    of G that the pictures draw from, with its decay (0: the last G)."""

    g_model: Generator
    d_model: Discriminator
    g_optimizer: torch.optim.Adam
    d_optimizer: torch.optim.Adam
    g_ema: Generator
    ema_decay: float


def build_gan(args, device):
    """G and D with the tutorial's weights, their Adam optimizers, and the average of G."""
    # channels_last: the layout oneDNN and cuDNN convolutions run fastest in
    layout = torch.channels_last
    g_model = Generator(tutorial=args.tutorial_recipe).to(device, memory_format=layout)
    g_model.apply(weights_init)
    d_model = Discriminator(tutorial=args.tutorial_recipe).to(device, memory_format=layout)
    d_model.apply(weights_init)
    g_optimizer = torch.optim.Adam(g_model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(d_model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g_ema = copy.deepcopy(g_model).requires_grad_(False)
    # tutorial: draws from the last G, an average over one step
    ema_decay = 0.0 if args.tutorial_recipe else EMA_DECAY
    return GAN(g_model, d_model, g_optimizer, d_optimizer, g_ema, ema_decay)


def train(args, device, rank=0, world=1, amp_dtype=None, checkpoint=None):
    """The tutorial's loop: for each epoch, for each batch, one train_step. What a real run adds
    (resume, several processes, a stop, the files an epoch leaves) is one call each, in part 2."""
    gan = build_gan(args, device)
    fixed_noise = torch.randn(64, Z_DIM, 1, 1, device=device)
    # before any image is decoded: a checkpoint that does not fit these models is refused at once
    history = resume_training(gan, checkpoint, args, rank, world, device)
    dataset = make_dataset(args, rank, world).to(device)
    # --batch-size is the step's total: each of the processes takes its share
    batch_size = args.batch_size // world
    per_epoch = -(-len(dataset) // batch_size)
    epoch_samples = len(dataset) * world
    first_epoch, batches_done = resume_position(checkpoint, args, epoch_samples)
    # under torchrun, G and D in DDP, which averages their gradients over the processes
    generator, discriminator, stop_group = distribute(gan)
    models = (generator, discriminator, gan.g_optimizer, gan.d_optimizer)
    steps_left = args.max_steps
    real, fake, drawn_epoch, stopped = None, None, 0, False
    # one bar for the whole run: its time left is the run's, not the epoch's
    bar = progress_bar(args, first_epoch, batches_done, per_epoch, rank)
    with stop_signals() as stop, bar:
        try:
            for epoch in range(first_epoch, args.epochs + 1):
                batches = epoch_batches(dataset, batch_size, args, epoch, batches_done, steps_left)
                bar.set_description(f"epoch {epoch}/{args.epochs}")
                epoch_losses = []
                for batch in batches:
                    real = to_real(batch, device)
                    losses = train_step(*models, real, args.label_smoothing, amp_dtype)
                    step = len(history) + len(epoch_losses)
                    update_average(gan.g_ema, gan.g_model, step, gan.ema_decay)
                    # kept on the device until the epoch ends: no wait for the GPU in the loop
                    epoch_losses.append(torch.stack(losses).float())
                    show_progress(bar, epoch_losses)
                    stop_if_diverged(epoch_losses, epoch)
                    stopped = stop_agreed(stop, stop_group)
                    if stopped:
                        break
                history += epoch_summary(epoch_losses, epoch)
                batches_done += len(epoch_losses)
                # the images this epoch has seen on all processes: its last batch may be short
                samples_done = min(batches_done * args.batch_size, epoch_samples)
                position = (epoch, samples_done, epoch_samples)
                fake = save_epoch(gan, args, fixed_noise, history, position, rank, device)
                drawn_epoch = epoch
                if steps_left is not None:
                    steps_left -= len(epoch_losses)
                if stopped or steps_left == 0:
                    break
                batches_done = 0
        # also when a NaN loss or an unreadable image ends the run
        finally:
            if drawn_epoch and rank == 0:
                save_plots(history, args.out, real, fake, drawn_epoch, args.show)
    return gan.g_ema, stopped


def save_plots(losses, out, real, fake, last_epoch, show=False):
    """The losses, the GIF and real beside fake: once, when the run ends, stops or fails."""
    plt.figure(figsize=(8, 4))
    plt.plot(losses, label=["D", "G"], alpha=0.8)
    title = "Generator and discriminator loss during training"
    plt.gca().set(xlabel="iteration", ylabel="loss", title=title)
    plt.legend()
    plt.savefig(os.path.join(out, "losses.png"), dpi=100, bbox_inches="tight")
    save_gif(out, last_epoch)
    _, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, images, title in ((axes[0], real, "Real images"), (axes[1], fake, "Fake images")):
        images = images[:64].float().cpu()
        grid = torchvision.utils.make_grid(images, normalize=True, value_range=(-1, 1))
        ax.imshow(grid.permute(1, 2, 0).numpy())
        ax.set(title=title, xticks=[], yticks=[])
    plt.savefig(os.path.join(out, "real_vs_fake.png"), dpi=100, bbox_inches="tight")
    if show:
        plt.show()
    plt.close("all")


# ---- Part 2: what a real run adds. A first read can stop here: flags, data, GPUs, main(). ----


def parse_args(argv=None, run_flags=None):
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    # --flag and --no-flag
    on_off = argparse.BooleanOptionalAction
    default = " (default: %(default)s)"
    p.add_argument(
        "--epochs", type=int, default=20, help="train until this epoch; tutorial: 50" + default
    )
    p.add_argument("--batch-size", type=int, help="over all GPUs (default: 64, tutorial: 128)")
    p.add_argument("--lr", type=float, help="G's rate, D's 2e-4 (default: 4e-4, tutorial: 2e-4)")
    p.add_argument("--tutorial-recipe", action="store_true", help="the tutorial's models, last G")
    p.add_argument("--seed", type=int, default=0, help="seeds torch and the data order" + default)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help=default)
    p.add_argument("--out", default="runs/dcgan_celeba", help="folder for every file" + default)
    p.add_argument("--max-steps", type=int, help="stop after this many steps of this call")
    p.add_argument("--data-root", help="images at any depth (default: data/celeba, else digits)")
    # the CPUs this process may use (taskset, Slurm, a container), not all the machine's
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count())
    workers = min(len(cpus), 16)
    p.add_argument("--num-workers", type=int, default=workers, help="decoders" + default)
    p.add_argument("--cache", action=on_off, help="decode once (default: if it fits in memory)")
    p.add_argument("--label-smoothing", action=on_off, default=False, help="real 0.9, fake 0.1")
    p.add_argument("--amp", action=on_off, help="bf16 autocast (default: on a bf16 CPU)")
    p.add_argument("--resume", metavar="CKPT", help="go on where a checkpoint_last.pt stopped")
    p.add_argument("--save-every", type=int, default=10, help="epochs between snapshots" + default)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the figures in a window")
    # Errors in one line, without argparse's usage text.
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")
    # A resumed run's own flags are the defaults; the flags given again win.
    p.set_defaults(**(run_flags or {}))
    args = p.parse_args(argv)
    for flag in ("epochs", "batch_size", "lr", "max_steps", "save_every"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < float("inf"):
            p.error(f"argument --{flag.replace('_', '-')}: must be positive, got {value}")
    if not 0 <= args.num_workers <= 64:
        p.error(f"argument --num-workers: must be 0 to 64, got {args.num_workers}")
    if not 0 <= args.seed < 2**32:
        p.error(f"argument --seed: must be 0 to 2**32 - 1, got {args.seed}")
    # an unset shell variable: never the default folder in its place
    if args.data_root == "":
        p.error("argument --data-root: empty (give the folder of the images)")
    # tutorial: 128; at 64 the same images, twice the steps, draw 9 points more confident digits
    args.batch_size = args.batch_size or (128 if args.tutorial_recipe else 64)
    # tutorial: 2e-4 for G too; at twice D's rate, G draws 4 to 8 points more (5 runs)
    args.lr = args.lr or (2e-4 if args.tutorial_recipe else 4e-4)
    return args


def fail(what, fix):
    print(f"error: {what} ({fix})", file=sys.stderr)
    sys.exit(2)


# The bundled data lies beside this file; a notebook cell pasted from it has no __file__: use ".".
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."
IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
# Flags of one call, not of the run: --resume does not bring them back from the checkpoint.
CALL_FLAGS = ("device", "max_steps", "num_workers", "cache", "resume", "quiet", "show")
# What checkpoint_last.pt holds as NAME_state_dict: the tutorial's g_model and d_model, then ours.
TRAINED = ("g_model", "d_model", "g_ema", "g_optimizer", "d_optimizer")


# --- Image folders and the cache ---
@dataclass
class ImageSet:
    """This process's share of the images: decoded once into `images` (uint8, N x C x 64 x 64),
    or, where they do not fit in memory, their `files`, decoded again every epoch."""

    images: torch.Tensor = None
    files: list = None

    def __len__(self):
        return len(self.files) if self.images is None else len(self.images)

    def to(self, device):
        """Cached images go to a GPU where a quarter of its free memory holds them."""
        if self.images is not None and device.type == "cuda":
            if self.images.nbytes < torch.cuda.mem_get_info()[0] / 4:
                self.images = self.images.to(device)
        return self


def load_images(paths):
    """uint8 (len(paths), 3, 64, 64), or a text naming the file that could not be read."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                # A JPEG decodes at 1/2 or 1/4 of its size where that still covers 64x64.
                im.draft("RGB", (64, 64))
                square = T.CenterCrop(64)(T.Resize(64)(im.convert("RGB")))
                images.append(T.functional.pil_to_tensor(square))
        # Returned, not raised: a DataLoader worker that raises stalls the loader's shutdown.
        except (OSError, Image.DecompressionBombError) as error:
            return f"{path}: {error}"
    return torch.stack(images)


def decode(paths, batches, num_workers):
    """uint8 batches decoded in worker processes; an unreadable file ends the run."""
    # its own generator: starting the workers draws nothing from the noise's RNG
    loader = torch.utils.data.DataLoader(
        paths,
        batch_sampler=batches,
        collate_fn=load_images,
        num_workers=num_workers,
        generator=torch.Generator(),
    )
    for batch in loader:
        if isinstance(batch, str):
            fail(f"unreadable image: {batch}", "delete or replace the file")
        yield batch


def cache_images(paths, args):
    """The images decoded once into one uint8 tensor that later epochs index (YOLOv5's --cache
    ram); each worker's batch copied in and released, so 64 MB of /dev/shm is enough."""
    print(f"caching {len(paths):,} images as uint8: {len(paths) * 3 * 64 * 64 / 1e9:.2f} GB")
    images = torch.empty(len(paths), 3, 64, 64, dtype=torch.uint8)
    batches = torch.arange(len(paths)).split(64)
    decoded = decode(paths, batches, args.num_workers)
    bar = tqdm(decoded, desc="decoding", total=len(batches), leave=False, disable=args.quiet)
    for indices, batch in zip(batches, bar):
        images[indices] = batch
    return images


def fits_in_memory(size):
    if hasattr(os, "sysconf"):
        return size <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 4
    # Windows has no sysconf; its MEMORYSTATUSEX is 64 bytes: its own size, the load, then the RAM
    status = (ctypes.c_uint64 * 8)(64)
    ctypes.windll.kernel32.GlobalMemoryStatusEx(status)
    return size <= status[1] / 4


def load_digits():
    """The 5,000 bundled MNIST digits; this file alone (a pasted cell) downloads MNIST's first."""
    path = os.path.join(HERE, "data", "mnist_sample.npz")
    if not os.path.exists(path):
        return torchvision.datasets.MNIST(os.path.join(HERE, "data"), download=True).data[:5000]
    with np.load(path) as sample:
        return torch.from_numpy(sample["images"])


def make_dataset(args, rank=0, world=1):
    """This process's share of the images under --data-root, cached where they fit; without any,
    the bundled digits."""
    root = args.data_root or os.path.join(HERE, "data", "celeba")
    # every picture at any depth, as in CelebA's, torchvision's and Kaggle's layouts; glob's "**"
    # skips hidden folders such as .ipynb_checkpoints
    found = glob.glob(os.path.join(glob.escape(root), "**", "*"), recursive=True)
    files = sorted(path for path in found if path.lower().endswith(IMAGE_TYPES))
    if files:
        folder = os.path.commonpath({os.path.dirname(path) for path in files})
        print(f"{len(files):,} images in {folder}")
        # Each process decodes and caches its own share.
        files = files[rank : len(files) // world * world : world]
        size = len(files) * world * 3 * 64 * 64
        why = "--no-cache" if args.cache is False else "over 1/4 of the memory"
        if args.cache is False or (args.cache is None and not fits_in_memory(size)):
            print(f"not caching {size / 1e9:.1f} GB ({why}): each epoch decodes them")
            return ImageSet(files=files)
        return ImageSet(images=cache_images(files, args))
    # The user named this folder: never swap in other data.
    if args.data_root:
        if os.path.isfile(root):
            fail(f"--data-root {root} is a file, not a folder", "give the folder of the images")
        what = "holds no images" if os.path.isdir(root) else "does not exist"
        fail(f"--data-root {root} {what}", "give a folder with .jpg or .png files, as CelebA's")
    print(
        f"no images in {root}: training on 5,000 MNIST digits at 64x64 (for faces, put CelebA's "
        "img_align_celeba/ there: mmlab.ie.cuhk.edu.hk/projects/CelebA.html)"
    )
    # offline without the sample, or the sample damaged
    try:
        digits = load_digits()
    except Exception as error:
        what = f"no images in {root}, and no digits either ({type(error).__name__})"
        fail(what, "restore data/mnist_sample.npz from the repository, or go online")
    digits = F.interpolate(digits.unsqueeze(1).float(), size=64, mode="bilinear")
    digits = digits.round().clamp(0, 255).to(torch.uint8)
    # Grey: the loop makes them RGB a batch at a time.
    return ImageSet(images=digits[rank : len(digits) // world * world : world])


def epoch_batches(dataset, batch_size, args, epoch, batches_done, count=None):
    """The epoch's uint8 batches after the first `batches_done` (`count` of them)."""
    # The order comes from (seed, epoch) alone: a resumed epoch goes on in the same order.
    seeded = torch.Generator().manual_seed(args.seed + epoch)
    order = torch.randperm(len(dataset), generator=seeded)
    order = order[batches_done * batch_size :].split(batch_size)[:count]
    if dataset.images is None:
        return decode(dataset.files, order, args.num_workers)
    images = dataset.images
    # the order copied to the images' device once an epoch: the steps never wait for the host
    order = torch.cat(order).to(images.device).split(batch_size)
    return (images[indices] for indices in order)


# --- The loop's bookkeeping: progress, losses, the files an epoch leaves ---
def progress_bar(args, first_epoch, batches_done, per_epoch, rank):
    """A bar over the steps this call will take, with the time they have left."""
    steps = (args.epochs - first_epoch + 1) * per_epoch - batches_done
    steps = max(0, min(steps, args.max_steps or steps))
    return tqdm(total=steps, unit="step", leave=False, disable=args.quiet or rank > 0)


def show_progress(bar, epoch_losses):
    """One step more on the bar; every 20, the last losses: reading one waits for the GPU."""
    bar.update()
    if len(epoch_losses) % 20 == 0 and not bar.disable:
        bar.set_postfix(dict(zip(["loss_d", "loss_g"], epoch_losses[-1].tolist())))


def stop_if_diverged(epoch_losses, epoch, every=100):
    """Every 100 steps (reading a loss waits for the GPU), and at an epoch's end: a NaN or inf loss
    ends the run; its last good checkpoint stays."""
    if len(epoch_losses) % every == 0 and not torch.stack(epoch_losses[-every:]).isfinite().all():
        fail(f"loss became NaN/inf in epoch {epoch}", "lower --lr or drop --amp")


def epoch_summary(epoch_losses, epoch):
    """The epoch's (D, G) losses as floats, checked for a NaN, their means said in one line."""
    stop_if_diverged(epoch_losses, epoch, every=len(epoch_losses))
    losses = torch.stack(epoch_losses).cpu()
    d_mean, g_mean = losses.mean(0).tolist()
    # above the bar, which stays at the bottom
    tqdm.write(f"epoch {epoch}: loss_d {d_mean:.3f}, loss_g {g_mean:.3f}")
    return losses.tolist()


def save_atomically(content, path):
    """An interrupted save never replaces the last good file; a failed one (a full disk) leaves no
    part of itself behind and ends the run in one line."""
    try:
        torch.save(content, path + ".tmp")
        os.replace(path + ".tmp", path)
    # torch.save says "enforce fail at inline_container.cc" where the disk is full
    except (OSError, RuntimeError) as error:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:80]
        fail(f"cannot write {path} ({reason})", "free some space, or give another --out")


def save_epoch(gan, args, fixed_noise, history, position, rank, device):
    """What an epoch (or its part, when the run stops) leaves: a grid and checkpoints. Every
    process's RNG states are gathered; rank 0 alone writes and returns the grid's images."""
    epoch, samples_done, epoch_samples = position
    rng = rng_states(device)
    if rank > 0:
        return None
    # eval(): BatchNorm's running statistics, as infer.py draws
    fake = gan.g_ema.eval()(fixed_noise).float()
    grid_path = os.path.join(args.out, f"fake_epoch_{epoch:03d}.png")
    torchvision.utils.save_image(fake, grid_path, normalize=True, value_range=(-1, 1))
    state = {f"{name}_state_dict": getattr(gan, name).state_dict() for name in TRAINED}
    last = dict(state, epoch=epoch, args=vars(args), losses=history, rng_states=rng)
    last.update(samples_done=samples_done, epoch_samples=epoch_samples)
    save_atomically(last, os.path.join(args.out, "checkpoint_last.pt"))
    # zhangxiann's lesson 8 snapshot: G (the one drawn) and D
    if samples_done == epoch_samples and epoch % args.save_every == 0:
        snapshot = {"g_model_state_dict": state["g_ema_state_dict"], "epoch": epoch}
        snapshot["d_model_state_dict"] = state["d_model_state_dict"]
        save_atomically(snapshot, os.path.join(args.out, f"checkpoint_epoch_{epoch:03d}.pt"))
    return fake


def save_gif(out, last_epoch):
    """progress.gif: the grids of about 100 epochs up to last_epoch (not an older run's later
    ones), evenly spaced, the first and the last kept: a few hundred open files fail on macOS."""
    epochs = {*range(1, last_epoch + 1, -(-last_epoch // 100)), last_epoch}
    grids = [os.path.join(out, f"fake_epoch_{epoch:03d}.png") for epoch in sorted(epochs)]
    frames = [Image.open(path) for path in grids if os.path.exists(path)]
    gif_path = os.path.join(out, "progress.gif")
    frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=400, loop=0)


# --- Checkpoints and resume ---
def load_checkpoint(path):
    """A checkpoint_last.pt and its run's flags; anything else is one line and exit 2."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        run_flags = {k: v for k, v in checkpoint["args"].items() if k not in CALL_FLAGS}
        # written before the position was counted in samples: one process's batches and RNG
        if "samples_done" not in checkpoint:
            batches_done = checkpoint["batches_done"]
            checkpoint["samples_done"] = batches_done * checkpoint["args"]["batch_size"]
            checkpoint["rng_states"] = [checkpoint["rng_state"]]
        # written before the GPU's RNG state was kept, or the epoch's size
        states = checkpoint["rng_states"]
        checkpoint["rng_states"] = [s if isinstance(s, dict) else {"cpu": s} for s in states]
        checkpoint.setdefault("epoch_samples", None)
    # missing, a folder, cut short, not a checkpoint, an epoch snapshot (no args)...
    except Exception as error:
        fail(
            f"--resume {path} cannot be read or holds no training state ({type(error).__name__})",
            "give the checkpoint_last.pt of a dcgan_celeba.py run",
        )
    return checkpoint, run_flags


def resume_training(gan, checkpoint, args, rank, world, device):
    """Loads a checkpoint into the GAN, G's optimizer at the --lr this run says, and the RNG;
    returns the losses so far (a fresh run: none)."""
    if checkpoint is None:
        return []
    try:
        for name in TRAINED:
            getattr(gan, name).load_state_dict(checkpoint[f"{name}_state_dict"])
    except (KeyError, RuntimeError, ValueError) as error:
        fail(f"{args.resume} does not fit these models ({type(error).__name__})", "use its flags")
    # load_state_dict brought back the saved rate: a --lr given again is the one that trains
    for group in gan.g_optimizer.param_groups:
        group["lr"] = args.lr
    # Each process draws its noise as if it had never stopped, if there are as many as before.
    if len(checkpoint["rng_states"]) == world:
        restore_rng(checkpoint["rng_states"][rank], device)
    return checkpoint["losses"]


def resume_position(checkpoint, args, epoch_samples):
    """Where a run goes on: its epoch and the batches done in it (a fresh run: 1, 0). The position
    is kept in samples: on any number of processes, a step of the same total batch goes on from
    the same sample (run() checked that the batch reaches it)."""
    if checkpoint is None:
        return 1, 0
    first_epoch = checkpoint["epoch"]
    batches_done = checkpoint["samples_done"] // args.batch_size
    # a checkpoint written as its epoch ended goes on with the next one
    if checkpoint["samples_done"] >= epoch_samples:
        first_epoch, batches_done = first_epoch + 1, 0
    if first_epoch > args.epochs:
        print(f"{args.resume} already has {first_epoch - 1} epochs: raise --epochs to train more")
    return first_epoch, batches_done


# --- Several GPUs, and a stop they agree on ---
def distribute(gan):
    """What a step calls, G and D, and the group that agrees on a stop: under torchrun, G and D in
    DDP and a group of all processes; on one process, the models themselves and None."""
    if not torch.distributed.is_initialized():
        return gan.g_model, gan.d_model, None
    # DDP starts every process from rank 0's weights; the average of G too
    generator = DDP(gan.g_model)
    for tensor in gan.g_ema.state_dict().values():
        torch.distributed.broadcast(tensor, src=0)
    # D runs twice before its backward: syncing its BatchNorm buffers in between breaks cuDNN.
    warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated")
    discriminator = DDP(gan.d_model, broadcast_buffers=False)
    # on the CPU (gloo): agreeing waits for no GPU
    return generator, discriminator, torch.distributed.new_group(backend="gloo")


@contextlib.contextmanager
def stop_signals():
    """Ctrl-C or a scheduler's SIGTERM sets the event: the step ends, the run saves and stops."""
    stop = threading.Event()

    def request_stop(signum, frame):
        # a second Ctrl-C ends at once, also a run waiting on a loader; under torchrun, whose
        # launcher passes a Ctrl-C on as a SIGTERM, the launcher ends the processes if need be
        if stop.is_set() and not torch.distributed.is_initialized():
            raise KeyboardInterrupt
        stop.set()

    handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    # a torchrun process ends with its run: a launcher's late SIGTERM then only sets the event
    finally:
        if not torch.distributed.is_initialized():
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def stop_agreed(stop, group):
    """Whether any process was told to stop: under torchrun, all then stop after the same step."""
    if group is None:
        return stop.is_set()
    flag = torch.tensor(float(stop.is_set()))
    torch.distributed.all_reduce(flag, torch.distributed.ReduceOp.MAX, group=group)
    return bool(flag)


def rng_states(device):
    """Every process's RNG states, rank 0's first: the CPU's, and on a GPU the GPU's, whose noise
    the steps draw. Each process then draws the same noise after a resume."""
    state = {"cpu": torch.get_rng_state()}
    if device.type in ("cuda", "mps"):
        state[device.type] = getattr(torch, device.type).get_rng_state()
    if not torch.distributed.is_initialized():
        return [state]
    states = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states


def restore_rng(state, device):
    """One process's RNG states; the GPU's only on a GPU of the same kind."""
    torch.set_rng_state(state["cpu"])
    if device.type != "cpu" and device.type in state:
        getattr(torch, device.type).set_rng_state(state[device.type])


# --- Device and precision, the output folder ---
def cpu_has_fast_bf16():
    """bf16 instructions: AVX-512 BF16 on x86, BF16 on Arm. The public check first: the private
    ones are missing from some builds (and torch.cpu's before torch 2.5)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if platform.machine().lower() in ("arm64", "aarch64"):
            return torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return torch.cpu._is_avx512_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def pick_device(args):
    """The device, and autocast's dtype there (None: fp32), said in one line."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    available = {"cuda": cuda, "mps": mps, "cpu": True}
    if args.device == "auto":
        args.device = next(name for name, present in available.items() if present)
    if not available[args.device]:
        fail(f"--device {args.device}: {args.device.upper()} is not available", "use cpu or auto")
    # under torchrun, this process's GPU
    index = int(os.getenv("LOCAL_RANK", 0)) if args.device == "cuda" else None
    device = torch.device(args.device, index)
    # on a CPU with bf16 instructions unless --no-amp; on CUDA only when asked: TF32 is as fast
    on_cpu = device.type == "cpu" and args.amp is not False and cpu_has_fast_bf16()
    # Colab's T4 and other GPUs before Ampere have no bf16
    on_cuda = device.type == "cuda" and bool(args.amp) and torch.cuda.is_bf16_supported()
    bf16 = on_cpu or on_cuda
    precision = "torch.bfloat16 autocast" if bf16 else "fp32"
    if args.amp and not bf16:
        precision += " (--amp: no fast bf16 on this device)"
    print(f"device: {args.device}, {precision}")
    return device, torch.bfloat16 if bf16 else None


def check_out(out):
    """Makes --out and writes a file there now, rather than fail after an epoch."""
    try:
        os.makedirs(out, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    # "File exists" where a file has the folder's name
    except OSError as error:
        fail(f"--out {out} cannot be written ({error.strerror})", "give a folder you can write to")


# --- run() and main(): flags, resume, notebooks, processes ---
def run(args, argv):
    # torchrun starts one process per GPU and tells each its rank and their number
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    distributed = "RANK" in os.environ
    # one process speaks for all; errors still go to stderr
    if rank > 0:
        sys.stdout = open(os.devnull, "w")
    checkpoint = None
    if args.resume:
        checkpoint, run_flags = load_checkpoint(args.resume)
        args = parse_args(argv, run_flags)
        for flag, value in run_flags.items():
            if getattr(args, flag) != value:
                given = f"--{flag.replace('_', '-')} {getattr(args, flag)}"
                print(f"resuming with {given} (the run's: {value})")
        mid_epoch = checkpoint["samples_done"] != checkpoint["epoch_samples"]
        if mid_epoch and checkpoint["samples_done"] % args.batch_size:
            what = f"{args.resume} stopped {checkpoint['samples_done']:,} images into its epoch"
            fail(f"{what}, which batches of {args.batch_size} do not reach", "use its --batch-size")
    # in a notebook, the last figures show inline
    args.show = args.show or "ipykernel" in sys.modules
    if not args.show:
        plt.switch_backend("Agg")
    # Where processes spawn (macOS, Windows), workers cannot import code pasted into a cell.
    pasted = __name__ == "__main__" and "ipykernel" in sys.modules
    if args.num_workers and pasted and torch.multiprocessing.get_start_method() != "fork":
        print("decoding in this process: spawned workers cannot import a pasted cell's code")
        args.num_workers = 0
    if args.batch_size % world:
        what = f"--batch-size {args.batch_size} does not split over {world} processes"
        fail(what, f"give a multiple of {world}: it is the total of a step")
    device, amp_dtype = pick_device(args)
    check_out(args.out)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if distributed:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    # DDP copies rank 0's weights to all; each process draws its own noise
    torch.manual_seed((args.seed + rank) % 2**32)
    generator, interrupted = train(args, device, rank, world, amp_dtype, checkpoint)
    if distributed:
        # none ends before rank 0 has written its files: torchrun stops the others when one ends
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    said = "interrupted: " if interrupted else ""
    print(f"{said}checkpoints, plots and per-epoch grids in {args.out}")
    if interrupted:
        sys.exit(130)
    return generator


def main(argv=None):
    """The command line's entry, and a notebook's: main(["--epochs", "5"]) returns G's average."""
    # Pasted into a notebook cell (no __file__), sys.argv holds the kernel's flags, not ours.
    if argv is None:
        argv = sys.argv[1:] if "__file__" in globals() else []
    try:
        return run(parse_args(argv), argv)
    # Ctrl-C before training: nothing to save yet
    except (SystemExit, KeyboardInterrupt) as stop:
        # in a notebook, the error's line is printed and the cell ends
        if "ipykernel" not in sys.modules:
            sys.exit(stop.code if isinstance(stop, SystemExit) else 130)


if __name__ == "__main__":
    main()
