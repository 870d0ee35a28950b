"""notebooks/explore_outputs.ipynb runs without errors against a run made here (RUN_DIR), its independently
reproduced natural extent equals conversion.csv, and the committed copy carries no outputs."""

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from pipeline.runner import run

pytestmark = pytest.mark.xdist_group("notebook")  # one worker builds the module's runs (make test: --dist loadgroup)
NOTEBOOK = Path("notebooks/explore_outputs.ipynb")
MINI = Path("tests/data/mini/mini.yaml")
REPRODUCED = re.compile(r"REPRODUCED natural_extent_ha (\d{4}): recomputed ([\d.]+) ha, conversion.csv ([\d.]+) ha")


@pytest.fixture(scope="module")
def mini_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("notebook") / "mini"
    run(MINI, out_dir=out)
    return out


def test_notebook_runs_and_reproduces_the_headline(mini_out, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(mini_out))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # from notebooks/, as an analyst would open it: the notebook finds the project root itself
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"run: {mini_out}" in text
    match = REPRODUCED.search(text)
    assert match, text
    year, recomputed, reported = int(match[1]), float(match[2]), float(match[3])

    table = pd.read_csv(mini_out / "conversion.csv", encoding="utf-8-sig")
    row = table[(table["zone_layer"] == "landscape") & (table["metric"] == "natural_extent_ha")
                & (table["ecosystem"] == "all_natural") & (table["year"] == 2022)]
    assert year == 2022
    assert recomputed == pytest.approx(row["value"].item(), abs=1e-6)
    assert reported == pytest.approx(row["value"].item(), abs=1e-6)
    assert sum(o.output_type == "display_data" and "image/png" in o.data for o in outputs) == 2  # map and trend
    assert "better" in text or "worse" in text  # the trends.csv direction counts


def test_committed_notebook_has_no_outputs():
    """Outputs are stripped in git: clear them (e.g. `jupyter nbconvert --clear-output --inplace`) before committing."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.source[:80]
        assert cell.execution_count is None, cell.source[:80]
