"""DCGAN on 64x64 images, after Aniket Maurya's "DCGAN Tutorial" (Analytics Vidhya, with a Colab notebook):
https://medium.com/analytics-vidhya/dcgan-tutorial-by-aniket-maurya-f6c137ef0053

    python dcgan_celeba.py --epochs 20                       # CelebA in data/celeba, else bundled digits
    torchrun --nproc_per_node=4 dcgan_celeba.py --epochs 20  # one process per GPU (DDP)
"""
import argparse
import os
import platform
import sys
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

Z_DIM = 100
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."  # "." for a pasted cell


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="train until this epoch (tutorial: 50)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch, per process")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate for G and D")
    p.add_argument("--seed", type=int, default=0, help="seeds torch (0 to 2**32 - 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: GPU first")
    p.add_argument("--out", default="runs/dcgan_celeba", help="folder for every file written")
    p.add_argument("--max-steps", type=int, help="stop after this many iterations in total (smoke runs)")
    p.add_argument("--data-root", help="images in sub-folders (default data/celeba, else bundled digits)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (0: the main one)")
    p.add_argument("--label-smoothing", action="store_true", help="D's targets 0.9 for real, 0.1 for fake")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="mixed precision (bf16 CPU: default)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint_*.pt at its next epoch")
    p.add_argument("--save-every", type=int, default=5, help="also keep checkpoint_epoch_NNN.pt this often")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the figures in a window")
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, no usage dump
    args = p.parse_args(argv)
    for flag in ("epochs", "batch_size", "lr", "max_steps", "save_every"):
        if getattr(args, flag) is not None and not 0 < getattr(args, flag) < float("inf"):
            p.error(f"argument --{flag.replace('_', '-')}: must be positive, got {getattr(args, flag)}")
    if not (0 <= args.num_workers <= 64 and 0 <= args.seed < 2**32):
        p.error(f"--num-workers must be 0 to 64 and --seed 0 to 2**32 - 1 ({args.num_workers}, {args.seed})")
    return args


def fail(what, fix):
    print(f"error: {what} ({fix})", file=sys.stderr)
    sys.exit(2)


def load_image(path):  # torchvision's own loader does not name the file when a truncated image fails
    try:
        return Image.open(path).convert("RGB")  # convert() reads the pixels and closes the file
    except OSError as error:
        raise OSError(f"{path}: {error}") from None


def make_dataset(args, is_main):
    root = args.data_root or os.path.join(HERE, "data", "celeba")
    transform = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    try:
        return torchvision.datasets.ImageFolder(root, transform, loader=load_image)
    except OSError:  # missing, a file, or no image in a sub-folder
        if args.data_root:  # the user named a folder: never swap in other data
            what = "is a file, not a folder" if os.path.isfile(root) else "does not exist"
            what = "holds no images in sub-folders" if os.path.isdir(root) else what
            fail(f"--data-root {root} {what}", "give a folder of .jpg/.png files in sub-folders, as CelebA")
    if is_main:
        print(f"no images in {root}: training on 5,000 MNIST digits at 64x64 (for faces, "
              "put CelebA's img_align_celeba/ there: mmlab.ie.cuhk.edu.hk/projects/CelebA.html)")
    try:  # the bundled sample; this file alone (pasted into a notebook, say) takes MNIST's first 5,000
        with np.load(os.path.join(HERE, "data", "mnist_sample.npz")) as f:
            digits, labels = torch.from_numpy(f["images"]), torch.from_numpy(f["labels"])
    except FileNotFoundError:
        try:
            mnist = torchvision.datasets.MNIST(os.path.join(HERE, "data"), download=True)
        except (RuntimeError, OSError) as error:  # offline
            fail(f"no images in {root}, no bundled digits, no MNIST download ({type(error).__name__})",
                 "put CelebA's img_align_celeba/ in data/celeba or run this from a clone of the repository")
        digits, labels = mnist.data[:5000], mnist.targets[:5000]
    digits = F.interpolate(digits.unsqueeze(1) / 127.5 - 1.0, size=64, mode="bilinear").clamp(-1.0, 1.0)
    return torch.utils.data.TensorDataset(digits.expand(-1, 3, -1, -1), labels)  # grey as RGB, no copy


class Generator(nn.Module):
    def __init__(self, in_channels=3, z_dim=Z_DIM):
        super().__init__()
        self.gen = nn.Sequential(
            self.create_upblock(z_dim, 1024, kernel_size=4, stride=1, padding=0),  # 1024 x 4 x 4
            self.create_upblock(1024, 512, kernel_size=4, stride=2, padding=1),    # 512 x 8 x 8
            self.create_upblock(512, 256, kernel_size=4, stride=2, padding=1),     # 256 x 16 x 16
            self.create_upblock(256, 128, kernel_size=4, stride=2, padding=1),     # 128 x 32 x 32
            # tutorial: 3 channels here, ignoring in_channels
            self.create_upblock(128, in_channels, kernel_size=4, stride=2, padding=1, final_layer=True),
        )  # 3 x 64 x 64 in [-1, 1]

    def create_upblock(self, in_channels, out_channels, kernel_size=5, stride=2, padding=1,
                       final_layer=False):
        conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        if final_layer:  # tutorial: BatchNorm before Tanh, which pins each batch's mean at grey
            return nn.Sequential(conv, nn.Tanh())
        return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(True))

    def forward(self, noise):
        assert len(noise.shape) == 4, "random vector of shape=(N, 100, 1, 1)"
        return self.gen(noise)


class Discriminator(nn.Module):
    def __init__(self, im_chan=3, hidden_dim=32):
        super().__init__()
        self.disc = nn.Sequential(
            self.make_disc_block(im_chan, hidden_dim, batch_norm=False),       # 32 x 32 x 32
            self.make_disc_block(hidden_dim, hidden_dim * 2),                  # 64 x 16 x 16
            self.make_disc_block(hidden_dim * 2, hidden_dim * 4),              # 128 x 8 x 8
            self.make_disc_block(hidden_dim * 4, hidden_dim * 4),              # 128 x 4 x 4
            self.make_disc_block(hidden_dim * 4, 1, stride=1, final_layer=True),  # 1 x 1 x 1: a logit
        )

    def make_disc_block(self, input_channels, output_channels, kernel_size=4, stride=2, final_layer=False,
                        batch_norm=True):
        # tutorial: no padding, the third block at stride 1 and BatchNorm on the input block: D wins at once
        conv = nn.Conv2d(input_channels, output_channels, kernel_size, stride, 0 if final_layer else 1)
        if final_layer:
            return nn.Sequential(conv)
        norm = [nn.BatchNorm2d(output_channels)] if batch_norm else []
        return nn.Sequential(conv, *norm, nn.LeakyReLU(0.2))

    def forward(self, image):
        disc_pred = self.disc(image)
        return disc_pred.view(len(disc_pred), -1)


def weights_init(m):  # N(0, 0.02) for convolutions; BatchNorm scale N(1, 0.02), as zhangxiann's lesson 8
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def train_step(generator, discriminator, g_optimizer, d_optimizer, real, label_smoothing=False,
               scaler=None, amp_dtype=None):
    """One D update on real and fake.detach(), then one G update on the same fake. Returns both losses."""
    real_label, fake_label = (0.9, 0.1) if label_smoothing else (1.0, 0.0)  # zhangxiann's lesson 8 trick
    scaler = scaler or torch.amp.GradScaler(enabled=False)  # disabled: scale() and step() pass through
    autocast = torch.autocast(real.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    # (1) Update D: maximize log D(x) + log(1 - D(G(z)))
    d_optimizer.zero_grad()
    with autocast:
        # tutorial: a second fake batch for G, and retain_graph=True on D's loss; one batch serves both
        fake = generator(torch.randn(len(real), Z_DIM, 1, 1, device=real.device))
        fake_logits, real_logits = discriminator(fake.detach()), discriminator(real)
        loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_label))
        loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
        d_loss = (loss_fake + loss_real) / 2  # the tutorial averages the two halves
    scaler.scale(d_loss).backward()
    scaler.step(d_optimizer)
    # (2) Update G: maximize log D(G(z))
    g_optimizer.zero_grad()
    with autocast:
        fake_logits = discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    scaler.scale(g_loss).backward()
    scaler.step(g_optimizer)
    scaler.update()
    return d_loss.detach(), g_loss.detach()


def save_atomically(obj, path):
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)  # an interrupted save never replaces the last good file


def load_checkpoint(path, state):  # -> (next epoch, losses, rng state)
    if not os.path.isfile(path):
        what = "is a folder, not a checkpoint file" if os.path.isdir(path) else "does not exist"
        fail(f"--resume {path} {what}", "give a checkpoint_*.pt written by dcgan_celeba.py")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        for key, thing in state.items():
            thing.load_state_dict(checkpoint[key])
        return checkpoint["epoch"] + 1, checkpoint["losses"], checkpoint["rng_state"]
    except Exception as error:  # a truncated file, pickle garbage, the weights of other models...
        fail(f"--resume {path} cannot be read or does not fit these models ({type(error).__name__})",
             "resume a checkpoint written by this dcgan_celeba.py")


def train(args, device, rank, distributed, amp_dtype):
    dataset = make_dataset(args, rank == 0)
    sampler = torch.utils.data.DistributedSampler(dataset, seed=args.seed) if distributed else None
    loader = torch.utils.data.DataLoader(dataset, args.batch_size, shuffle=sampler is None, sampler=sampler,
                                         num_workers=args.num_workers, pin_memory=device.type == "cuda")
    # channels_last: the layout oneDNN and cuDNN convolutions run fastest in; compiled, it fails on CUDA:
    layout = torch.contiguous_format if args.compile else torch.channels_last  # pytorch/pytorch#171622
    g_model = Generator().to(device, memory_format=layout).apply(weights_init)
    d_model = Discriminator().to(device, memory_format=layout).apply(weights_init)
    g_optimizer = torch.optim.Adam(g_model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(d_model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    fixed_noise = torch.randn(64, Z_DIM, 1, 1, device=device)
    state = {"g_model_state_dict": g_model, "d_model_state_dict": d_model,
             "g_optimizer_state_dict": g_optimizer, "d_optimizer_state_dict": d_optimizer}
    start_epoch, losses = 1, {"d": [], "g": []}
    if args.resume:
        start_epoch, losses, rng_state = load_checkpoint(args.resume, state)
        if not distributed:  # the next epoch shuffles and draws noise as if never stopped (one process only)
            torch.set_rng_state(rng_state)
        if start_epoch > args.epochs and rank == 0:
            print(f"{args.resume} already has {start_epoch - 1} epochs: raise --epochs to train more")
    generator, discriminator = g_model, d_model  # the bare modules are what gets saved: no prefixes
    if distributed:  # each process computes gradients on its share of the batch; DDP averages them
        # D runs twice before its backward: syncing its BatchNorm buffers in between breaks cuDNN's backward
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated")  # its successor: torch 2.14+
        generator, discriminator = DDP(g_model), DDP(d_model, broadcast_buffers=False)
    if args.compile:
        generator, discriminator = torch.compile(generator), torch.compile(discriminator)
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)  # fp16 only: bf16 needs no scaling
    step, interrupted, shown_real = 0, False, None
    for epoch in range(start_epoch, args.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every process
        epoch_losses = []  # (D, G) per iteration, kept on the device until the epoch ends
        bar = tqdm(iter(loader), total=len(loader), desc=f"epoch {epoch}/{args.epochs}", leave=False,
                   disable=args.quiet or rank > 0)  # an iterator: tqdm.auto would start another (tqdm#1598)
        try:
            for real, _ in bar:
                real = real.to(device, non_blocking=True).contiguous(memory_format=layout)
                shown_real = real if shown_real is None else shown_real  # a full batch for real_vs_fake.png
                d_loss, g_loss = train_step(generator, discriminator, g_optimizer, d_optimizer, real,
                                            args.label_smoothing, scaler, amp_dtype)
                epoch_losses.append(torch.stack([d_loss, g_loss]).float())
                step += 1
                if step == args.max_steps:
                    break
        except KeyboardInterrupt:
            interrupted = True
        except OSError as error:  # from load_image; from a worker, its message's last line
            fail(f"unreadable image: {str(error).strip().splitlines()[-1]}", "delete or replace the file")
        if not epoch_losses:
            break
        d_losses, g_losses = torch.stack(epoch_losses).cpu().unbind(dim=1)
        if not (d_losses.isfinite().all() and g_losses.isfinite().all()):
            fail(f"loss became NaN/inf in epoch {epoch}", "lower --lr or drop --amp; checkpoints are kept")
        losses["d"] += d_losses.tolist()
        losses["g"] += g_losses.tolist()
        if rank == 0:
            g_model.eval()  # running statistics, as infer.py draws them
            with torch.no_grad():
                fake = g_model(fixed_noise).float()
            g_model.train()
            torchvision.utils.save_image(fake, os.path.join(args.out, f"fake_epoch_{epoch:03d}.png"),
                                         normalize=True, value_range=(-1, 1))
            checkpoint = {key: thing.state_dict() for key, thing in state.items()}
            checkpoint.update(epoch=epoch, args=vars(args), rng_state=torch.get_rng_state(), losses=losses)
            save_atomically(checkpoint, os.path.join(args.out, "checkpoint_last.pt"))
            if epoch % args.save_every == 0:
                save_atomically(checkpoint, os.path.join(args.out, f"checkpoint_epoch_{epoch:03d}.pt"))
            last = interrupted or epoch == args.epochs or step == args.max_steps
            save_plots(losses, args.out, shown_real, fake, epoch, show=args.show and last)
            print(f"epoch {epoch}: loss_d {d_losses.mean():.3f}, loss_g {g_losses.mean():.3f}")
        if interrupted or step == args.max_steps:
            break
    return g_model, interrupted


def save_plots(losses, out, real, fake, epoch, show=False):
    plt.figure(figsize=(8, 4))
    plt.plot(np.column_stack([losses["d"], losses["g"]]), label=["D", "G"], alpha=0.8)
    plt.gca().set(xlabel="iteration", ylabel="loss", title="Generator and discriminator loss during training")
    plt.legend()
    plt.savefig(os.path.join(out, "losses.png"), dpi=100, bbox_inches="tight")
    grids = [os.path.join(out, f"fake_epoch_{e:03d}.png") for e in range(1, epoch + 1)]
    frames = [Image.open(path) for path in grids if os.path.exists(path)]  # not an older run's later epochs
    frames[0].save(os.path.join(out, "progress.gif"), save_all=True, append_images=frames[1:], duration=400,
                   loop=0)
    _, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, images, title in ((axes[0], real, "Real images"), (axes[1], fake, "Fake images")):
        grid = torchvision.utils.make_grid(images[:64].float().cpu(), normalize=True, value_range=(-1, 1))
        ax.imshow(grid.permute(1, 2, 0).numpy())
        ax.set(title=title, xticks=[], yticks=[])
    plt.savefig(os.path.join(out, "real_vs_fake.png"), dpi=100, bbox_inches="tight")
    if show:
        plt.show()
    plt.close("all")


def run(args):
    args.show = args.show or "ipykernel" in sys.modules  # in a notebook, the last figures show inline
    if not args.show:
        plt.switch_backend("Agg")
    rank, distributed = int(os.environ.get("RANK", "0")), "RANK" in os.environ  # torchrun sets RANK
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if args.device == "auto":
        args.device = next(name for name in ("cuda", "mps", "cpu") if available[name])
    if not available[args.device]:
        fail(f"--device {args.device} but {args.device.upper()} is not available", "use --device cpu or auto")
    try:  # now, not after an epoch
        os.makedirs(args.out, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as error:
        what = f"cannot be written ({error.strerror})"
        what = "is a file, not a folder" if os.path.isfile(args.out) else what
        fail(f"--out {args.out} {what}", "give a folder you can write to")
    device = torch.device(args.device)
    arm = platform.machine().lower() in ("arm64", "aarch64")  # bf16 instructions: AVX-512 BF16, Arm's BF16
    fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() if arm else torch.cpu._is_avx512_bf16_supported()
    amp_dtype = torch.bfloat16 if device.type == "cpu" and args.amp is not False and fast_bf16 else None
    if device.type == "cuda" and args.amp:  # not by default: bf16 was no faster than TF32 on an H200
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if rank == 0:  # the device, and what --amp or its default on a bf16 CPU chose
        fp32 = "fp32 (--amp: no fast bf16 on this device)" if args.amp else "fp32"
        print(f"device: {args.device}, {f'{amp_dtype} autocast' if amp_dtype else fp32}")
    if distributed:  # started by torchrun: one process per GPU (or CPU worker)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed((args.seed + rank) % 2**32)  # DDP copies rank 0's weights; ranks draw their own noise
    generator, interrupted = train(args, device, rank, distributed, amp_dtype)
    if distributed:
        dist.destroy_process_group()
    if rank == 0:
        print(f"{'interrupted: ' if interrupted else ''}checkpoints, plots and per-epoch grids in {args.out}")
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
