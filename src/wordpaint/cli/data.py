"""``wordpaint data export shapes --n N --out DIR`` (an imagefolder with metadata.jsonl) and
``wordpaint data build emoji --out DIR`` (the emoji and icon corpus from npm packages)."""

from __future__ import annotations

import argparse
import sys


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
    b = s.add_parser("build", help="build a corpus from packaged sources")
    b.add_argument("dataset", choices=["emoji"], help="which corpus")
    b.add_argument("--out", required=True, help="folder to write or update (idempotent)")
    b.add_argument("--styles", default="noto,twemoji,openmoji", help="emoji styles, comma-separated: noto, twemoji, openmoji, fluent ('' for none)")
    b.add_argument("--icons", default="lucide,tabler", help="icon sets, comma-separated ('' for none)")
    b.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    b.add_argument("--cache", default=None, help="npm install folder (default ~/.cache/wordpaint/npm)")
    b.add_argument("--workers", type=int, default=2, help="rasterising processes (default 2)")
    b.add_argument("--timeout", type=float, default=10.0, help="seconds per file before it is skipped (default 10)")
    b.set_defaults(func=run_build)


def run_export(args: argparse.Namespace) -> int:
    from wordpaint.data.export import export_shapes

    path = export_shapes(args.out, n=args.n, size=args.size, seed=args.seed, split=args.split)
    print(f"wrote {args.n} images and metadata.jsonl to {path}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from wordpaint.data.emoji import build_emoji

    def names(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    manifest = build_emoji(args.out, styles=names(args.styles), icons=names(args.icons), cache=args.cache,
                           size=args.size, workers=args.workers, timeout=args.timeout,
                           log=lambda m: print(m, file=sys.stderr))
    print(f"{manifest['images']} images in {args.out} ({len(manifest['skipped'])} skipped)")
    return 0
