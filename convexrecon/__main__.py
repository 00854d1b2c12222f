"""``python -m convexrecon``: the command-line interface of :mod:`convexrecon.cli`."""

from convexrecon.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
