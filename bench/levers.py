"""Which recipe levers make the MNIST GANs draw more digits, and more kinds: one lever at a time.

    python bench/levers.py --full-mnist runs/mnist --device cuda   # every lever, 8 at once
    python bench/levers.py --full-mnist runs/mnist --only mlp_g8 conv_g4   # some of them
    python bench/levers.py --quick   # a smoke run: tiny, on the sample

Each lever is a change to one script's default recipe (the scripts' defaults before the faster G:
Adam 2e-4 for G and D, betas (0.5, 0.999), the MLP at batch 128 for 10 epochs of full MNIST, the
conv GAN at batch 64 for 5, and an EMA of G). It trains the script's own models, `batches` and
losses, in a loop of its own so a lever can reach inside the step, and scores the EMA generator ten
times during training on 1,000 fixed noise vectors with bench/quality.py's classifier (trained on
the MNIST test digits with --full-mnist, on the sample otherwise). Levers: a faster G (`g8`: 8e-4,
`g4`: 4e-4), a slower D (`d1`), a minibatch standard-deviation input to D's last layer (`mbstd`),
instance noise on D's inputs that decays to zero (`noise`), one-sided label smoothing (`smooth`),
Adam betas (0, 0.99) (`beta0`), other batch sizes and lengths, an EMA decay, bf16 autocast (`bf16`),
a second seed (`s1`) and the sample instead of full MNIST (`_sample`). The table prints, per lever,
the last score (share of confident digits, classes holding at least 4% of the labels, the rarest
class's count) and the curve.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import quality  # noqa: E402

import dcgan_celeba  # noqa: E402
import mnist_conv_gan  # noqa: E402
import mnist_mlp_gan  # noqa: E402

MLP, CONV = {"script": "mlp"}, {"script": "conv"}
LEVERS = {
    "mlp_base": MLP,
    "mlp_g4": {**MLP, "g_lr": 4e-4},
    "mlp_g8": {**MLP, "g_lr": 8e-4},
    "mlp_mbstd": {**MLP, "mbstd": True},
    "mlp_g8_mbstd": {**MLP, "g_lr": 8e-4, "mbstd": True},
    "mlp_noise": {**MLP, "noise": 0.1},
    "mlp_smooth": {**MLP, "smooth": 0.9},
    "mlp_b64": {**MLP, "batch": 64},
    "mlp_bf16": {**MLP, "bf16": True},
    "mlp_g8_e20": {**MLP, "g_lr": 8e-4, "epochs": 20},
    "mlp_g8_mbstd_s1": {**MLP, "g_lr": 8e-4, "mbstd": True, "seed": 1},
    "mlp_g8_mbstd_bf16": {**MLP, "g_lr": 8e-4, "mbstd": True, "bf16": True},
    "mlp_base_sample": {**MLP, "sample": True},
    "mlp_g8_sample": {**MLP, "g_lr": 8e-4, "sample": True},
    "mlp_g8_e20_sample": {**MLP, "g_lr": 8e-4, "epochs": 20, "sample": True},
    "conv_base": CONV,
    "conv_g4": {**CONV, "g_lr": 4e-4},
    "conv_g8": {**CONV, "g_lr": 8e-4},
    "conv_mbstd": {**CONV, "mbstd": True},
    "conv_g4_mbstd": {**CONV, "g_lr": 4e-4, "mbstd": True},
    "conv_noise": {**CONV, "noise": 0.1},
    "conv_smooth": {**CONV, "smooth": 0.9},
    "conv_e10": {**CONV, "epochs": 10},
    "conv_bf16": {**CONV, "bf16": True},
    "conv_g8_e10": {**CONV, "g_lr": 8e-4, "epochs": 10},
    "conv_g8_b32": {**CONV, "g_lr": 8e-4, "batch": 32},
    "conv_g8_d1": {**CONV, "g_lr": 8e-4, "d_lr": 1e-4},
    "conv_g8_ema999": {**CONV, "g_lr": 8e-4, "ema": 0.999},
    "conv_g8_beta0": {**CONV, "g_lr": 8e-4, "betas": [0.0, 0.99]},
    "conv_g8_s1": {**CONV, "g_lr": 8e-4, "seed": 1},
    "conv_base_sample": {**CONV, "sample": True},
    "conv_g4_sample": {**CONV, "g_lr": 4e-4, "sample": True},
    "conv_g8_sample": {**CONV, "g_lr": 8e-4, "sample": True},
    "conv_g8_e10_sample": {**CONV, "g_lr": 8e-4, "epochs": 10, "sample": True},
}
# the bundled digits at 64x64, batch 128 for 20 epochs (800 iterations)
DCGAN = {"script": "dcgan"}
DCGAN_LEVERS = {
    "base": {},
    "g4": {"g_lr": 4e-4},
    "smooth": {"smooth": True},
    "g4_smooth": {"g_lr": 4e-4, "smooth": True},
    "b64": {"batch": 64},
    "g4_b64": {"g_lr": 4e-4, "batch": 64},
    "tutorial": {"tutorial": True, "iters": 300},
}
for lever, change in DCGAN_LEVERS.items():
    LEVERS[f"dcgan_{lever}"] = {**DCGAN, **change}
    LEVERS[f"dcgan_{lever}_bf16"] = {**DCGAN, **change, "bf16": True}
    # a second seed, in both precisions
    if lever in ("base", "g4", "smooth", "g4_smooth"):
        LEVERS[f"dcgan_{lever}_s1"] = {**DCGAN, **change, "seed": 1}
        LEVERS[f"dcgan_{lever}_s1_bf16"] = {**DCGAN, **change, "seed": 1, "bf16": True}
LEVERS.update(
    {
        "dcgan_g8": {**DCGAN, "g_lr": 8e-4},
        "dcgan_d1": {**DCGAN, "d_lr": 1e-4},
        "dcgan_d4": {**DCGAN, "d_lr": 4e-4},
        "dcgan_g1": {**DCGAN, "g_lr": 1e-4},
        "dcgan_smooth_b64": {**DCGAN, "smooth": True, "batch": 64},
    }
)
# the DCGAN levers score the last G and averages at these (warm: ramped)
EMA_DECAYS = (0.99, 0.995, 0.999)


class MinibatchStdMLPDiscriminator(mnist_mlp_gan.Discriminator):
    """The MLP's D, its last layer also fed how much the batch's features vary: collapse shows."""

    def __init__(self):
        super().__init__()
        self.fc4 = nn.Linear(self.fc3.out_features + 1, 1)

    def forward(self, x):
        x = self.dropout(F.leaky_relu(self.fc1(x), 0.2))
        x = self.dropout(F.leaky_relu(self.fc2(x), 0.2))
        x = self.dropout(F.leaky_relu(self.fc3(x), 0.2))
        spread = x.std(dim=0).mean().expand(len(x), 1)
        return torch.sigmoid(self.fc4(torch.cat([x, spread], dim=1)))


class MinibatchStdConvDiscriminator(mnist_conv_gan.Discriminator):
    """The conv GAN's D with one more input channel to its last convolution: the batch's spread."""

    def __init__(self):
        super().__init__(1)
        self.disc[-1] = nn.Conv2d(33, 1, 4, 2)

    def forward(self, image):
        x = self.disc[:-1](image)
        spread = x.std(dim=0).mean().expand(len(x), 1, *x.shape[2:])
        return self.disc[-1](torch.cat([x, spread], dim=1)).view(len(x), -1)


def recalibrated(generator, batches=4, size=256):
    """A copy of G whose BatchNorm statistics are re-measured on fresh noise (what eval() then
    uses)."""
    copied = copy.deepcopy(generator).train()
    for module in copied.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            # a plain average over the batches below
            module.momentum = None
    with torch.no_grad():
        for _ in range(batches):
            copied(torch.randn(size, 100, 1, 1, device=next(copied.parameters()).device))
    return copied


def score(name, variant, step, start, generator, fixed_noise, classifier):
    """Prints one JSON line: the confident share and the class counts of `generator` on the fixed
    noise."""
    generator.eval()
    with torch.no_grad():
        probabilities = F.softmax(
            classifier(quality.as_digits(generator(fixed_noise).float())), dim=1
        )
    generator.train()
    confidence, label = probabilities.max(dim=1)
    seconds = round(time.perf_counter() - start, 1)
    print(
        json.dumps(
            {
                "name": name,
                "variant": variant,
                "it": step,
                "s": seconds,
                "confident": round((confidence >= 0.9).float().mean().item(), 3),
                "counts": torch.bincount(label, minlength=10).tolist(),
            }
        ),
        flush=True,
    )


def run_dcgan_lever(name, lever, device, classifier, quick, iters=None, samples=1000):
    """dcgan_celeba.py's models, data, train_step and average on the digits; scores G and each
    average."""
    images = dcgan_celeba.make_dataset(dcgan_celeba.parse_args(["--quiet"])).images
    images = (images[:512] if quick else images).to(device)
    layout, tutorial = torch.channels_last, lever.get("tutorial", False)
    generator = dcgan_celeba.Generator(tutorial=tutorial).to(device, memory_format=layout)
    discriminator = dcgan_celeba.Discriminator(tutorial=tutorial).to(device, memory_format=layout)
    generator.apply(dcgan_celeba.weights_init)
    discriminator.apply(dcgan_celeba.weights_init)
    g_optimizer = torch.optim.Adam(
        generator.parameters(), lr=lever.get("g_lr", 2e-4), betas=(0.5, 0.999)
    )
    d_optimizer = torch.optim.Adam(
        discriminator.parameters(), lr=lever.get("d_lr", 2e-4), betas=(0.5, 0.999)
    )
    averages = {f"ema{decay}": copy.deepcopy(generator) for decay in EMA_DECAYS}
    averages.update({f"warm{decay}": copy.deepcopy(generator) for decay in EMA_DECAYS[1:]})
    fixed_noise = torch.randn(
        64 if quick else samples, 100, 1, 1, generator=torch.Generator().manual_seed(0)
    )
    fixed_noise = fixed_noise.to(device)
    batch, amp_dtype = lever.get("batch", 128), torch.bfloat16 if lever.get("bf16") else None
    per_epoch = -(-len(images) // batch)
    total = min(
        iters or lever.get("iters", 10**9), 2 if quick else lever.get("epochs", 20) * per_epoch
    )
    # a CPU scores each generator in seconds, not milliseconds
    points = 10 if device != "cpu" else 4
    step, start = 0, time.perf_counter()
    for epoch in range(1, 10**9):
        # as the script's epochs
        seeded = torch.Generator().manual_seed(lever.get("seed", 0) + epoch)
        order = torch.randperm(len(images), generator=seeded)
        for indices in order.to(device).split(batch):
            real = images[indices].float().div_(127.5).sub_(1.0).expand(-1, 3, -1, -1)
            real = real.contiguous(memory_format=layout)
            dcgan_celeba.train_step(
                generator,
                discriminator,
                g_optimizer,
                d_optimizer,
                real,
                lever.get("smooth", False),
                amp_dtype,
            )
            # warm: a decay that grows with the steps taken
            for variant, average in averages.items():
                decay = float(variant[4:]) if variant.startswith("warm") else float(variant[3:])
                warm_up = step if variant.startswith("warm") else 10**9
                dcgan_celeba.update_average(average, generator, warm_up, decay)
            step += 1
            if step % max(total // points, 1) == 0 or step == total:
                models = {"G": generator, **averages}
                models.update(
                    {f"{v}+bn": recalibrated(models[v]) for v in ("G", "warm0.995", "warm0.999")}
                )
                for variant, model in models.items():
                    score(name, variant, step, start, model, fixed_noise, classifier)
            if step == total:
                return


def run_lever(
    name, lever, device, full_mnist, classifier_path, quick, threads=1, iters=None, samples=1000
):
    """Trains one lever; prints a JSON line per scoring: iterations, seconds, confident share,
    counts."""
    torch.manual_seed(lever.get("seed", 0))
    # several levers share the machine
    torch.set_num_threads(threads)
    if lever["script"] == "dcgan":
        classifier = quality.classifier().to(device)
        classifier.load_state_dict(
            torch.load(classifier_path, map_location=device, weights_only=True)
        )
        return run_dcgan_lever(name, lever, device, classifier.eval(), quick, iters, samples)
    is_mlp = lever["script"] == "mlp"
    script = mnist_mlp_gan if is_mlp else mnist_conv_gan
    if full_mnist and not lever.get("sample"):
        import torchvision

        images = torchvision.datasets.MNIST(full_mnist, train=True).data
    else:
        with np.load(os.path.join(ROOT, "data", "mnist_sample.npz")) as f:
            images = torch.from_numpy(f["images"])
    images = images[:512] if quick else images
    images = images.to(device)
    if is_mlp:
        generator = mnist_mlp_gan.Generator().to(device)
        plain = not lever.get("mbstd")
        discriminator = mnist_mlp_gan.Discriminator() if plain else MinibatchStdMLPDiscriminator()
        discriminator = discriminator.to(device)
    else:
        layout = torch.channels_last
        generator = mnist_conv_gan.Generator(100, 1).to(device, memory_format=layout)
        generator.apply(mnist_conv_gan.weights_init)
        plain = not lever.get("mbstd")
        discriminator = (
            mnist_conv_gan.Discriminator(1) if plain else MinibatchStdConvDiscriminator()
        )
        discriminator = discriminator.to(device, memory_format=layout).apply(
            mnist_conv_gan.weights_init
        )
    betas = tuple(lever.get("betas", (0.5, 0.999)))
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=lever.get("g_lr", 2e-4), betas=betas)
    d_optimizer = torch.optim.Adam(
        discriminator.parameters(), lr=lever.get("d_lr", 2e-4), betas=betas
    )
    decay = lever.get("ema", 0.999 if is_mlp else 0.995)
    averaged = AveragedModel(
        generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=not is_mlp
    )
    batch = lever.get("batch", 128 if is_mlp else 64)
    per_epoch = len(images) // batch if is_mlp else -(-len(images) // batch)
    sample = not full_mnist or lever.get("sample")
    epochs = 1 if quick else lever.get("epochs", 10 if is_mlp else 5) * (12 if sample else 1)
    total = per_epoch * epochs
    classifier = quality.classifier().to(device)
    classifier.load_state_dict(torch.load(classifier_path, map_location=device, weights_only=True))
    classifier.eval()
    fixed_noise = torch.randn(1000, 100, device=device)
    loss = F.binary_cross_entropy if is_mlp else F.binary_cross_entropy_with_logits
    bf16 = lever.get("bf16", False)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)

    # D's view: with instance noise if the lever adds it; fp32 for the loss
    def judge(x, sigma):
        return discriminator(x + sigma * torch.randn_like(x) if sigma else x).float()

    step, start = 0, time.perf_counter()
    for _ in range(epochs):
        for real in script.batches(images, batch, device):
            # instance noise, decaying to 0
            sigma = lever.get("noise", 0.0) * max(0.0, 1 - step / total)
            with autocast:
                fake = generator(torch.randn(len(real), 100, device=device))
                real_scores, fake_scores = judge(real, sigma), judge(fake.detach(), sigma)
            d_loss = loss(
                real_scores, torch.full_like(real_scores, lever.get("smooth", 1.0))
            ) + loss(fake_scores, torch.zeros_like(fake_scores))
            d_optimizer.zero_grad()
            d_loss.backward()
            d_optimizer.step()
            discriminator.requires_grad_(False)
            with autocast:
                scores = judge(fake, sigma)
            g_loss = loss(scores, torch.ones_like(scores))
            g_optimizer.zero_grad()
            g_loss.backward()
            g_optimizer.step()
            discriminator.requires_grad_(True)
            averaged.update_parameters(generator)
            step += 1
            if step % max(total // 10, 1) == 0 or step == total:
                averaged.module.eval()
                with torch.no_grad():
                    digits = quality.as_digits(averaged.module(fixed_noise))
                    probabilities = F.softmax(classifier(digits), dim=1)
                averaged.module.train()
                confidence, label = probabilities.max(dim=1)
                counts = torch.bincount(label, minlength=10).tolist()
                print(
                    json.dumps(
                        {
                            "name": name,
                            "it": step,
                            "s": round(time.perf_counter() - start, 1),
                            "confident": round((confidence >= 0.9).float().mean().item(), 3),
                            "counts": counts,
                        }
                    ),
                    flush=True,
                )


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--full-mnist", metavar="ROOT", help="full MNIST, kept in ROOT (see bench/quality.py)"
    )
    p.add_argument("--only", nargs="+", choices=list(LEVERS), help="these levers alone")
    p.add_argument("--device", default="cpu", help="cpu or cuda; several levers share it")
    p.add_argument(
        "--parallel", type=int, default=8, help="levers trained at once, one process each"
    )
    p.add_argument("--quick", action="store_true", help="512 digits, one epoch: a smoke run")
    p.add_argument(
        "--iters", type=int, help="DCGAN levers: stop after this many iterations (a screening)"
    )
    p.add_argument(
        "--samples", type=int, default=1000, help="DCGAN levers: noise vectors scored each time"
    )
    p.add_argument(
        "--list", metavar="PREFIX", help="print the levers whose names start so, and stop"
    )
    # a worker: "name classifier_path"
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list:
        print(" ".join(name for name in LEVERS if name.startswith(args.list)))
        return
    if args.one:
        name, classifier_path = args.one.split(" ", 1)
        threads = max(1, (os.cpu_count() or 1) // args.parallel) if args.device == "cpu" else 1
        return run_lever(
            name,
            LEVERS[name],
            args.device,
            args.full_mnist,
            classifier_path,
            args.quick,
            threads,
            args.iters,
            args.samples,
        )
    torch.manual_seed(0)
    # the classifier learns from the 10,000 test digits, which no GAN here trains on
    if args.full_mnist:
        images, labels, _ = quality.full_mnist(args.full_mnist)
    else:
        with np.load(os.path.join(ROOT, "data", "mnist_sample.npz")) as f:
            images = torch.from_numpy(f["images"]).unsqueeze(1).float().div(127.5).sub(1.0)
            labels = torch.from_numpy(f["labels"]).long()
    classifier = quality.train_classifier(images, labels, 1 if args.quick else 5)
    names = args.only or list(LEVERS)
    with tempfile.TemporaryDirectory() as folder:
        classifier_path = os.path.join(folder, "classifier.pt")
        torch.save(classifier.state_dict(), classifier_path)
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--device",
            args.device,
            "--parallel",
            str(args.parallel),
            "--samples",
            str(args.samples),
        ]
        command += ["--iters", str(args.iters)] if args.iters else []
        command += ["--full-mnist", args.full_mnist] if args.full_mnist else []
        command += ["--quick"] if args.quick else []
        records, running, waiting = [], [], list(names)
        while waiting or running:
            while waiting and len(running) < args.parallel:
                name = waiting.pop(0)
                running.append(
                    subprocess.Popen(
                        command + ["--one", f"{name} {classifier_path}"],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            finished = running.pop(0)
            out, _ = finished.communicate()
            if finished.returncode:
                sys.exit(f"a lever failed (exit {finished.returncode}); its output:\n{out}")
            records += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    print(
        f"{'lever':<28} {'iterations':>10} {'seconds':>8} {'confident':>9} {'classes':>7}"
        f" {'rarest':>6}"
        f"  confident share at each tenth of training"
    )
    for name in names:
        for variant in dict.fromkeys(r.get("variant") for r in records if r["name"] == name):
            curve = [r for r in records if r["name"] == name and r.get("variant") == variant]
            last = curve[-1]
            # at least 4% of the 1,000 digits
            classes = sum(c >= 40 for c in last["counts"])
            shares = " ".join(f"{100 * r['confident']:.0f}" for r in curve)
            label = f"{name}:{variant}" if variant else name
            print(
                f"{label:<28} {last['it']:>10,} {last['s']:>8.0f} {last['confident']:>9.1%}"
                f" {classes:>7}"
                f" {min(last['counts']):>6}  {shares}"
            )


if __name__ == "__main__":
    main()
