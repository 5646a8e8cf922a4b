"""DCGAN on 64x64 faces: checkpoints, exact resume, mixed precision, multi-GPU.

    python dcgan_celeba.py --epochs 20                      # CelebA in data/celeba, else 100 demo faces
    torchrun --nproc_per_node=4 dcgan_celeba.py --epochs 20  # one process per GPU (DDP)
    python dcgan_celeba.py --resume runs/dcgan_celeba/checkpoint_last.pt --epochs 30

Mirrors the DCGAN tutorial (shared/tutorials/dcgan_celeba.md) and the checkpoint format, data
handling and label smoothing of shared/tutorials/infer_and_dcgan.md.
"""
import argparse
import os
import random
import sys
from contextlib import nullcontext

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.utils as vutils
from PIL import Image
from tqdm import tqdm

Z_DIM = 100
HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_FACES = os.path.join(HERE, "data", "faces_sample.npz")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MODEL_FLAGS = ("image_size",)  # a checkpoint made with other values cannot be resumed


def positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=positive(int), default=20, help="train until this epoch (tutorial: 50)")
    p.add_argument("--batch-size", type=positive(int), default=128, help="images per batch, per process")
    p.add_argument("--lr", type=positive(float), default=2e-4, help="Adam learning rate for G and D")
    p.add_argument("--seed", type=int, default=0, help="seeds python, numpy and torch")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: cuda, mps, cpu")
    p.add_argument("--out", default="runs/dcgan_celeba", help="folder for every file written")
    p.add_argument("--max-steps", type=positive(int), help="stop after this many iterations in total (smoke runs)")
    p.add_argument("--data-root", help="folder of images, any depth (default data/celeba; if that holds none, "
                   "the 100 bundled demo faces)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (0: load in the main one)")
    p.add_argument("--image-size", type=int, default=64, choices=[64], help="the models are built for 64x64")
    p.add_argument("--label-smoothing", action="store_true", help="D's targets 0.9 for real, 0.1 for fake")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (bf16 where supported, else fp16)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint_*.pt at its next epoch")
    p.add_argument("--save-every", type=positive(int), default=5, help="also keep checkpoint_epoch_NNN.pt this often")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the figures in a window")
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, no usage dump
    args = p.parse_args(argv)
    if args.num_workers < 0:
        p.error(f"argument --num-workers: must be 0 or more, got {args.num_workers}")
    return args


def fail(what, fix):
    print(f"error: {what} ({fix})", file=sys.stderr)
    sys.exit(2)


# ---- data
class ImageFiles(torch.utils.data.Dataset):
    """Every image file under `root`, at any depth (CelebA's img_align_celeba/*.jpg, or a flat folder)."""

    def __init__(self, root, image_size):
        self.paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        self.transform = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(),
                                    T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])  # to tanh's [-1, 1]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            with Image.open(self.paths[index]) as image:
                return self.transform(image.convert("RGB"))
        except OSError as error:
            raise ValueError(f"unreadable image {self.paths[index]}: {error}") from None


class DemoFaces(torch.utils.data.Dataset):
    """The 100 bundled 25x25 grayscale LFW faces, as 3x64x64 in [-1, 1], randomly flipped."""

    def __init__(self, image_size):
        with np.load(DEMO_FACES) as f:
            faces = torch.from_numpy(f["images"]).float().div(127.5).sub(1.0).unsqueeze(1)
        self.faces = F.interpolate(faces, size=image_size, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)

    def __len__(self):
        return len(self.faces)

    def __getitem__(self, index):
        face = self.faces[index]
        return face.flip(-1) if torch.rand(()) < 0.5 else face


def make_dataset(args, is_main):
    root = args.data_root or os.path.join(HERE, "data", "celeba")
    dataset = ImageFiles(root, args.image_size) if os.path.isdir(root) else None
    if dataset is not None and len(dataset) > 0:
        return dataset
    if args.data_root:  # the user named a folder: never swap in other data
        fail(f"--data-root {args.data_root} {'holds no images' if dataset is not None else 'does not exist'}",
             f"point it at a folder of {'/'.join(IMAGE_EXTENSIONS)} files, at any depth")
    if is_main:
        print(f"no images in {root}: training on the 100 bundled demo faces (for CelebA, put "
              "img_align_celeba/*.jpg from mmlab.ie.cuhk.edu.hk/projects/CelebA.html there)")
    return DemoFaces(args.image_size)


# ---- models, as the tutorial writes them
class Generator(nn.Module):
    def __init__(self, in_channels=3, z_dim=Z_DIM):
        super().__init__()
        self.gen = nn.Sequential(
            self.create_upblock(z_dim, 1024, kernel_size=4, stride=1, padding=0),  # 1024 x 4 x 4
            self.create_upblock(1024, 512, kernel_size=4, stride=2, padding=1),    # 512 x 8 x 8
            self.create_upblock(512, 256, kernel_size=4, stride=2, padding=1),     # 256 x 16 x 16
            self.create_upblock(256, 128, kernel_size=4, stride=2, padding=1),     # 128 x 32 x 32
            # tutorial: writes 3 here, ignoring in_channels
            self.create_upblock(128, in_channels, kernel_size=4, stride=2, padding=1, final_layer=True),  # 3 x 64 x 64
        )

    def create_upblock(self, in_channels, out_channels, kernel_size=5, stride=2, padding=1, final_layer=False):
        conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        if final_layer:  # BatchNorm before Tanh on the output, as the tutorial prints it (the DCGAN paper has none)
            return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.Tanh())
        return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(True))

    def forward(self, noise):
        assert len(noise.shape) == 4, "random vector of shape=(N, 100, 1, 1)"
        return self.gen(noise)


class Discriminator(nn.Module):
    def __init__(self, im_chan=3, hidden_dim=32):
        super().__init__()
        self.disc = nn.Sequential(
            self.make_disc_block(im_chan, hidden_dim),                         # 32 x 31 x 31
            self.make_disc_block(hidden_dim, hidden_dim * 2),                  # 64 x 14 x 14
            self.make_disc_block(hidden_dim * 2, hidden_dim * 4, stride=1),    # 128 x 11 x 11
            self.make_disc_block(hidden_dim * 4, hidden_dim * 4, stride=2),    # 128 x 4 x 4
            self.make_disc_block(hidden_dim * 4, 1, final_layer=True),         # 1 x 1 x 1: a logit
        )

    def make_disc_block(self, input_channels, output_channels, kernel_size=4, stride=2, final_layer=False):
        if not final_layer:
            return nn.Sequential(nn.Conv2d(input_channels, output_channels, kernel_size, stride),
                                 nn.BatchNorm2d(output_channels), nn.LeakyReLU(0.2))
        return nn.Sequential(nn.Conv2d(input_channels, output_channels, kernel_size, stride))

    def forward(self, image):
        disc_pred = self.disc(image)
        return disc_pred.view(len(disc_pred), -1)


def weights_init(m):  # N(0, 0.02) for convolutions; BatchNorm scale N(1, 0.02), as infer_and_dcgan.md
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# ---- one training iteration
def train_step(generator, discriminator, g_optimizer, d_optimizer, real, label_smoothing=False,
               scaler=None, autocast=nullcontext):
    """One D update on real and fake.detach(), then one G update on the same fake. Returns (d_loss, g_loss)."""
    real_label, fake_label = (0.9, 0.1) if label_smoothing else (1.0, 0.0)
    scaler = scaler or torch.amp.GradScaler(enabled=False)  # disabled: scale() and step() pass through
    # tutorial: builds a second fake batch for G (with retain_graph=True on D's loss); one serves both
    noise = torch.randn(len(real), Z_DIM, 1, 1, device=real.device)

    # (1) Update D: maximize log D(x) + log(1 - D(G(z)))
    d_optimizer.zero_grad()
    with autocast():
        fake = generator(noise)
        fake_logits, real_logits = discriminator(fake.detach()), discriminator(real)
        d_loss = (F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_label)) +
                  F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))) / 2
    scaler.scale(d_loss).backward()
    scaler.step(d_optimizer)

    # (2) Update G: maximize log D(G(z))
    g_optimizer.zero_grad()
    with autocast():
        fake_logits = discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    scaler.scale(g_loss).backward()
    scaler.step(g_optimizer)
    scaler.update()
    return d_loss.detach(), g_loss.detach()


# ---- checkpoints
def save_atomically(obj, path):
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)  # an interrupted save never replaces the last good file


def load_checkpoint(path):
    if not os.path.isfile(path):
        fail(f"checkpoint {path} does not exist", "give the path of a checkpoint_*.pt written by dcgan_celeba.py")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickle garbage, a non-tensor object...
        fail(f"checkpoint {path} cannot be read: {type(error).__name__}", "it is corrupt; use another checkpoint")
    if not isinstance(checkpoint, dict) or "g_model_state_dict" not in checkpoint:
        fail(f"{path} is not a dcgan_celeba.py checkpoint (no g_model_state_dict)", "give a checkpoint_*.pt")
    return checkpoint


def resume(args, checkpoint, models_and_optimizers, restore_rng=True):
    for flag in MODEL_FLAGS:
        theirs = checkpoint.get("args", {}).get(flag)
        if theirs != getattr(args, flag):
            fail(f"--resume {args.resume} was made with --{flag.replace('_', '-')} {theirs}, "
                 f"not {getattr(args, flag)}", "resume with the same model flags")
    try:
        for key, thing in models_and_optimizers.items():
            thing.load_state_dict(checkpoint[key])
    except (KeyError, RuntimeError, ValueError) as error:
        fail(f"--resume {args.resume} does not fit these models: {str(error).splitlines()[0]}",
             "resume a checkpoint written by this dcgan_celeba.py")
    if restore_rng:  # the next epoch shuffles and draws noise as if never stopped (rank 0's state: not under DDP)
        torch.set_rng_state(checkpoint["rng_state"])
    return checkpoint["epoch"] + 1, checkpoint["losses"]


# ---- plots
def save_plots(losses, out, real, fake, show=False):
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(losses["d"], label="D", alpha=0.8)
    ax.plot(losses["g"], label="G", alpha=0.8)
    ax.set(xlabel="iteration", ylabel="loss", title="Generator and discriminator loss during training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "losses.png"), dpi=100)
    grids = sorted(f for f in os.listdir(out) if f.startswith("fake_epoch_") and f.endswith(".png"))
    frames = [Image.open(os.path.join(out, f)) for f in grids]
    frames[0].save(os.path.join(out, "progress.gif"), save_all=True, append_images=frames[1:], duration=400, loop=0)
    if real is not None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 6))
        for ax, images, title in ((axes[0], real, "Real images"), (axes[1], fake, "Fake images")):
            grid = vutils.make_grid(images[:64].float().cpu(), padding=2, normalize=True, value_range=(-1, 1))
            ax.imshow(grid.permute(1, 2, 0).numpy())
            ax.set(title=title, xticks=[], yticks=[])
        fig.tight_layout()
        fig.savefig(os.path.join(out, "real_vs_fake.png"), dpi=100)
    if show:
        plt.show()
    plt.close("all")


# ---- the loop
def train(args, device, rank, world):
    is_main = rank == 0
    dataset = make_dataset(args, is_main)
    sampler = torch.utils.data.DistributedSampler(dataset, seed=args.seed) if world > 1 else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None,
                                         sampler=sampler, num_workers=args.num_workers,
                                         pin_memory=device.type == "cuda")
    # channels_last: the layout oneDNN and cuDNN convolutions run fastest in
    g_model = Generator().to(device, memory_format=torch.channels_last).apply(weights_init)
    d_model = Discriminator().to(device, memory_format=torch.channels_last).apply(weights_init)
    g_optimizer = torch.optim.Adam(g_model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(d_model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    fixed_noise = torch.randn(64, Z_DIM, 1, 1, device=device)
    start_epoch, losses = 1, {"d": [], "g": []}
    if args.resume:
        start_epoch, losses = resume(args, load_checkpoint(args.resume), {
            "g_model_state_dict": g_model, "d_model_state_dict": d_model,
            "g_optimizer_state_dict": g_optimizer, "d_optimizer_state_dict": d_optimizer}, restore_rng=world == 1)
        if start_epoch > args.epochs and is_main:
            print(f"{args.resume} already has {start_epoch - 1} epochs: raise --epochs to train more")
    generator, discriminator = g_model, d_model  # the bare modules are what gets saved: no prefixes
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        generator = nn.parallel.DistributedDataParallel(g_model, device_ids=ids)
        discriminator = nn.parallel.DistributedDataParallel(d_model, device_ids=ids)
    if args.compile:
        generator, discriminator = torch.compile(generator), torch.compile(discriminator)
    use_amp = args.amp and device.type == "cuda"
    if args.amp and not use_amp and is_main:
        print("--amp: mixed precision is for CUDA; training in fp32")
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    def checkpoint(epoch):
        state = {"g_model_state_dict": g_model.state_dict(), "d_model_state_dict": d_model.state_dict(),
                 "g_optimizer_state_dict": g_optimizer.state_dict(),
                 "d_optimizer_state_dict": d_optimizer.state_dict(),
                 "epoch": epoch, "args": vars(args), "rng_state": torch.get_rng_state(), "losses": losses}
        save_atomically(state, os.path.join(args.out, "checkpoint_last.pt"))
        if epoch % args.save_every == 0:
            save_atomically(state, os.path.join(args.out, f"checkpoint_epoch_{epoch:03d}.pt"))

    step, shown_real, interrupted = 0, None, False
    for epoch in range(start_epoch, args.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every process
        epoch_losses = []  # (D, G) per iteration, kept on the device until the epoch ends
        bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", disable=args.quiet or not is_main, leave=False)
        try:
            for real in bar:
                real = real.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                shown_real = real if shown_real is None or len(real) > len(shown_real) else shown_real
                d_loss, g_loss = train_step(generator, discriminator, g_optimizer, d_optimizer, real,
                                            args.label_smoothing, scaler, autocast)
                epoch_losses.append(torch.stack([d_loss, g_loss]).float())
                step += 1
                if step % 10 == 0 and is_main and not args.quiet:  # .item() waits for the GPU: not every step
                    bar.set_postfix(D=f"{d_loss.item():.3f}", G=f"{g_loss.item():.3f}")
                if step == args.max_steps:
                    break
        except KeyboardInterrupt:
            interrupted = True
        except ValueError as error:  # an unreadable image; from a worker, after the worker's traceback
            message = str(error)
            if "unreadable image" not in message:
                raise
            fail(message[message.rfind("unreadable image"):].splitlines()[0], "delete or replace that file")
        if not epoch_losses:
            break
        d_losses, g_losses = torch.stack(epoch_losses).cpu().unbind(dim=1)
        if not (d_losses.isfinite().all() and g_losses.isfinite().all()):
            fail(f"loss became NaN/inf in epoch {epoch}",
                 "lower --lr or drop --amp; checkpoint_last.pt is the last good one")
        losses["d"] += d_losses.tolist()
        losses["g"] += g_losses.tolist()
        if is_main:
            g_model.eval()  # running statistics, as infer.py draws them
            with torch.no_grad():
                fake = g_model(fixed_noise)
            g_model.train()
            vutils.save_image(fake.float(), os.path.join(args.out, f"fake_epoch_{epoch:03d}.png"),
                              nrow=8, normalize=True, value_range=(-1, 1))
            checkpoint(epoch)
            save_plots(losses, args.out, shown_real, fake, args.show and (interrupted or epoch == args.epochs))
            if not args.quiet:
                print(f"epoch {epoch}/{args.epochs}: loss_d {d_losses.mean():.3f}, loss_g {g_losses.mean():.3f}")
        if interrupted or step == args.max_steps:
            break
    return interrupted


def main(argv=None):
    args = parse_args(argv)
    if not args.show:
        plt.switch_backend("Agg")
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if args.device == "auto":
        args.device = next(name for name in ("cuda", "mps", "cpu") if available[name])
        if rank == 0:
            print(f"device: {args.device}")
    if not available[args.device]:
        fail(f"--device {args.device} but {args.device.upper()} is not available", "use --device cpu or auto")
    device = torch.device(args.device)
    if world > 1:  # started by torchrun: one process per GPU (or CPU worker)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)  # DDP copies rank 0's weights; other ranks draw their own noise
    os.makedirs(args.out, exist_ok=True)
    try:
        interrupted = train(args, device, rank, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"{'interrupted: ' if interrupted else ''}checkpoint_last.pt, losses.png, progress.gif, "
              f"real_vs_fake.png and per-epoch grids in {args.out}")
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
