"""``wordpaint clip train|eval|score``: the project's own image-text model (wordpaint-clip)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("clip", help="wordpaint-clip image-text model", description="Train, evaluate and use wordpaint-clip.")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = s.add_parser("train", help="train the projection heads on the project's corpora")
    t.add_argument("--out", required=True, help="run folder: cache/, model/, metrics.json")
    t.add_argument("--data", default=None, help="emoji/icon folder from `wordpaint data build emoji`")
    t.add_argument("--kinds", default="emoji,icon", help="which rows of --data: emoji, icon (comma-separated)")
    t.add_argument("--shapes", type=int, default=3000, help="shapes-world scenes (default 3000)")
    t.add_argument("--fashion", type=int, default=6000, help="Fashion-MNIST training images (default 6000)")
    t.add_argument("--fashion-test", type=int, default=2000, help="Fashion-MNIST test images for zero-shot accuracy")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--augment", type=int, default=0, metavar="K",
                   help="softened copies (random blur + noise) of every training image; each epoch draws one view (default 0)")
    t.set_defaults(func=run_train)
    e = s.add_parser("eval", help="retrieval and zero-shot accuracy of a wordpaint-clip on real held-out data")
    e.add_argument("--out", required=True, help="folder for metrics.json (and cache/ unless --cache)")
    e.add_argument("--model", default=None, help="wordpaint-clip folder (default: the bundled one)")
    e.add_argument("--data", default=None, help="emoji/icon folder from `wordpaint data build emoji`")
    e.add_argument("--kinds", default="emoji,icon", help="which rows of --data: emoji, icon (comma-separated)")
    e.add_argument("--fashion-test", type=int, default=2000, help="Fashion-MNIST test images for zero-shot accuracy (0: none)")
    e.add_argument("--cache", default=None, help="tower-feature cache (e.g. a training run's cache/ folder)")
    e.set_defaults(func=run_eval)
    c = s.add_parser("score", help="CLIP-score (100 x cosine) of images against a text")
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument("--text", required=True, help="the caption to score against")
    c.add_argument("--model", default=None, help="wordpaint-clip folder (default: the bundled one)")
    c.set_defaults(func=run_score)


def run_train(args: argparse.Namespace) -> int:
    from wordpaint.training.clip import train_clip

    metrics = train_clip(args.out, emoji_dir=args.data, kinds=_kinds(args.kinds), shapes=args.shapes, fashion=args.fashion,
                         fashion_test=args.fashion_test, epochs=args.epochs, seed=args.seed,
                         augment=args.augment)
    print(json.dumps({k: v for k, v in metrics.items() if k != "training"}, indent=2))
    print(f"wrote {args.out}/model and {args.out}/metrics.json")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from wordpaint.training.clip import eval_clip

    metrics = eval_clip(args.model, args.out, emoji_dir=args.data, kinds=_kinds(args.kinds), fashion_test=args.fashion_test,
                        cache=args.cache)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.out}/metrics.json")
    return 0


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def run_score(args: argparse.Namespace) -> int:
    from wordpaint.eval.metrics import load_images
    from wordpaint.models.clip import WordpaintClip

    clip = WordpaintClip.from_pretrained(args.model)
    images = load_images(args.images)
    for path, s in zip(args.images, clip.score(images, [args.text] * len(images)).tolist()):
        print(f"{s:7.2f}  {path}")
    return 0
