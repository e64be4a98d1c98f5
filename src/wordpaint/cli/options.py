"""Options that several commands share (generate, eval compositional, eval report) and the parsers of their
values, written once so their names, types, help and error messages agree."""

from __future__ import annotations

import argparse

from wordpaint.errors import WordpaintError


def add_model_option(p: argparse.ArgumentParser) -> None:
    """``--model``: a pipeline folder or the name of a bundled model."""
    p.add_argument("--model", default=None, help="pipeline folder, or a bundled model: shapes (default), emoji, fashion")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """``--steps``, ``--guidance``, ``--sampler``, ``--schedule``: each defaults to the model's own
    setting (the folder's ``defaults``), so an absent option never changes what a model draws."""
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's; 6 for the bundled shapes model)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale >= 0 (default: the model's; "
                   "3.0 for the bundled shapes model, 1.0 for fashion)")
    p.add_argument("--sampler", default=None, help="dpmpp_2m, ddim, euler, ddpm (ancestral) or dpmpp_2m_sde (default: the model's)")
    p.add_argument("--schedule", default=None, help="sigma spacing: trailing or karras (default: the model's)")


def add_guide_options(p: argparse.ArgumentParser) -> None:
    """``--clip-guidance``, ``--autoguidance``, ``--expert-sigma``, ``--refine-strength``, ``--guidance-interval``,
    ``--prior-strength``, ``--restore``: the guides, experts, starts, refine passes and restorers some models carry beside
    classifier-free guidance;
    each absent option keeps the model's default."""
    p.add_argument("--clip-guidance", type=float, default=None, metavar="SCALE",
                   help="models with a guide (a noised wordpaint-clip): classifier guidance toward the prompt at this scale, "
                   "on top of --guidance; 0 turns it off (default: the model's)")
    p.add_argument("--autoguidance", type=float, default=None, metavar="SCALE",
                   help="models with an autoguide (a weaker diffusion model): step away from its estimate at this scale, on top "
                   "of --guidance; 0 turns it off (default: the model's)")
    p.add_argument("--expert-sigma", default=None, metavar="SIGMA|off",
                   help="models with an expert (a low-noise diffusion model): it denoises every step at noise level <= SIGMA in "
                   "place of the model (e.g. 0.2: the last step of the emoji model's 10); off: the model alone (default: the model's)")
    p.add_argument("--refine-strength", default=None, metavar="S|off",
                   help="run img2img on each finished picture at strength S in (0, 1] (SDXL's refiner: by the model's expert "
                   "where it has one, else by the model itself); off: no refine pass (default: the model's)")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI|none",
                   help="guide only at noise levels LO <= sigma <= HI (e.g. 0.2,100000: every step but the last); none "
                   "guides every step; outside it each step runs the conditional model alone (default: the model's)")
    p.add_argument("--prior-strength", default=None, metavar="S|off",
                   help="models with a prior (a text -> latent draft): start from the prompt's draft taken this far up the "
                   "noise schedule, in [0, 1] (0: the draft itself, no diffusion step); off starts from pure noise (default: the model's)")
    p.add_argument("--restore", default=None, choices=("on", "off"),
                   help="models with a restorer (a text-conditioned pixel network after the autoencoder's decoder): run the "
                   "decoded pictures through it (on) or not (off) (default: the model's)")


def parse_default_or_off(text: str | None, *, option: str, off: str, parse, expected: str):
    """An option that is absent (``"default"``: the model's own value), switched off (``None``)
    or a value ``parse(text)``; anything ``parse`` rejects gets a message naming ``expected``."""
    if text is None:
        return "default"
    if text.strip().lower() == off:
        return None
    try:
        return parse(text)
    except ValueError:
        raise WordpaintError(f"{option} must be {expected} or {off}, got {text!r}") from None


def _two_numbers(text: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in text.split(","))
    return lo, hi


def parse_interval(text: str | None):
    """``--guidance-interval``: None (the model's default), 'none', or 'LO,HI' in sigma."""
    return parse_default_or_off(text, option="--guidance-interval", off="none", parse=_two_numbers,
                                expected="LO,HI (two numbers, e.g. 0,1.2)")


def parse_expert_sigma(text: str | None):
    """``--expert-sigma``: None (the model's default), 'off', or a noise level (checked by the pipeline)."""
    return parse_default_or_off(text, option="--expert-sigma", off="off", parse=float, expected="a noise level >= 0")


def parse_refine_strength(text: str | None):
    """``--refine-strength``: None (the model's default), 'off', or a number (checked by the pipeline)."""
    return parse_default_or_off(text, option="--refine-strength", off="off", parse=float, expected="a number in (0, 1]")


def parse_restore(text: str | None):
    """``--restore``: "default" (absent: the model's default), True (on) or False (off)."""
    return "default" if text is None else text == "on"


def parse_prior_strength(text: str | None):
    """``--prior-strength``: None (the model's default), 'off', or a number (checked by the pipeline)."""
    return parse_default_or_off(text, option="--prior-strength", off="off", parse=float, expected="a number in [0, 1]")
