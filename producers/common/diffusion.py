"""A small class-conditional diffusion model built with diffusers: the generative prior of the
diffusion-based producers (DDOQ / D4M in latent space, IGDS in pixel space).

Those methods run on Stable Diffusion, which cannot be downloaded here, so the project trains its
own: an ``AutoencoderKL`` (the encoder-decoder pair E, D) and a ``UNet2DModel`` with class
embeddings (the latent diffusion model U_t, conditioned on the class instead of a text prompt),
trained with a DDPM noise schedule and sampled with DDIM. It is saved and loaded exactly as a
diffusers model is (``save_pretrained`` / ``from_pretrained(local_dir, subfolder=...)``), so a
directory in the same layout — ``vae/``, ``unet/``, ``scheduler/`` — trained elsewhere loads the
same way. ``prior.json`` beside them records what the project needs that diffusers does not: the
source dataset, class names, the data's image shape and how the prior was trained.

Images enter the VAE in [-1, 1], zero-padded to the prior's square ``image_size`` (MNIST's 28×28
becomes 32×32, so that the latent grid halves evenly inside the UNet) and are cropped back after
decoding. Latents are the posterior *mean* times the VAE's ``scaling_factor`` (set after
training to one over the latents' standard deviation, as Stable Diffusion's 0.18215 was), so
encoding is deterministic. A prior without VAE (``vae_channels=()``; no ``vae/`` folder) is a
pixel-space DDPM (Ho et al.'s linear β schedule): its "latents" are the padded images in
[-1, 1], so encoding and decoding only rescale. The unconditional class (for classifier-free guidance) is the extra
class embedding ``num_classes``; it replaces the true class with probability ``uncond_prob``
during training.

``python -m producers.common.diffusion train --data mnist`` trains one into the cache directory
(:func:`cache_dir`: ``$DDFORMAT_PRIOR_CACHE`` or ``~/.cache/ddformat/priors``, one folder per
name) and writes a sample grid PNG there; ``sample`` draws a grid from any prior directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from .data import RealData

METADATA = "prior.json"
SUBFOLDERS = ("vae", "unet", "scheduler")


def prior_name(data: str, classes: int | None = None, pixel: bool = False) -> str:
    """The cache entry of the prior trained on ``data`` (its first ``classes``), latent or pixel space."""
    return data + ("" if classes is None else f"-{classes}") + ("-pixel" if pixel else "")


def cache_dir(name: str) -> Path:
    """Where a prior named ``name`` lives unless a path is given: ``$DDFORMAT_PRIOR_CACHE/<name>``,
    by default ``~/.cache/ddformat/priors/<name>``."""
    root = os.environ.get("DDFORMAT_PRIOR_CACHE") or "~/.cache/ddformat/priors"
    return Path(root).expanduser() / name


@dataclass(frozen=True)
class PriorConfig:
    """Architecture and training of a prior. The VAE downsamples by 2^(len(vae_channels) - 1);
    no ``vae_channels`` makes a pixel-space prior."""

    image_size: int = 32
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (16, 32, 32)
    unet_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    train_timesteps: int = 1000
    vae_epochs: int = 10
    unet_epochs: int = 60
    batch_size: int = 64
    vae_lr: float = 1e-3
    unet_lr: float = 1e-3
    kl_weight: float = 1e-4
    uncond_prob: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


TINY_PRIOR = dict(vae_channels=(8, 8), unet_channels=(8, 16), norm_groups=4, vae_epochs=1, unet_epochs=2,
                  batch_size=32)
"""A prior that trains in a second or two on a CPU: for tests, not for images."""


def _vae(config: PriorConfig, channels: int) -> AutoencoderKL:
    blocks = len(config.vae_channels)
    return AutoencoderKL(in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * blocks,
                         up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=config.vae_channels,
                         layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
                         norm_num_groups=config.norm_groups, sample_size=config.image_size)


def _unet(config: PriorConfig, latent_size: int, channels: int, num_classes: int) -> UNet2DModel:
    blocks = len(config.unet_channels)
    return UNet2DModel(sample_size=latent_size, in_channels=channels, out_channels=channels,
                       down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (blocks - 1),
                       up_block_types=("AttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",),
                       block_out_channels=config.unet_channels, layers_per_block=config.layers_per_block,
                       norm_num_groups=config.norm_groups, attention_head_dim=8,
                       class_embed_type=None, num_class_embeds=num_classes + 1)


def _ddpm(config: PriorConfig) -> DDPMScheduler:
    """Stable Diffusion's noise schedule (scaled-linear betas 0.00085 … 0.012) for latents; DDPM's
    (linear 1e-4 … 0.02, samples clipped to [-1, 1]) in pixel space."""
    if not config.vae_channels:
        return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_start=1e-4, beta_end=0.02,
                             beta_schedule="linear", clip_sample=True)
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False)


def directory_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 over every file of a prior directory (relative path and bytes, in sorted order):
    what a producer records in provenance to name the exact prior it used."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class LatentPrior:
    """Encoder, decoder and class-conditional latent denoiser of one image domain; without a
    VAE the latents are the model-input images themselves (a pixel-space prior)."""

    vae: AutoencoderKL | None
    unet: UNet2DModel
    scheduler: DDIMScheduler
    image_shape: tuple[int, int, int]
    class_names: list[str]
    source: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int((self.vae or self.unet).config.sample_size)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def _pad(self) -> tuple[int, int]:
        _, h, w = self.image_shape
        return (self.image_size - h) // 2, (self.image_size - w) // 2

    def to_model_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` images as the VAE takes them: [-1, 1], zero-padded to ``image_size``."""
        x = images.to(self.device, torch.float32) / 127.5 - 1.0
        top, left = self._pad()
        size = self.image_size
        return F.pad(x, (left, size - x.shape[-1] - left, top, size - x.shape[-2] - top), value=-1.0)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Model-input-sized images cut back to the data's height and width (differentiable)."""
        top, left = self._pad()
        _, h, w = self.image_shape
        return x[..., top:top + h, left:left + w]

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """VAE output in [-1, 1] back to uint8 images of the data's shape."""
        return ((self.crop(x).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Scaled posterior-mean latents of uint8 images (the model-input images in pixel space)."""
        if self.vae is None:
            return self.to_model_input(images)
        scale = self.vae.config.scaling_factor
        return torch.cat([self.vae.encode(self.to_model_input(images[i:i + batch_size])).latent_dist.mean * scale
                          for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 images of scaled latents."""
        if self.vae is None:
            return self.to_pixels(latents)
        scale = self.vae.config.scaling_factor
        return torch.cat([self.to_pixels(self.vae.decode(latents[i:i + batch_size].to(self.device) / scale).sample)
                          for i in range(0, len(latents), batch_size)])

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, classes: torch.Tensor, *, strength: float, steps: int,
                guidance: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image-to-image in latent space, as diffusers' img2img pipelines do: noise ``latents`` to
        the DDIM timestep ``strength`` of the way to pure noise, then run the remaining
        ``round(steps * strength)`` DDIM steps conditioned on ``classes``; ``strength = 1``
        generates from noise alone. ``guidance > 1`` is classifier-free guidance against the
        unconditional class."""
        if not 0.0 < strength <= 1.0 or steps < 1:
            raise ValueError(f"strength must be in (0, 1] and steps positive, got {strength}, {steps}")
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        run = min(max(round(steps * strength), 1), steps)
        timesteps = scheduler.timesteps[steps - run:]
        z0 = latents.to(self.device, torch.float32)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        z = scheduler.add_noise(z0, noise, timesteps[:1].repeat(len(z0)))
        classes = classes.to(self.device)
        uncond = torch.full_like(classes, self.num_classes)
        for t in timesteps:
            if guidance == 1.0:
                eps = self.unet(z, t, class_labels=classes).sample
            else:
                both = self.unet(torch.cat([z, z]), t, class_labels=torch.cat([classes, uncond])).sample
                cond, free = both.chunk(2)
                eps = free + guidance * (cond - free)
            z = scheduler.step(eps, t, z).prev_sample
        return z

    def save(self, path: str | os.PathLike[str]) -> Path:
        """The diffusers layout (``save_pretrained`` per part) plus ``prior.json``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        for name, part in zip(SUBFOLDERS, (self.vae, self.unet, self.scheduler)):
            if part is not None:
                part.save_pretrained(root / name)
        meta = {"source": self.source, "class_names": self.class_names, "image_shape": list(self.image_shape),
                "training": self.training}
        (root / METADATA).write_text(json.dumps(meta, indent=1) + "\n")
        return root

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> "LatentPrior":
        """A prior directory as :meth:`save` writes it, read with diffusers' ``from_pretrained``.
        Without ``prior.json`` (a model trained elsewhere) the image shape is the VAE's square
        ``sample_size`` and the classes are numbered ``0 … num_class_embeds - 2``."""
        root = Path(path)
        if not (root / "unet").is_dir():
            raise FileNotFoundError(f"{root} is not a prior directory (no unet/ in it); train one with "
                                    "python -m producers.common.diffusion train")
        vae = AutoencoderKL.from_pretrained(root / "vae", low_cpu_mem_usage=False).to(device).eval() \
            if (root / "vae").is_dir() else None
        unet = UNet2DModel.from_pretrained(root / "unet", low_cpu_mem_usage=False).to(device).eval()
        if unet.config.num_class_embeds is None:
            raise ValueError(f"{root / 'unet'} has no class embeddings (num_class_embeds): the producers "
                             "denoise with the class as condition")
        scheduler = DDIMScheduler.from_pretrained(root / "scheduler")
        meta_path = root / METADATA
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
        else:
            size = int((vae or unet).config.sample_size)
            meta = {"image_shape": [(vae or unet).config.in_channels, size, size],
                    "class_names": [str(c) for c in range(int(unet.config.num_class_embeds) - 1)]}
        return cls(vae, unet, scheduler, tuple(meta["image_shape"]), list(meta["class_names"]),
                   meta.get("source", ""), meta.get("training", {}))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _train_vae(prior: LatentPrior, x: torch.Tensor, config: PriorConfig, generator: torch.Generator,
               log: dict[str, Any], progress: bool) -> torch.Tensor:
    """Train ``prior.vae`` on model-input images ``x``, fix its latent scale; the scaled latents."""
    start = time.perf_counter()
    vae = prior.vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=config.vae_lr)
    bar = tqdm(range(config.vae_epochs), desc="VAE", disable=not progress)
    for _ in bar:
        for idx in _batches(len(x), config.batch_size, generator):
            posterior = vae.encode(x[idx]).latent_dist
            recon = vae.decode(posterior.sample(generator)).sample
            kl = posterior.kl().mean() / x[idx][0].numel()
            loss = F.mse_loss(recon, x[idx]) + config.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    log["vae_seconds"] = time.perf_counter() - start
    log["vae_final_loss"] = float(loss.item())
    with torch.no_grad():
        raw = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, len(x), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / raw.std()))
    latents = raw * vae.config.scaling_factor
    log["reconstruction_mse"] = float(F.mse_loss(prior.to_model_input(prior.decode(latents)), x))
    return latents


def train_prior(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], config: PriorConfig, *,
                source: str = "", progress: bool = True) -> LatentPrior:
    """Train the VAE on uint8 ``images`` (reconstruction MSE + ``kl_weight`` × KL per pixel), fix
    its latent scale, then train the UNet to predict the noise DDPM adds to the latents of
    ``labels``' classes (class dropped with probability ``uncond_prob``). Without
    ``vae_channels`` the UNet learns on the images themselves."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    shape = tuple(int(s) for s in images.shape[1:])
    if max(shape[1:]) > config.image_size:
        raise ValueError(f"images of shape {shape} do not fit a prior of image_size {config.image_size}")
    factor = 2 ** (len(config.vae_channels) - 1) if config.vae_channels else 1
    latent_size = config.image_size // factor
    if latent_size % 2 ** (len(config.unet_channels) - 1):
        raise ValueError(f"the {latent_size}×{latent_size} latent grid does not halve {len(config.unet_channels) - 1} "
                         "times in the UNet: change image_size, vae_channels or unet_channels")
    vae = _vae(config, shape[0]) if config.vae_channels else None
    channels = config.latent_channels if vae is not None else shape[0]
    prior = LatentPrior(vae, _unet(config, latent_size, channels, len(class_names)),
                        DDIMScheduler.from_config(_ddpm(config).config), shape, list(class_names), source)
    x = prior.to_model_input(images)
    log: dict[str, Any] = {"config": config.to_dict(), "images": len(images)}
    latents = _train_vae(prior, x, config, generator, log, progress) if vae is not None else x

    start = time.perf_counter()
    ddpm = _ddpm(config)
    unet = prior.unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=config.unet_lr)
    steps_total = config.unet_epochs * math.ceil(len(x) / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps_total)))
    labels = labels.to(latents.device)
    bar = tqdm(range(config.unet_epochs), desc="UNet", disable=not progress)
    for _ in bar:
        for idx in _batches(len(latents), config.batch_size, generator):
            z0 = latents[idx]
            noise = torch.randn(z0.shape, generator=generator)
            t = torch.randint(0, config.train_timesteps, (len(idx),), generator=generator)
            y = labels[idx].clone()
            y[torch.rand(len(idx), generator=generator) < config.uncond_prob] = len(class_names)
            loss = F.mse_loss(unet(ddpm.add_noise(z0, noise, t), t, class_labels=y).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    unet.eval()
    log["unet_seconds"] = time.perf_counter() - start
    log["unet_final_loss"] = float(loss.item())
    log["torch_threads"] = torch.get_num_threads()
    prior.training = log
    return prior


def sample_grid(prior: LatentPrior, path: str | os.PathLike[str], *, per_class: int = 8, steps: int = 50,
                guidance: float = 2.0, seed: int = 0) -> Path:
    """A PNG grid, one row per class, of images generated from noise (DDIM, strength 1)."""
    from torchvision.utils import save_image

    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(prior.num_classes).repeat_interleave(per_class)
    noise = torch.randn((len(classes), prior.unet.config.in_channels, prior.unet.config.sample_size,
                         prior.unet.config.sample_size), generator=generator)
    latents = prior.denoise(noise, classes, strength=1.0, steps=steps, guidance=guidance, generator=generator)
    images = prior.decode(latents).float() / 255.0
    save_image(images, Path(path), nrow=per_class, padding=2)
    return Path(path)


def _train(args: argparse.Namespace) -> None:
    real = RealData.load(args.data, args.classes)
    base = PriorConfig(**TINY_PRIOR) if args.tiny else PriorConfig()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(PriorConfig)
               if getattr(args, f.name, None) is not None}
    if args.pixel:
        changes["vae_channels"] = ()
    config = dataclasses.replace(base, **changes)
    out = args.out or cache_dir(prior_name(args.data, args.classes, args.pixel))
    prior = train_prior(real.to_pixels(real.images), real.labels, real.class_names, config, source=args.data,
                        progress=not args.quiet)
    prior.save(out)
    grid = sample_grid(prior, Path(out) / "samples.png")
    t = prior.training
    vae = f"VAE {t['vae_seconds']:.0f} s (reconstruction MSE {t['reconstruction_mse']:.4f} in [-1, 1]), " \
        if "vae_seconds" in t else "pixel space, "
    print(f"{out}: {vae}UNet {t['unet_seconds']:.0f} s; samples in {grid}; sha256 {directory_hash(out)}")


def _sample(args: argparse.Namespace) -> None:
    prior = LatentPrior.load(args.prior)
    print(sample_grid(prior, args.out, per_class=args.per_class, steps=args.steps, guidance=args.guidance,
                      seed=args.seed))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m producers.common.diffusion", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a prior on a ddformat.evaluation.realdata source")
    train.add_argument("--data", required=True, help="mnist, digits, textures, lfw")
    train.add_argument("--classes", type=int, help="keep only the first N classes")
    train.add_argument("--out", type=Path, help="prior directory (default: the cache, see cache_dir)")
    train.add_argument("--tiny", action="store_true", help="the test-sized configuration (TINY_PRIOR)")
    train.add_argument("--pixel", action="store_true", help="no VAE: a pixel-space DDPM (IGDS's prior)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    for f in dataclasses.fields(PriorConfig):
        kind = (lambda s: tuple(int(v) for v in s.split(","))) if f.name.endswith("channels") and f.name != "latent_channels" \
            else type(f.default)
        train.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, help=f"default {f.default}")
    sample = commands.add_parser("sample", help="a PNG grid of generated images, one row per class")
    sample.add_argument("--prior", required=True, type=Path)
    sample.add_argument("--out", required=True, type=Path)
    sample.add_argument("--per-class", type=int, default=8)
    sample.add_argument("--steps", type=int, default=50)
    sample.add_argument("--guidance", type=float, default=2.0)
    sample.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    (_train if args.command == "train" else _sample)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
