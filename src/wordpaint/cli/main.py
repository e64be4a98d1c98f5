"""``wordpaint`` command line: one module per noun, each thin over the library.

Bad input is a one-line ``wordpaint: error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from wordpaint import __version__
from wordpaint.cli import clip, data, evaluate, generate, model, train

COMMANDS = {"generate": generate, "train": train, "eval": evaluate, "data": data, "clip": clip, "model": model}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wordpaint", description="Text-to-image generation driven by a language model, offline on CPU.")
    parser.add_argument("--version", action="version", version=f"wordpaint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, mod in COMMANDS.items():
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # WordpaintError and other bad-input errors
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"wordpaint: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wordpaint: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
