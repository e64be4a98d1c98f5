"""Image autoencoder for latent diffusion: diffusers' ``AutoencoderKL``, small, trained here.

64x64x3 images in [-1, 1] <-> 16x16x4 latents (three levels: 64 -> 32 -> 16). The diffusion UNet
then works on latents, 12x fewer numbers than pixels, which is what makes 64 px text-to-image
trainable on a 2-core CPU. Read top to bottom: config -> model (owns its loss) -> encode/decode.

The loss is L1 + MSE on pixels plus a very small KL term (as in Stable Diffusion's VAE, the KL
only keeps the latent scale tame; there is no perceptual term because no LPIPS weights exist
offline, but ``gradient_weight`` adds the gradient difference loss, which charges for texture on flat
fills). A decoder-only fine-tune may add a hinge adversarial term (``adversarial_weight``) from a
small PatchGAN trained alongside from scratch, as VQGAN and Stable Diffusion's VAE do: off by
default, because it about doubles a step's cost. ``scaling_factor``
(1 / std of the training latents, measured after training) brings latents to unit variance so the
diffusion noise schedule fits them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wordpaint.errors import WordpaintError
from wordpaint.models.config import ConfigMixin, check_number, init_device, module_device


@dataclass
class AutoencoderConfig(ConfigMixin):
    family = "autoencoder"  # class attribute: not a config field

    resolution: int = 64
    in_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # one level per entry; 3 levels = factor 4
    layers_per_block: int = 1
    norm_num_groups: int = 16
    mid_block_add_attention: bool = True
    kl_weight: float = 1e-6
    mse_weight: float = 1.0  # loss = L1 + mse_weight * MSE + kl_weight * KL
    scaling_factor: float = 1.0  # set after training: 1 / std of the training latents
    # False: fine-tune the decoder alone on the frozen encoder's posterior means (as Stable
    # Diffusion's ft-MSE VAE did), so latents, and every diffusion model trained on them, stay valid
    train_encoder: bool = True
    # decoder-only training: each picture's latent gets Gaussian noise of a std drawn uniformly in
    # [0, decoder_noise] (in units of the scaled, unit-variance latents) before decoding, so the
    # decoder learns to draw clean pictures from the slightly wrong latents a diffusion model returns
    # (a bare decoder collapses at std 0.1: benchmarks/emoji_decoder_probe.py); 0 = off
    decoder_noise: float = 0.0
    # fraction of each batch's pictures decoded from their clean latent all the same (no noise), so
    # the decoder keeps its clean reconstruction while learning the noisy ones; needs decoder_noise
    decoder_noise_clean: float = 0.0
    # resnet blocks added at the end of each decoder level (more capacity for a decoder that must
    # both reconstruct clean latents and clean up noisy ones); each starts as the identity (its
    # last convolution zeroed), so --init-from a decoder without them starts from its exact outputs
    decoder_extra_layers: int = 0
    # decoder-only training: fraction of each batch's pictures decoded from a latent the pipeline's
    # own sampler returned for that picture (the recipe's data.decoder_inputs file, made by
    # python -m wordpaint.training.decoder_inputs) instead of the encoder's, so the decoder learns
    # to draw the picture from what it is really handed at generation time; 0 = off
    decoder_input_share: float = 0.0
    # decoder-only training: weight of a hinge adversarial term from a PatchGAN discriminator
    # trained in the same step (VQGAN, Stable Diffusion's VAE): L1 + MSE alone average over what a
    # soft latent leaves open, which draws soft pictures; the critic rewards crisp ones. 0 = off
    adversarial_weight: float = 0.0
    disc_channels: int = 32  # the discriminator's first width (then x2, x4): ~0.17 M parameters at 32
    # VQGAN's adaptive weight (Esser et al. 2021, eq. 7): the adversarial term is scaled each step by
    # ||grad rec|| / ||grad adv|| at the decoder's last layer (times adversarial_weight), so it pulls
    # as hard as the reconstruction does whatever the critic's logit scale; False = the fixed weight
    adversarial_adaptive: bool = False
    # weight of the gradient difference loss (Mathieu et al. 2016): L1 between the reconstruction's
    # and the picture's horizontal and vertical pixel differences. L1 + MSE alone tolerate a faint
    # texture on a flat fill (a few levels either way costs little), which is what a flat-fill style
    # (Twemoji) loses to a shaded one (Noto) in the round trip; differences charge for it. 0 = off
    gradient_weight: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderConfig":
        cfg = super().from_dict(d)
        check_number("decoder_noise", cfg.decoder_noise, "a number in [0, 10]", lambda v: 0 <= v <= 10)
        n = cfg.decoder_extra_layers
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 8:
            raise ValueError(f"decoder_extra_layers must be an integer in [0, 8], got {n!r}")
        check_number("decoder_noise_clean", cfg.decoder_noise_clean, "a fraction in [0, 1)", lambda v: 0 <= v < 1)
        if cfg.decoder_noise_clean and not cfg.decoder_noise:
            raise ValueError("decoder_noise_clean is the share of pictures decoded without decoder_noise: set decoder_noise too")
        check_number("decoder_input_share", cfg.decoder_input_share, "a fraction in [0, 1)", lambda v: 0 <= v < 1)
        check_number("adversarial_weight", cfg.adversarial_weight, "a number in [0, 10]", lambda v: 0 <= v <= 10)
        check_number("gradient_weight", cfg.gradient_weight, "a number in [0, 10]", lambda v: 0 <= v <= 10)
        for name in ("decoder_noise", "decoder_input_share", "adversarial_weight"):  # each changes what the decoder alone learns
            if getattr(cfg, name) and cfg.train_encoder:
                raise ValueError(f"{name} trains the decoder alone: set train_encoder to false")
        if not isinstance(cfg.adversarial_adaptive, bool):
            raise ValueError(f"adversarial_adaptive must be true or false, got {cfg.adversarial_adaptive!r}")
        if cfg.adversarial_adaptive and not cfg.adversarial_weight:
            raise ValueError("adversarial_adaptive scales the adversarial term: set adversarial_weight too")
        w = cfg.disc_channels
        if isinstance(w, bool) or not isinstance(w, int) or w < 4 or w % 4:
            raise ValueError(f"disc_channels must be a positive multiple of 4, got {w!r}")
        return cfg

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_resolution(self) -> int:
        return self.resolution // self.downsample_factor


def gradient_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Gradient difference loss of two (B, C, H, W) images: mean L1 between their horizontal
    (B, C, H, W-1) and vertical (B, C, H-1, W) neighbour differences, summed over the two."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def patch_discriminator(in_channels: int, width: int) -> torch.nn.Sequential:
    """PatchGAN (pix2pix): (B, C, H, W) -> (B, 1, H/8, W/8) real-versus-decoded logits, one per
    overlapping patch (a 64 px picture: 8 x 8 patches of about 30 px). GroupNorm, not BatchNorm, so
    a batch's statistics do not mix real and decoded pictures."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(4, 2 * width), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.GroupNorm(4, 4 * width), nn.LeakyReLU(0.2),
        nn.Conv2d(4 * width, 1, 3, 1, 1),
    )


class AutoencoderModel(torch.nn.Module):
    """``loss = model({"pixel_values": (B, 3, H, W) in [-1, 1]})``; ``encode`` / ``decode`` map
    images to scaled latents (B, latent_channels, H/f, W/f) and back."""

    family = "autoencoder"

    def __init__(self, config: AutoencoderConfig, *, empty: bool = False):
        super().__init__()
        from diffusers import AutoencoderKL

        self.config = config
        n = len(config.block_out_channels)
        with init_device(empty):
            self.vae = AutoencoderKL(
                in_channels=config.in_channels,
                out_channels=config.in_channels,
                down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=config.block_out_channels,
                layers_per_block=config.layers_per_block,
                latent_channels=config.latent_channels,
                norm_num_groups=config.norm_num_groups,
                sample_size=config.resolution,
                mid_block_add_attention=config.mid_block_add_attention,
            )
            for block in self.vae.decoder.up_blocks:  # each level's resnets keep its channel count
                last = block.resnets[-1]
                if config.decoder_extra_layers and last.in_channels != last.out_channels:
                    raise ValueError("decoder_extra_layers needs layers_per_block >= 1 (a level whose last resnet keeps its channels)")
                for _ in range(config.decoder_extra_layers):
                    layer = copy.deepcopy(last)  # same settings; fresh weights (nothing loaded yet)
                    torch.nn.init.zeros_(layer.conv2.weight)  # x + 0: the identity until trained
                    torch.nn.init.zeros_(layer.conv2.bias)
                    block.resnets.append(layer)
            # trained with the decoder only (see forward); the pipeline never calls it
            self.discriminator = patch_discriminator(config.in_channels, config.disc_channels) if config.adversarial_weight else None
        if not config.train_encoder:
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)

    def forward(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x = batch["pixel_values"]  # (B, C, H, W) in [-1, 1]
        if self.config.train_encoder:
            posterior = self.vae.encode(x).latent_dist
            z = posterior.sample(generator=generator)  # (B, latent_channels, H/f, W/f), unscaled
            kl = self.config.kl_weight * posterior.kl().mean() / x[0].numel()  # per pixel: the weight does not depend on size
        else:  # decoder alone, from the posterior means the diffusion model sees; no KL to shape
            with torch.no_grad():
                z = self.vae.encode(x).latent_dist.mean  # (B, latent_channels, H/f, W/f), unscaled
            if self.config.decoder_noise:
                level = torch.rand(z.shape[0], 1, 1, 1, generator=generator, device=z.device) * self.config.decoder_noise
                if self.config.decoder_noise_clean:  # these pictures keep their clean latent: (B, 1, 1, 1) mask
                    level = level * (torch.rand(level.shape, generator=generator, device=z.device) >= self.config.decoder_noise_clean)
                z = z + level / self.config.scaling_factor * torch.randn(z.shape, generator=generator, device=z.device)
            if self.config.decoder_input_share:
                if batch.get("decoder_input") is None:
                    raise WordpaintError("decoder_input_share needs each batch's sampled latents: give the recipe "
                                         "data.decoder_inputs (python -m wordpaint.training.decoder_inputs)")
                given = batch["decoder_input"].to(z) / self.config.scaling_factor  # (B, C, h, w), unscaled like z
                take = torch.rand(z.shape[0], 1, 1, 1, generator=generator, device=z.device) < self.config.decoder_input_share
                z = torch.where(take, given, z)
            kl = 0.0
        recon = self.vae.decode(z).sample
        rec = F.l1_loss(recon, x) + self.config.mse_weight * F.mse_loss(recon, x)
        if self.config.gradient_weight:
            rec = rec + self.config.gradient_weight * gradient_difference(recon, x)
        if self.discriminator is None:
            return rec + kl
        # hinge GAN in one optimizer step: the critic learns real vs decoded on *detached* pictures;
        # the decoder raises the critic's score through detached critic weights (functional_call),
        # so each network moves by its own loss only
        d_loss = F.relu(1 - self.discriminator(x)).mean() + F.relu(1 + self.discriminator(recon.detach())).mean()
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g_loss = -torch.func.functional_call(self.discriminator, frozen, (recon,)).mean()
        weight = self.config.adversarial_weight
        self.loss_terms = {"loss_reconstruction": rec.item(), "loss_decoder_adversarial": g_loss.item(),
                           "loss_discriminator": d_loss.item()}
        if self.config.adversarial_adaptive and torch.is_grad_enabled():
            weight = weight * self.adaptive_weight(rec, g_loss)
            self.loss_terms["adversarial_adaptive_weight"] = float(weight)
        return rec + weight * g_loss + d_loss

    def adaptive_weight(self, rec: torch.Tensor, g_loss: torch.Tensor) -> torch.Tensor:
        """VQGAN's balance: ||d rec / d W|| / (||d g_loss / d W|| + 1e-4) at the decoder's last
        convolution W (3, C, 3, 3), clamped to [0, 1e4] and detached (a scalar, not a path for gradients)."""
        last = self.vae.decoder.conv_out.weight
        g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
        g_adv, = torch.autograd.grad(g_loss, last, retain_graph=True)
        return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> scaled latents: the posterior mean (deterministic) times
        ``scaling_factor``."""
        return self.vae.encode(x.to(module_device(self))).latent_dist.mean * self.config.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (B, C, H, W) images clamped to [-1, 1]."""
        return self.vae.decode(z.to(module_device(self)) / self.config.scaling_factor).sample.clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@torch.no_grad()
def latent_scale(model: AutoencoderModel, images: torch.Tensor, *, batch_size: int = 64) -> float:
    """1 / std of the unscaled posterior means of ``images`` (N, C, H, W) in [-1, 1]: the
    ``scaling_factor`` that gives the diffusion model unit-variance latents."""
    zs = [model.vae.encode(images[i : i + batch_size]).latent_dist.mean for i in range(0, len(images), batch_size)]
    return float(1.0 / torch.cat(zs).float().std())
