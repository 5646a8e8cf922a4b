"""DCGAN on 64x64 images, after Aniket Maurya's "DCGAN Tutorial" (Analytics Vidhya, with a Colab notebook):
https://medium.com/analytics-vidhya/dcgan-tutorial-by-aniket-maurya-f6c137ef0053
    python dcgan_celeba.py --epochs 20                       # CelebA under data/celeba, else bundled digits
    torchrun --nproc_per_node=4 dcgan_celeba.py --epochs 20  # one process per GPU (DDP)"""
import argparse
import copy
import glob
import os
import platform
import signal
import sys
import tempfile
import warnings

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
EMA_DECAY = 0.995  # the average of G that we draw from follows about its last 1 / (1 - 0.995) = 200 steps
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."  # "." for a pasted cell
IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
PER_CALL = ("device", "max_steps", "num_workers", "cache", "resume", "quiet", "show")  # not from --resume


def parse_args(argv=None, defaults=None):  # defaults: a resumed run's own flags
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="train until this epoch (tutorial: 50)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch, per process")
    p.add_argument("--lr", type=float, default=2e-4, help="G's Adam learning rate; D's stays 2e-4")
    p.add_argument("--tutorial-recipe", action="store_true", help="the tutorial's models as printed, last G")
    p.add_argument("--seed", type=int, default=0, help="seeds torch and the data order (0 to 2**32 - 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="auto: GPU first")
    p.add_argument("--out", default="runs/dcgan_celeba", help="folder for every file written")
    p.add_argument("--max-steps", type=int, help="stop after this many iterations of this call (smoke runs)")
    p.add_argument("--data-root", help="all images under it, at any depth (default data/celeba, else digits)")
    p.add_argument("--num-workers", type=int, default=min(os.cpu_count() or 1, 16), help="decoding processes")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, help="decode once (default: if it fits)")
    p.add_argument("--label-smoothing", action=argparse.BooleanOptionalAction, default=False, help="0.9, 0.1")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (bf16 CPU: default)")
    p.add_argument("--resume", metavar="CKPT", help="go on where checkpoint_last.pt stopped, with its flags")
    p.add_argument("--save-every", type=int, default=10, help="checkpoint_epoch_NNN.pt (G, D) this often")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true", help="also open the figures in a window")
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, no usage dump
    p.set_defaults(**(defaults or {}))
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


def load_images(paths):  # -> uint8 (len(paths), 3, 64, 64) or a text naming the bad file; runs in workers
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (64, 64))  # a JPEG decodes at 1/2 or 1/4 size where that still covers 64x64
                images.append(T.functional.pil_to_tensor(T.CenterCrop(64)(T.Resize(64)(im.convert("RGB")))))
        except OSError as error:  # returned, not raised: a worker that raises stalls its loader's shutdown
            return f"{path}: {error}"  # named: torchvision's loader does not name a cut-short file
    return torch.stack(images)


def decode(paths, batches, num_workers):  # uint8 batches decoded in worker processes; a bad file ends the run
    for batch in torch.utils.data.DataLoader(paths, batch_sampler=batches, collate_fn=load_images,
                                             num_workers=num_workers):
        if isinstance(batch, str):  # what load_images could not read
            fail(f"unreadable image: {batch}", "delete or replace the file")
        yield batch


def make_dataset(args, rank=0, world=1):  # this process's share: a uint8 (N, C, 64, 64) tensor, or files
    root = args.data_root or os.path.join(HERE, "data", "celeba")
    found = glob.glob(os.path.join(glob.escape(root), "**", "*"), recursive=True)  # skips .ipynb_checkpoints/
    paths = sorted(path for path in found if path.lower().endswith(IMAGE_TYPES))  # any depth, no text files
    if paths:
        print(f"{len(paths):,} images in {os.path.commonpath({os.path.dirname(p) for p in paths})}")
        paths = paths[rank:len(paths) // world * world:world]  # each process decodes and caches its share
        size = len(paths) * world * 3 * 64 * 64  # Windows has no sysconf: cache there
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else size * 4
        if args.cache is False or (args.cache is None and size > ram / 4):
            if args.cache is None:
                print(f"not caching {size / 1e9:.1f} GB (over 1/4 of the memory): each epoch decodes them")
            return paths
        print(f"caching {len(paths) * world:,} images as uint8: {size / 1e9:.2f} GB")  # YOLOv5's --cache ram
        loaded = decode(paths, torch.arange(len(paths)).split(256), args.num_workers)
        bar = tqdm(loaded, desc="decoding", total=-(-len(paths) // 256), leave=False, disable=args.quiet)
        return torch.cat(list(bar))
    if args.data_root:  # the user named a folder: never swap in other data
        what = "holds no images" if os.path.isdir(root) else "does not exist"
        what = "is a file, not a folder" if os.path.isfile(root) else what
        fail(f"--data-root {root} {what}", "give a folder with .jpg or .png files at any depth, as CelebA's")
    print(f"no images in {root}: training on 5,000 MNIST digits at 64x64 (for faces, "
          "put CelebA's img_align_celeba/ there: mmlab.ie.cuhk.edu.hk/projects/CelebA.html)")
    try:  # the bundled sample; this file alone (pasted into a notebook, say) takes MNIST's first 5,000
        digits = torch.from_numpy(np.load(os.path.join(HERE, "data", "mnist_sample.npz"))["images"])
    except FileNotFoundError:
        try:
            digits = torchvision.datasets.MNIST(os.path.join(HERE, "data"), download=True).data[:5000]
        except (RuntimeError, OSError):  # offline
            fail(f"no images in {root}, no bundled digits, no MNIST download", "go online, or clone the repo")
    digits = F.interpolate(digits.unsqueeze(1).float(), size=64, mode="bilinear").round().clamp(0, 255)
    return digits.to(torch.uint8)[rank:len(digits) // world * world:world]  # grey: RGB a batch at a time


class Generator(nn.Module):
    def __init__(self, in_channels=3, z_dim=Z_DIM, tutorial=False):
        super().__init__()
        self.tutorial = tutorial
        self.gen = nn.Sequential(
            self.create_upblock(z_dim, 1024, kernel_size=4, stride=1, padding=0),  # 1024 x 4 x 4
            self.create_upblock(1024, 512, kernel_size=4, stride=2, padding=1),    # 512 x 8 x 8
            self.create_upblock(512, 256, kernel_size=4, stride=2, padding=1),     # 256 x 16 x 16
            self.create_upblock(256, 128, kernel_size=4, stride=2, padding=1),     # 128 x 32 x 32
            self.create_upblock(128, in_channels, kernel_size=4, stride=2, padding=1, final_layer=True),
        )  # 3 x 64 x 64 in [-1, 1]; tutorial: 3 channels in the last block, ignoring in_channels

    def create_upblock(self, in_channels, out_channels, kernel_size=5, stride=2, padding=1,
                       final_layer=False):
        conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        if final_layer and not self.tutorial:  # tutorial: BatchNorm here pins each batch's mean at grey
            return nn.Sequential(conv, nn.Tanh())
        return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.Tanh() if final_layer else nn.ReLU(True))

    def forward(self, noise):  # noise: (N, 100, 1, 1); tutorial: asserts 4 dims, which the first layer checks
        return self.gen(noise)


class Discriminator(nn.Module):
    def __init__(self, im_chan=3, hidden_dim=32, tutorial=False):
        super().__init__()
        self.tutorial = tutorial
        self.disc = nn.Sequential(  # tutorial: 64 -> 31 -> 14 -> 11 -> 4 -> 1, its third block at stride 1
            self.make_disc_block(im_chan, hidden_dim, batch_norm=tutorial),                   # 32 x 32 x 32
            self.make_disc_block(hidden_dim, hidden_dim * 2),                                 # 64 x 16 x 16
            self.make_disc_block(hidden_dim * 2, hidden_dim * 4, stride=1 if tutorial else 2),  # 128 x 8 x 8
            self.make_disc_block(hidden_dim * 4, hidden_dim * 4, stride=2),                   # 128 x 4 x 4
            self.make_disc_block(hidden_dim * 4, 1, final_layer=True),                        # 1 x 1 x 1
        )

    def make_disc_block(self, input_channels, output_channels, kernel_size=4, stride=2, final_layer=False,
                        batch_norm=True):  # tutorial: unpadded, BatchNorm on the input block: D wins
        padding = 0 if final_layer or self.tutorial else 1
        conv = nn.Conv2d(input_channels, output_channels, kernel_size, stride, padding)
        if final_layer:
            return nn.Sequential(conv)  # a logit
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
               amp_dtype=None):
    """One D update on real and fake.detach(), then one G update on the same fake. Returns both losses."""
    real_label, fake_label = (0.9, 0.1) if label_smoothing else (1.0, 0.0)  # zhangxiann's lesson 8 trick
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
    d_loss.backward()
    d_optimizer.step()
    # (2) Update G: maximize log D(G(z))
    g_optimizer.zero_grad()
    with autocast:
        fake_logits = discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    g_loss.backward()
    g_optimizer.step()
    return d_loss.detach(), g_loss.detach()


def update_average(g_ema, g_model, step, decay=EMA_DECAY):  # as AveragedModel(use_buffers=True), no syncs
    decay = min(decay, (1 + step) / (10 + step))  # a warm-up: early on, the random start is forgotten faster
    for averaged, current in zip(g_ema.state_dict().values(), g_model.state_dict().values()):  # detached
        if averaged.is_floating_point():  # weights and BatchNorm statistics, not its count of batches
            averaged.lerp_(current, 1 - decay)


def train(args, device, rank, world, amp_dtype, checkpoint):
    images = make_dataset(args, rank, world)
    if torch.is_tensor(images) and device.type == "cuda" and images.nbytes < torch.cuda.mem_get_info()[0] / 4:
        images = images.to(device)  # batches are then indexed on the GPU
    layout, tutorial = torch.channels_last, args.tutorial_recipe  # channels_last: fastest in oneDNN, cuDNN
    g_model = Generator(tutorial=tutorial).to(device, memory_format=layout).apply(weights_init)
    d_model = Discriminator(tutorial=tutorial).to(device, memory_format=layout).apply(weights_init)
    g_optimizer = torch.optim.Adam(g_model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(d_model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g_ema = copy.deepcopy(g_model).requires_grad_(False)  # the average of G: what grids, infer.py draw
    ema_decay = 0.0 if tutorial else EMA_DECAY  # tutorial: draws from the last G (an average over one step)
    fixed_noise = torch.randn(64, Z_DIM, 1, 1, device=device)
    state = {"g_model_state_dict": g_model, "d_model_state_dict": d_model, "g_ema_state_dict": g_ema,
             "g_optimizer_state_dict": g_optimizer, "d_optimizer_state_dict": d_optimizer}
    epoch, done, losses = 1, 0, []
    if checkpoint:
        try:
            for key, thing in state.items():
                thing.load_state_dict(checkpoint[key])
        except (KeyError, RuntimeError, ValueError) as error:
            fail(f"{args.resume} does not fit these models ({type(error).__name__})", "use its own flags")
        epoch, done, losses = checkpoint["epoch"], checkpoint["batches_done"], checkpoint["losses"]
        if isinstance(losses, dict):  # written before losses were kept as [D, G] rows
            losses = [list(row) for row in zip(losses["d"], losses["g"])]
        if world == 1:  # noise is drawn as if never stopped (one process only)
            torch.set_rng_state(checkpoint["rng_state"])
    per_epoch = -(-len(images) // args.batch_size)
    epoch, done = (epoch + 1, 0) if done >= per_epoch else (epoch, done)
    if epoch > args.epochs and rank == 0:
        print(f"{args.resume} already has {epoch - 1} epochs: raise --epochs to train more")
    generator, discriminator = g_model, d_model  # the bare modules are what gets saved: no prefixes
    if "RANK" in os.environ:  # each process computes gradients on its share of the batch; DDP averages them
        # D runs twice before its backward: syncing its BatchNorm buffers in between breaks cuDNN's backward
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated")  # its successor: torch 2.14+
        generator, discriminator = DDP(g_model), DDP(d_model, broadcast_buffers=False)
    stop, steps, first_real, fake = [], 0, None, None
    previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.append(1))  # Ctrl-C: end the step, save
    try:
        while epoch <= args.epochs and not stop and steps != args.max_steps:
            # the epoch's order from (seed, epoch) alone: a resumed epoch goes on in the same order
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed + epoch))
            order = order[done * args.batch_size:].split(args.batch_size)
            loaded = (decode(images, order, args.num_workers) if isinstance(images, list)  # files: decode
                      else (images[indices.to(images.device)] for indices in order))  # cached: index
            epoch_losses = []  # (D, G) per iteration, kept on the device until the epoch ends
            for batch in tqdm(loaded, total=per_epoch, initial=done, desc=f"epoch {epoch}/{args.epochs}",
                              leave=False, disable=args.quiet or rank > 0):
                real = batch.to(device).float().div_(127.5).sub_(1.0)  # = ToTensor + Normalize(0.5, 0.5)
                real = real.expand(-1, 3, -1, -1).contiguous(memory_format=layout)  # grey digits as RGB
                first_real = real if first_real is None else first_real  # a full batch for real_vs_fake
                d_loss, g_loss = train_step(generator, discriminator, g_optimizer, d_optimizer, real,
                                            args.label_smoothing, amp_dtype)
                update_average(g_ema, g_model, len(losses) + len(epoch_losses), ema_decay)
                epoch_losses.append(torch.stack([d_loss, g_loss]).float())
                steps += 1
                if stop or steps == args.max_steps:
                    break
            epoch_losses = torch.stack(epoch_losses).cpu()
            if not epoch_losses.isfinite().all():
                fail(f"loss became NaN/inf in epoch {epoch}", "lower --lr or drop --amp; checkpoints kept")
            losses += epoch_losses.tolist()  # [D, G] per iteration
            done += len(epoch_losses)
            if rank == 0:  # this epoch's grid (so far), the checkpoint to resume from, a snapshot
                fake = g_ema.eval()(fixed_noise).float()  # eval(): running statistics, as infer.py draws
                torchvision.utils.save_image(fake, os.path.join(args.out, f"fake_epoch_{epoch:03d}.png"),
                                             normalize=True, value_range=(-1, 1))
                last = {key: thing.state_dict() for key, thing in state.items()}
                files = {"checkpoint_last.pt": dict(last, epoch=epoch, batches_done=done, args=vars(args),
                                                    losses=losses, rng_state=torch.get_rng_state())}
                if done == per_epoch and epoch % args.save_every == 0:  # zhangxiann's lesson 8: G (drawn), D
                    snapshot = {"g_model_state_dict": last["g_ema_state_dict"], "epoch": epoch}
                    snapshot["d_model_state_dict"] = last["d_model_state_dict"]
                    files[f"checkpoint_epoch_{epoch:03d}.pt"] = snapshot
                for name, content in files.items():  # an interrupted save never replaces the last good file
                    torch.save(content, os.path.join(args.out, name + ".tmp"))
                    os.replace(os.path.join(args.out, name + ".tmp"), os.path.join(args.out, name))
                print("epoch {}: loss_d {:.3f}, loss_g {:.3f}".format(epoch, *epoch_losses.mean(0).tolist()))
            epoch, done = (epoch + 1, 0) if done == per_epoch else (epoch, done)
    finally:  # also when a NaN loss or an unreadable image ends the run
        signal.signal(signal.SIGINT, previous_handler)
        if rank == 0 and fake is not None:
            save_plots(losses, args.out, first_real, fake, epoch if done else epoch - 1, args.show)
    return g_ema, bool(stop)


def save_plots(losses, out, real, fake, last_epoch, show=False):  # once, when the run ends, stops or fails
    plt.figure(figsize=(8, 4))
    plt.plot(losses, label=["D", "G"], alpha=0.8)
    plt.gca().set(xlabel="iteration", ylabel="loss", title="Generator and discriminator loss during training")
    plt.legend()
    plt.savefig(os.path.join(out, "losses.png"), dpi=100, bbox_inches="tight")
    grids = [os.path.join(out, f"fake_epoch_{e:03d}.png") for e in range(1, last_epoch + 1)]
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


def run(args, argv):
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))  # from torchrun
    if rank > 0:  # one process speaks for all (errors still go to stderr)
        sys.stdout = open(os.devnull, "w")
    try:  # --resume: the run's own flags come back from its checkpoint, except those given again
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
        saved = {k: v for k, v in checkpoint["args"].items() if k not in PER_CALL} if args.resume else {}
    except Exception as error:  # missing, a folder, cut short, pickle garbage, an epoch snapshot (no args)...
        fail(f"--resume {args.resume} cannot be read or holds no training state ({type(error).__name__})",
             "give the checkpoint_last.pt of a dcgan_celeba.py run")
    args = parse_args(argv, defaults=saved)
    differing = [f"--{flag.replace('_', '-')} {getattr(args, flag)} (the run's: {value})"
                 for flag, value in saved.items() if getattr(args, flag) != value]
    if differing:
        print(f"resuming with {', '.join(differing)}")
    args.show = args.show or "ipykernel" in sys.modules  # in a notebook, the last figures show inline
    if not args.show:
        plt.switch_backend("Agg")
    if args.num_workers and __name__ == "__main__" and "ipykernel" in sys.modules \
            and torch.multiprocessing.get_start_method() != "fork":  # as on macOS and Windows
        print("decoding in this process: spawned workers cannot import code pasted into a notebook cell")
        args.num_workers = 0
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    args.device = next(k for k in available if available[k]) if args.device == "auto" else args.device
    if not available[args.device]:
        fail(f"--device {args.device} but {args.device.upper()} is not available", "use --device cpu or auto")
    try:  # now, not after an epoch
        os.makedirs(args.out, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as error:  # "File exists" where a file has the folder's name
        fail(f"--out {args.out} cannot be written ({error.strerror})", "give a folder you can write to")
    device = torch.device(args.device, int(os.getenv("LOCAL_RANK", 0)) if args.device == "cuda" else None)
    arm = platform.machine().lower() in ("arm64", "aarch64")  # bf16 instructions: AVX-512 BF16, Arm's BF16
    fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() if arm else torch.cpu._is_avx512_bf16_supported()
    bf16 = args.amp if device.type == "cuda" else device.type == "cpu" and args.amp is not False and fast_bf16
    print(f"device: {args.device}, {'torch.bfloat16 autocast' if bf16 else 'fp32'}"  # CUDA: TF32 is as fast
          f"{' (--amp: no fast bf16 on this device)' if args.amp and not bf16 else ''}")
    if device.type == "cuda":  # under torchrun, this process's GPU
        torch.cuda.set_device(device)
    if "RANK" in os.environ:  # started by torchrun: one process per GPU (or CPU worker)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed((args.seed + rank) % 2**32)  # DDP copies rank 0's weights; ranks draw their own noise
    generator, interrupted = train(args, device, rank, world, torch.bfloat16 if bf16 else None, checkpoint)
    if "RANK" in os.environ:
        torch.distributed.destroy_process_group()
    print(f"{'interrupted: ' if interrupted else ''}checkpoints, plots and per-epoch grids in {args.out}")
    if interrupted:
        sys.exit(130)
    return generator


def main(argv=None):  # the command line's entry, and a notebook's: main(["--epochs", "5"]) returns G
    if argv is None:  # pasted into a notebook cell (no __file__), sys.argv holds the kernel's flags, not ours
        argv = sys.argv[1:] if "__file__" in globals() else []
    try:
        return run(parse_args(argv), argv)
    except (SystemExit, KeyboardInterrupt) as stop:  # Ctrl-C here: before training, nothing to save yet
        if "ipykernel" not in sys.modules:  # in a notebook, the error's line is printed and the cell ends
            sys.exit(stop.code if isinstance(stop, SystemExit) else 130)


if __name__ == "__main__":
    main()
