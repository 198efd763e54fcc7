"""ml/notebooks/training.ipynb: it runs from the repository's own reports and each section shows what it
promises, with the figures of the files it reads."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from common.model_card import load_card
from common.settings import REPO, Settings
from harness import DATA

NOTEBOOK = REPO / "ml" / "notebooks" / "training.ipynb"
REPORTS = REPO / "ml" / "reports"
MAX_BYTES = 3 * 1024 * 1024  # the saved notebook travels with every clone
IMAGES = ("image/png", "image/jpeg")


def by_section(notebook) -> dict[str, list[dict]]:
    """The code cells' outputs under each "## " heading, keyed by the heading's text."""
    sections: dict[str, list[dict]] = {}
    current = None
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            current = cell.source.splitlines()[0].removeprefix("## ")
            sections[current] = []
        elif cell.cell_type == "code" and current:
            sections[current] += cell.outputs
    return sections


def has_image(outputs: list[dict]) -> bool:
    return any(mime in output.get("data", {}) for output in outputs for mime in IMAGES)


def text(outputs: list[dict]) -> str:
    return "\n".join(output.get("data", {}).get("text/markdown", "") + output.get("text", "") for output in outputs)


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, list[dict]]:
    """A fresh run of a copy with its saved outputs cleared, so everything checked comes from this run."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with pytest.MonkeyPatch.context() as env:  # the kernel inherits this process's environment
        env.setenv("SPORTS100_DATA", str(DATA))
        env.setenv("WILD_DEV_DATA", str(DATA.parent / "wild-dev"))
        # Raises on the first cell that fails; cwd is the notebook's folder, as when Jupyter opens it.
        NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    copy = tmp_path_factory.mktemp("notebook") / NOTEBOOK.name
    nbformat.write(notebook, copy)
    assert copy.stat().st_size < MAX_BYTES
    return by_section(nbformat.read(copy, as_version=4))


def section(executed: dict, title_start: str) -> list[dict]:
    return next(outputs for title, outputs in executed.items() if title.startswith(title_start))


def test_saved_notebook_is_executed_and_small():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code")
    assert NOTEBOOK.stat().st_size < MAX_BYTES


def test_every_section_shows_a_picture(executed):
    assert len(executed) == 7
    assert [title for title, outputs in executed.items() if not has_image(outputs)] == []


def test_architecture_table_counts_frozen_and_trained_blocks(executed):
    from ml.train import Config

    shown = text(section(executed, "3."))
    frozen = Config().frozen_blocks
    assert f"| block {frozen - 1} |" in shown and f"| block {frozen} |" in shown
    cells = [line.split("|") for line in shown.splitlines() if line.startswith("| block ")]
    rows = {cell[1].strip(): cell[-2].strip() for cell in cells}  # block name -> frozen or trainable
    assert [rows[f"block {i}"] for i in range(frozen + 1)] == ["frozen"] * frozen + ["trainable"]


def test_curves_section_says_which_epochs_ran_at_which_size(executed):
    history = json.loads((REPORTS / "training-history.json").read_text())["history"]
    shown = text(section(executed, "4."))
    for size in {epoch["size"] for epoch in history}:
        epochs = ", ".join(str(e["epoch"]) for e in history if e["size"] == size)
        assert f"| {size} px | {epochs} |" in shown


def test_wild_dev_table_has_each_measured_class_with_its_report_figures(executed):
    report = json.loads((REPORTS / "wild-dev" / "report.json").read_text())
    shown = text(section(executed, "6."))
    measured = {name: m for name, m in report["per_class"].items() if m["support"]}
    assert measured
    for name, m in measured.items():
        assert f"| {name} | {m['support']} | {m['recall']:.0%} | {m['top3']:.0%} |" in shown


def test_confidence_section_reads_the_served_models_card(executed):
    calibration = load_card(Path(Settings.from_env().model_path).with_suffix(".json"))["calibration"]
    shown = text(section(executed, "7."))
    assert f"confident threshold **{calibration['confident_threshold']}**" in shown
