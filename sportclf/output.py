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

from sportclf.files import same_file_key
from sportclf.results import Result

FORMATS = ("csv", "jsonl")
COLUMNS = ["file", "status", "top1", "p1", "top2", "p2", "top3", "p3", "confident", "error"]


class OutputError(Exception):
    """An output that cannot be written, or resumed; the message says why."""


def csv_row(result: Result) -> list[str]:
    top3 = [value for p in result.top3 for value in (p.display_name, f"{p.confidence:.4f}")]
    error = result.error.message if result.error else ""
    confident = {True: "yes", False: "no"}.get(result.confident, "")
    return [str(result.path), result.status, *top3, *[""] * (6 - len(top3)), confident, error]


def json_line(result: Result) -> str:
    return json.dumps({
        "file": str(result.path), "status": result.status,
        "top3": [{"label": p.label, "display_name": p.display_name, "confidence": round(p.confidence, 4)}
                 for p in result.top3],
        "confident": result.confident,
        "error": {"code": result.error.code, "message": result.error.message} if result.error else None,
    }, ensure_ascii=False)


def prepare_resume(path: Path, fmt: str) -> set[str]:
    """The files an earlier run's output lists (as same_file_key), none if there is no output yet.
    A last line torn by a crash is no result: it is cut off, so that appended lines start clean."""
    if not path.exists():
        return set()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    complete = data[:data.rfind(b"\n") + 1]
    try:
        names = listed_files(complete.decode("utf-8"), fmt)
    except (ValueError, KeyError, TypeError):
        raise OutputError(f"{path} is not {fmt.upper()} output of sportclf; choose another --out or --format") from None
    if len(complete) < len(data):
        with path.open("r+b") as f:
            f.truncate(len(complete))
    return {same_file_key(name) for name in names}


def listed_files(text: str, fmt: str) -> list[str]:
    if fmt == "jsonl":
        return [json.loads(line)["file"] for line in text.splitlines() if line]
    header, *rows = list(csv.reader(io.StringIO(text))) or [COLUMNS]
    if header != COLUMNS:
        raise ValueError(f"a CSV header other than {COLUMNS}")
    return [row[0] for row in rows if row]


@contextmanager
def writer(path: Path, fmt: str, append: bool) -> Iterator[Callable[[Result], None]]:
    """A function that writes one result; appending keeps what the file holds."""
    fresh = not append or not path.exists() or path.stat().st_size == 0
    try:
        f = path.open("a" if append else "w", newline="" if fmt == "csv" else None, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    with f:
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
