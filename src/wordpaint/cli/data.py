"""``wordpaint data export shapes --n N --out DIR``: an imagefolder with metadata.jsonl."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="datasets", description="Build and export datasets.")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = s.add_parser("export", help="export a dataset as an image folder")
    e.add_argument("dataset", choices=["shapes"], help="which dataset")
    e.add_argument("--n", type=int, required=True, help="number of images")
    e.add_argument("--out", required=True, help="folder to write (replaced atomically)")
    e.add_argument("--size", type=int, default=48, help="canvas size in pixels, 32..512 (default 48)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--split", default="train", help="train (no held-out pairs, default) or all")
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from wordpaint.data.export import export_shapes

    path = export_shapes(args.out, n=args.n, size=args.size, seed=args.seed, split=args.split)
    print(f"wrote {args.n} images and metadata.jsonl to {path}")
    return 0
