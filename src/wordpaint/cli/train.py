"""``wordpaint train --recipe NAME --out DIR [--resume]``."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from wordpaint.training.train import list_recipes

    p = sub.add_parser("train", help="train a model from a recipe", description="Train a model from a named recipe (accelerate; `accelerate launch -m wordpaint.cli.main train ...` for several processes).")
    p.add_argument("--recipe", required=True, help=f"recipe name ({', '.join(list_recipes())}) or a .json path")
    p.add_argument("--out", required=True, help="run folder: checkpoints, samples, metrics, pipeline/")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    p.add_argument("--init-from", default=None, help="start from the weights of a pipeline folder (e.g. the bundled model) or of one model's folder (an autoencoder run's pipeline/)")
    p.add_argument("--data", default=None, help="image folder for an imagefolder recipe (e.g. the emoji corpus from `wordpaint data build emoji`)")
    p.add_argument("--autoencoder", default=None, help="autoencoder folder for a latent diffusion recipe (the pipeline/ folder of an autoencoder run)")
    p.add_argument("--decoder-inputs", default=None, metavar="FILE",
                   help="sampled latents for a decoder recipe with decoder_input_share or a restorer recipe with sampled_share "
                        "(python -m wordpaint.training.decoder_inputs)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader processes that render batches ahead (recipe num_workers; default 0); use them on a GPU")
    p.add_argument("--mixed-precision", default=None, choices=("no", "bf16", "fp16"), help="accelerate autocast (recipe mixed_precision; default no): bf16 on a GPU, no on a CPU")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop after the step that passes MINUTES of wall time, with a checkpoint and pipeline/ written; "
                        "--resume continues (SIGTERM and Ctrl-C stop the same way)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wordpaint.training.train import train

    path = train(args.recipe, args.out, resume=args.resume, max_steps=args.max_steps, init_from=args.init_from,
                 data=args.data, autoencoder=args.autoencoder, workers=args.workers, mixed_precision=args.mixed_precision,
                 time_limit=args.time_limit, decoder_inputs=args.decoder_inputs)
    print(f"wrote {path}")
    return 0
