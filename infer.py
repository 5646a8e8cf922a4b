"""What a trained DCGAN generator learned: a grid of samples, a latent walk, an interpolation.

    python dcgan_celeba.py --epochs 1 && python infer.py   # samples.png
    python infer.py --walk --z-index 7 --steps 8 --span 3   # walk.png: only z[7] changes
    python infer.py --interpolate --steps 10                # interpolation.png

After gan_inference.py of zhangxiann's PyTorch_Practice, "8.3 GAN（生成对抗网络）简介":
https://github.com/zhangxiann/PyTorch_Practice/blob/master/lesson8/gan_inference.py
It imports its Generator from dcgan_celeba.py, as the tutorial imports from its dcgan module, so
a notebook runs it from a clone of this repository: main(["--walk"]) returns the images.

Part 1, the lesson: load the generator, draw the noise (a grid, a walk, an interpolation). Part 2,
after the fence: flags, reading checkpoints, the device, the picture file, bad input, main().
"""

import argparse
import io
import os
import sys
import tempfile

import matplotlib.pyplot as plt
import torch
import torchvision.utils as vutils
from PIL import Image

from dcgan_celeba import Z_DIM, Generator

# added by DataParallel/DDP and by torch.compile
PREFIXES = ("module.", "_orig_mod.")
# the widest picture each format holds, in pixels
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}


def strip_prefixes(state_dict):
    """The tutorial's remove_module(), for torch.compile's prefix too."""
    clean = {}
    for key, value in state_dict.items():
        while key.startswith(PREFIXES):
            key = key[len(next(p for p in PREFIXES if key.startswith(p))) :]
        clean[key] = value
    return clean


def load_generator(path, device="cpu"):
    checkpoint = read_checkpoint(path)
    state_dict = None
    # the average of G, which the grids draw; else the tutorial's key; else a bare state_dict
    if isinstance(checkpoint, dict):
        state_dict = checkpoint.get("g_model_state_dict", checkpoint)
        state_dict = checkpoint.get("g_ema_state_dict", state_dict)
    if not isinstance(state_dict, dict) or not all(map(torch.is_tensor, state_dict.values())):
        fail(f"{path} holds no generator weights", "give a dcgan_celeba.py checkpoint")
    state_dict = strip_prefixes(state_dict)
    # --tutorial-recipe's G has BatchNorm in its last block
    generator = Generator(tutorial="gen.4.1.running_mean" in state_dict)
    try:
        generator.load_state_dict(state_dict)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:160]
        fail(f"{path} does not fit the DCGAN generator: {detail}", "was it dcgan_celeba.py's?")
    # tutorial: no eval(), so BatchNorm uses batch statistics: an image depends on its batch-mates
    return generator.to(device).eval()


def make_noise(args):
    """The noise the picture is drawn from, and its images per row."""
    # drawn on the CPU: the same numbers on any device
    seeded = torch.Generator().manual_seed(args.seed)
    if args.walk:
        z = torch.randn(1, Z_DIM, 1, 1, generator=seeded)
        return walk_noise(z, args.z_index, args.steps, args.span), args.steps
    if args.interpolate:
        a, b = torch.randn(2, 1, Z_DIM, 1, 1, generator=seeded)
        return slerp(a, b, args.steps), args.steps
    return torch.randn(args.num_images, Z_DIM, 1, 1, generator=seeded), 8


def walk_noise(z, z_index, steps, span):
    """`steps` copies of z (1, Z, 1, 1), dimension z_index alone set to -span ... +span."""
    # tutorial: `add_noise = single_noise[0, z_idx, 0, 0] + i*0.01` sets all 100 dimensions
    noise = z.repeat(steps, 1, 1, 1)
    noise[:, z_index, 0, 0] = torch.linspace(-span, span, steps)
    return noise


def slerp(a, b, steps):
    """Spherical interpolation from a to b (each (1, Z, 1, 1)): where Gaussian noise has mass."""
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    omega = torch.acos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


# ---- Part 2: what a real run adds. A first read can stop here: flags, checkpoints, main(). ----


def parse_args(argv=None):
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    default = " (default: %(default)s)"
    checkpoint = "runs/dcgan_celeba/checkpoint_last.pt"
    p.add_argument("--checkpoint", default=checkpoint, help="or a bare state_dict" + default)
    p.add_argument("--num-images", type=int, default=64, help="1 to 1024" + default)
    p.add_argument("--seed", type=int, default=1, help="of the fixed noise; tutorial: 1" + default)
    p.add_argument("--walk", action="store_true", help="vary one dimension of one noise vector")
    p.add_argument("--z-index", type=int, default=0, help="the walk's dimension, 0..99" + default)
    p.add_argument("--steps", type=int, default=8, help="in a walk or interpolation" + default)
    p.add_argument("--span", type=float, default=3.0, help="walk from -span to +span" + default)
    p.add_argument("--interpolate", action="store_true", help="slerp between two noise vectors")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help=default)
    p.add_argument("--out", help="picture (default: samples.png, walk.png or interpolation.png)")
    p.add_argument("--show", action="store_true", help="also open the picture in a window")
    # Errors in one line, without argparse's usage text.
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")
    args = p.parse_args(argv)
    limits = {"num_images": (1, 1024), "steps": (1, 1024), "z_index": (0, Z_DIM - 1)}
    limits.update(seed=(0, 2**63 - 1), span=(1e-9, 1e9))
    for flag, (low, high) in limits.items():
        value = getattr(args, flag)
        if not low <= value <= high:
            p.error(f"argument --{flag.replace('_', '-')}: must be {low} to {high}, got {value}")
    if args.walk and args.interpolate:
        p.error("choose one of --walk and --interpolate")
    # Pillow reads some kinds of picture it cannot write (.psd, .xbm, .h5, ...)
    try:
        extension = os.path.splitext(args.out or "samples.png")[1].lower()
        picture_format = Image.registered_extensions().get(extension)
        Image.new("RGB", (8, 8)).save(io.BytesIO(), format=picture_format)
    except (KeyError, OSError, ValueError):
        p.error(f"argument --out: {args.out} is not a picture Pillow can write, as .png or .jpg")
    return args


def fail(what, fix):
    print(f"error: {what} ({fix})", file=sys.stderr)
    sys.exit(2)


def read_checkpoint(path):
    """The checkpoint's contents, loaded on the CPU; a missing or corrupt file is one line."""
    if not os.path.isfile(path):
        what = "is a folder, not a checkpoint file" if os.path.isdir(path) else "does not exist"
        fix = "train one with `python dcgan_celeba.py` or pass --checkpoint"
        fail(f"checkpoint {path} {what}", fix)
    # map_location: a checkpoint saved on a GPU loads on a CPU-only machine
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"checkpoint {path} cannot be read: {type(error).__name__}", "use another one")


def pick_device(args):
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    available = {"cuda": cuda, "mps": mps, "cpu": True}
    if args.device == "auto":
        args.device = next(name for name, present in available.items() if present)
    if not available[args.device]:
        fail(f"--device {args.device}: {args.device.upper()} is not available", "use cpu or auto")


def check_out(out):
    """Fails now, before the work, where --out cannot be written."""
    if os.path.isdir(out):
        fail(f"--out {out} is a folder, not a picture file", "give a path such as grid.png")
    if os.path.exists(out) and not os.access(out, os.W_OK):
        fail(f"--out {out} is read-only", "give another path, or make it writable")
    try:
        tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(out))).close()
    except OSError as error:
        fail(f"--out {out} cannot be written ({error.strerror})", "give a folder you can write to")


def check_picture_fits(out, count, nrow):
    """Before any drawing: past its limit libjpeg prints a complaint of its own, then fails."""
    picture_format = Image.registered_extensions()[os.path.splitext(out)[1].lower()]
    # make_grid's: 64-pixel images, 2 pixels between and around them
    widest = max(min(nrow, count), -(-count // nrow)) * 66 + 2
    if widest > MAX_SIDE.get(picture_format, widest):
        what = f"{widest} pixels wide, a {picture_format} at most {MAX_SIDE[picture_format]}"
        fail(f"--out {out} cannot hold this picture ({what})", "fewer --steps, or a .png")


def save_picture(images, out, nrow):
    """The grid, whole or not at all: one line where it is too wide for its format (JPEG, WebP)."""
    picture_format = Image.registered_extensions()[os.path.splitext(out)[1].lower()]
    grid = vutils.make_grid(images, nrow, padding=2, normalize=True, value_range=(-1, 1))
    try:
        vutils.save_image(grid, out + ".tmp", format=picture_format)
        os.replace(out + ".tmp", out)
    except (OSError, ValueError) as error:
        if os.path.exists(out + ".tmp"):
            os.remove(out + ".tmp")
        fail(f"--out {out} cannot hold this picture ({error})", "fewer --steps, or a .png")
    return grid


def run(args):
    # in a notebook, the picture shows inline
    args.show = args.show or "ipykernel" in sys.modules
    if not args.show:
        plt.switch_backend("Agg")
    pick_device(args)
    # by default, named after what it shows
    out = args.out or "samples.png"
    if args.out is None and (args.walk or args.interpolate):
        out = "walk.png" if args.walk else "interpolation.png"
    check_out(out)
    noise, nrow = make_noise(args)
    check_picture_fits(out, len(noise), nrow)
    generator = load_generator(args.checkpoint, args.device)
    with torch.no_grad():
        images = generator(noise.to(args.device)).cpu()
    grid = save_picture(images, out, nrow)
    print(f"wrote {len(images)} images to {out}")
    # the images themselves: matplotlib cannot read every format back (.pdf, .eps)
    if args.show:
        plt.imshow(grid.permute(1, 2, 0).numpy())
        plt.axis("off")
        plt.show()
    return images


def main(argv=None):
    """The command line's entry, and a notebook's: main(["--walk"]) returns the images."""
    # Pasted into a notebook cell (no __file__), sys.argv holds the kernel's flags, not ours.
    if argv is None and "__file__" not in globals():
        argv = []
    try:
        return run(parse_args(argv))
    # Ctrl-C: nothing half-written to keep
    except (SystemExit, KeyboardInterrupt) as stop:
        # in a notebook, the error's line is printed and the cell ends
        if "ipykernel" not in sys.modules:
            sys.exit(stop.code if isinstance(stop, SystemExit) else 130)


if __name__ == "__main__":
    main()
