"""Samplers as pure functions of ``(denoiser, x, sigmas, ...)``, as in k-diffusion.

``denoiser(x, sigma) -> x0_hat`` works in the VE parametrisation x = x0 + sigma * eps; ``x``
starts as noise scaled to ``sigmas[0]``; ``sigmas`` decrease to 0. Written by hand because
diffusers' schedulers are stateful objects tied to their own timestep tables, while these are
ten lines each, exact, and easy to compare.
"""

from __future__ import annotations

from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _progress(n: int, disable: bool):
    from tqdm.auto import trange

    return trange(n, disable=disable, leave=False, desc="sampling")


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, disable_progress: bool = True, **_) -> torch.Tensor:
    """First-order probability-flow ODE step; equal to deterministic DDIM (eta = 0)."""
    for i in _progress(len(sigmas) - 1, disable_progress):
        d = (x - denoiser(x, sigmas[i])) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    disable_progress: bool = True,
    **_,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) in sigma form; ``eta`` = 1 is ancestral sampling, 0 deterministic."""
    for i in _progress(len(sigmas) - 1, disable_progress):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, s)
        eps = (x - x0) / s
        if eta > 0 and s_next > 0:
            # variance of the DDIM noise term, converted from alpha to sigma form
            a, a_next = 1 / (1 + s**2), 1 / (1 + s_next**2)
            var = eta**2 * (1 - a_next) / (1 - a) * (1 - a / a_next)
            s_up = (var / a_next).sqrt()
            s_down = (s_next**2 - s_up**2).clamp(min=0).sqrt()
            x = x0 + eps * s_down + s_up * torch.randn(x.shape, generator=generator).to(x.device)
        else:
            x = x0 + eps * s_next
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, disable_progress: bool = True, **_) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in log-sigma time."""
    old_x0 = None
    for i in _progress(len(sigmas) - 1, disable_progress):
        x0 = denoiser(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x0
        else:
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            if old_x0 is not None:
                r = (t - (-sigmas[i - 1].log())) / h
                x0_d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
            else:
                x0_d = x0
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * x0_d
        old_x0 = x0
    return x


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, *, rho: float = 7.0) -> torch.Tensor:
    """(n+1,) sigmas spaced as in Karras et al. 2022 (EDM), then 0: dense at low noise, and no
    single giant first step from the schedule's last timestep (sigma ~ 2e4 for the cosine
    schedule), which would collapse the noise's low frequencies onto the data mean."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


SIGMA_SCHEDULES = ("karras", "trailing")

def sample_ddpm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, **kw) -> torch.Tensor:
    """Ancestral DDPM sampling = DDIM with eta = 1: fresh noise each step corrects the errors
    an imperfect denoiser makes along the way, at the price of more steps."""
    kw.pop("eta", None)
    return sample_ddim(denoiser, x, sigmas, eta=1.0, **kw)


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    disable_progress: bool = True,
    **_,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's ``sample_dpmpp_2m_sde``, midpoint
    form): the 2M step of the reverse SDE instead of the ODE. Each step keeps only exp(-eta h)
    of the current noise and adds fresh noise of the same total size, so, like ancestral
    sampling, it lands on a *sample* of the denoiser's posterior rather than drifting with its
    mean, and corrects the errors earlier steps made; ``eta`` = 0 is the ODE solver (2M).
    The noise is drawn per step from ``generator`` (k-diffusion's default is a Brownian tree,
    which only matters when comparing different step counts on one noise path)."""
    old_x0, h_last = None, None
    for i in _progress(len(sigmas) - 1, disable_progress):
        x0 = denoiser(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x0
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()  # step in log-sigma time, > 0
            eta_h = eta * h
            data_weight = (-h - eta_h).expm1().neg()  # 1 - exp(-(1 + eta) h): the step's weight on the data estimate
            # exact integration of the linear part, first-order data term
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + data_weight * x0
            if old_x0 is not None:  # second order: the midpoint correction from the last two estimates
                x = x + 0.5 * data_weight * (h / h_last) * (x0 - old_x0)
            if eta:
                x = x + sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * torch.randn(x.shape, generator=generator).to(x.device)
            h_last = h
        old_x0 = x0
    return x


SAMPLERS: dict[str, Callable] = {"dpmpp_2m": sample_dpmpp_2m, "ddim": sample_ddim, "euler": sample_euler, "ddpm": sample_ddpm,
                                 "dpmpp_2m_sde": sample_dpmpp_2m_sde}
