"""Results on disk, one line per image: CSV for spreadsheets, JSON Lines for programs. Each line is
flushed as it is written, so an interrupted run leaves every result it had, and `--resume` reads
back which files a file already holds."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sportclf.client import Result
from sportclf.files import same_file_key

FORMATS = ("csv", "jsonl")
COLUMNS = ["file", "status", "top1", "p1", "top2", "p2", "top3", "p3", "error"]


class OutputError(Exception):
    """An existing output that cannot be resumed; the message says why."""


def csv_row(result: Result) -> list[str]:
    top3 = [value for p in result.top3 for value in (p.display_name, f"{p.confidence:.4f}")]
    return [str(result.path), result.status, *top3, *[""] * (6 - len(top3)), result.error.message if result.error else ""]


def json_line(result: Result) -> str:
    return json.dumps({
        "file": str(result.path), "status": result.status,
        "top3": [{"label": p.label, "display_name": p.display_name, "confidence": round(p.confidence, 4)}
                 for p in result.top3],
        "error": {"code": result.error.code, "message": result.error.message} if result.error else None,
    }, ensure_ascii=False)


def files_in(path: Path, fmt: str) -> set[str]:
    """The files an earlier run's output lists (as same_file_key); empty if there is no output yet."""
    if not path.exists():
        return set()
    text = complete_lines(path)
    try:
        names = csv_files(text) if fmt == "csv" else [json.loads(line)["file"] for line in text.splitlines() if line]
    except (ValueError, KeyError, TypeError):
        names = None
    if names is None:
        raise OutputError(f"{path} is not {fmt.upper()} output of sportclf; choose another --out or --format")
    return {same_file_key(name) for name in names}


def csv_files(text: str) -> list[str] | None:
    rows = list(csv.reader(io.StringIO(text)))
    if rows and rows[0] != COLUMNS:
        return None
    return [row[0] for row in rows[1:] if row]


def complete_lines(path: Path) -> str:
    """The file without a last line torn by a crash (it is dropped from the file too)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    return data[:end].decode("utf-8")


@contextmanager
def writer(path: Path, fmt: str, append: bool) -> Iterator[Callable[[Result], None]]:
    """A function that writes one result; appending keeps what the file holds."""
    fresh = not append or not path.exists() or path.stat().st_size == 0
    with path.open("w" if not append else "a", newline="" if fmt == "csv" else None, encoding="utf-8") as f:
        rows = csv.writer(f)
        if fmt == "csv" and fresh:
            rows.writerow(COLUMNS)

        def write(result: Result) -> None:
            if fmt == "csv":
                rows.writerow(csv_row(result))
            else:
                f.write(json_line(result) + "\n")
            f.flush()

        yield write
