"""Options that several commands share (generate, eval compositional, eval report), written once so
their names, types and help agree."""

from __future__ import annotations

import argparse


def add_model_option(p: argparse.ArgumentParser) -> None:
    """``--model``: a pipeline folder or the name of a bundled model."""
    p.add_argument("--model", default=None, help="pipeline folder, or a bundled model: shapes (default), emoji, fashion")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """``--steps``, ``--guidance``, ``--sampler``, ``--schedule``: each defaults to the model's own
    setting (the folder's ``defaults``), so an absent option never changes what a model draws."""
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's; 6 for the bundled shapes model)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale >= 0 (default: the model's; "
                   "3.0 for the bundled shapes model, 1.0 for fashion)")
    p.add_argument("--sampler", default=None, help="dpmpp_2m, ddim, euler or ddpm (ancestral) (default: the model's)")
    p.add_argument("--schedule", default=None, help="sigma spacing: trailing or karras (default: the model's)")
