"""Helpers shared by the CLI commands: help formatting, warnings, output directories, tables.

Nothing here is used by the library; every command module imports what it needs.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from convexrecon.io import default_cache_dir

REFERENCES = ("rss", "sense")
REFERENCE_TEXT = {
    "rss": "the file's 'reconstruction_rss' (root-sum-of-squares of the fully sampled coil images, fastMRI's "
           "reference), centre-cropped",
    "sense": "the fully sampled SENSE image with the package's ESPIRiT maps (the training target), centre-cropped",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default once and keeps the description's line breaks.

    argparse's default formatter appends ``(default: X)`` to every help text; texts that already state their
    default, and options without one (None), are left as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    """Add ``--cache-dir`` (default: :func:`convexrecon.io.default_cache_dir`, never the data directory)."""
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"where preprocessed slices and ESPIRiT maps are cached (default: $CONVEXRECON_CACHE, "
                             f"else $XDG_CACHE_HOME/convexrecon or ~/.cache/convexrecon; now {default_cache_dir()})")


def cache_dir_of(args: argparse.Namespace) -> Path:
    """The cache directory a command uses: ``--cache-dir`` or the user default."""
    return Path(args.cache_dir) if args.cache_dir is not None else default_cache_dir()


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message} [{category.__name__}]\n"


@contextlib.contextmanager
def readable_warnings() -> Iterator[None]:
    """Print warnings as one line ``warning: <message> [<category>]``, each distinct message once (whichever
    line of the package raised it: a file skipped by two readers of a directory is reported once)."""
    saved = warnings.formatwarning
    warnings.formatwarning = _format_warning
    seen: set[tuple[type, str]] = set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            show = warnings.showwarning

            def once(message, category, filename, lineno, file=None, line=None):
                key = (category, str(message))
                if key not in seen:
                    seen.add(key)
                    show(message, category, filename, lineno, file, line)

            warnings.showwarning = once
            yield
    finally:
        warnings.formatwarning = saved


@contextlib.contextmanager
def output_dir(path: Path) -> Iterator[Path]:
    """Yield ``path``; if this run created it and fails (any exception or exit) leaving it empty, remove it."""
    created = not path.exists()
    try:
        yield path
    except BaseException:
        if created and path.is_dir() and not _has_files(path):
            shutil.rmtree(path, ignore_errors=True)
        raise


def _has_files(path: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".write-test.") for p in path.rglob("*"))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)



INTERRUPTED = 130  # the shell's exit status after Ctrl-C (128 + SIGINT)
_FINISHED = re.compile(r"^(?:block|stage)_(\d+)\.pt$")  # a convex block or stage, written once it is solved


def finished_blocks(directory: Path) -> int:
    """How many blocks (stages) of a convex run the checkpoints in ``directory`` hold: ``block_01.pt``,
    ``block_02.pt``, ... (``stage_XX.pt`` for the unrolled network) in an unbroken run from 1."""
    if not directory.is_dir():
        return 0
    numbers = {int(m.group(1)) for p in directory.iterdir() if (m := _FINISHED.match(p.name))}
    count = 0
    while count + 1 in numbers:
        count += 1
    return count


def interrupted(during: str, kept: str | None = None, rerun: str = "resume") -> SystemExit:
    """Report Ctrl-C as one line on stderr, ``interrupted during <during>[; <kept>]; run the same command to
    <rerun>``; returns the ``SystemExit(130)`` to raise (so that :func:`output_dir` removes an output directory
    left empty). ``kept`` says what the command had already written completely (its outputs are written to a
    temporary name and renamed, so nothing half-written is left)."""
    line = f"interrupted during {during}" + (f"; {kept}" if kept else "") + f"; run the same command to {rerun}"
    sys.stderr.write(f"\n{line}\n")
    sys.stderr.flush()
    return SystemExit(INTERRUPTED)


@dataclass
class Progress:
    """What a command is doing, for the line Ctrl-C prints (:func:`on_interrupt`); the command updates it as it
    goes.

    Attributes
    ----------
    during : str
        What is being done (``"reconstruct of a.h5 (slice 2 of 8)"``).
    kept : str or None
        What is already written and complete (None: nothing to say).
    rerun : str
        What running the same command again does (``"redo it"``, ``"resume"``).
    """

    during: str
    kept: str | None = None
    rerun: str = "redo it"


@contextlib.contextmanager
def on_interrupt(progress: Progress) -> Iterator[Progress]:
    """Turn Ctrl-C (``KeyboardInterrupt``) inside the block into :func:`interrupted`'s one line from ``progress``
    and exit status 130, without a traceback."""
    try:
        yield progress
    except KeyboardInterrupt:
        raise interrupted(progress.during, progress.kept, progress.rerun) from None


def written_files(directory: Path, names: Sequence[str], total: int) -> str:
    """``kept`` of :class:`Progress` for a command that writes one file per input into ``directory``."""
    if not names:
        return f"no output file was written to {directory}"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (f"{len(names)} of {total} output file(s) are complete in {directory} ({shown}); no partial file is "
            f"left")
