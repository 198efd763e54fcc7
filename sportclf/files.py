"""Which files a run sends: files as named, folders searched for images, glob patterns expanded."""
from __future__ import annotations

import errno
import glob
import os
from collections.abc import Iterable
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def find_images(args: Iterable[str | Path]) -> list[Path]:
    """Each file once, in the order given (a folder's images sorted). A named file is sent whatever
    its suffix: the service says whether it is an image. FileNotFoundError for a path that matches
    nothing."""
    found: dict[str, Path] = {}
    for arg in map(str, args):
        # A pattern the shell did not expand (quoted, or no shell at all) is expanded here.
        matches = [arg] if os.path.exists(arg) else sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise FileNotFoundError(errno.ENOENT, "no such file or folder", arg)
        for match in map(Path, matches):
            for path in folder_images(match) if match.is_dir() else [match]:
                found.setdefault(same_file_key(path), path)
    return list(found.values())


def folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def same_file_key(path: str | Path) -> str:
    """One spelling per file, so `photos/a.jpg` and `./photos/a.jpg` count once (and --resume
    recognises a file however an earlier run named it)."""
    return os.path.abspath(path)
