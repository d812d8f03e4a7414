"""argparse types for output paths, shared by the command line, the domain studies and the scripts."""

from __future__ import annotations

import argparse
from pathlib import Path


def directory(text: str) -> str:
    """A directory the script writes into: it may not exist yet, but neither it nor a parent may be a file."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("expected a directory, got ''.")
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise argparse.ArgumentTypeError(f"{p} is a file, not a directory; pass a directory.")
            break
    return text


def output_directory(text: str) -> str:
    """A directory the script replaces as a whole (``atomic_directory``): absent, empty, or an earlier
    output of a script (it holds metrics.json), so a mistyped path cannot delete unrelated files."""
    path = Path(directory(text))
    if path.is_dir() and any(path.iterdir()) and not (path / "metrics.json").is_file():
        raise argparse.ArgumentTypeError(
            f"{path} exists and is not an earlier output (no metrics.json), but "
            "the results replace the whole directory; pass a new directory."
        )
    return text
