"""The assessment report of the default landscape: every indicator's section, map and chart, and numbers in the
HTML that match the run's CSVs and a count made here from the aligned land cover."""

import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from pipeline.report import build_report

LOURENCO = Path("configs/landscapes/lourenco.yaml")
INDICATORS = ("conversion", "connectivity", "degradation", "mining")


@pytest.fixture(scope="module")
def report(lourenco_run):
    _, out = lourenco_run
    path = build_report(LOURENCO, run_dir=out)
    return path, path.read_text(encoding="utf-8"), out


@pytest.mark.xdist_group("lourenco")
def test_report_files(report):
    path, _, out = report
    assert path == out / "report" / "report.html"
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == sorted(["report.html", "report.md", *[f"{i}_{k}.png" for i in INDICATORS for k in ("map", "chart")]])
    for name in names:
        if name.endswith(".png"):
            image = matplotlib.image.imread(path.parent / name)
            assert image.shape[0] > 300 and image.shape[1] > 500, name
            assert image[..., :3].std() > 0.05, f"{name} is blank"
    assert not list(out.glob(".report.staging-*"))


@pytest.mark.xdist_group("lourenco")
def test_report_sections_and_numbers(report):
    _, text, out = report
    for indicator in INDICATORS:
        section = re.search(f'<section id="{indicator}">(.*?)</section>', text, re.S)
        assert section, indicator
        assert f'src="{indicator}_map.png"' in section.group(1) and f'src="{indicator}_chart.png"' in section.group(1)
        assert "Method and limitations" in section.group(1) and "Limitations:" in section.group(1)

    # natural extent 2022 counted here from the aligned raster and the legend's natural flags
    legend = yaml.safe_load(Path("configs/legends/mapbiomas_c8.yaml").read_text(encoding="utf-8"))
    natural_codes = [int(code) for code, cls in legend["classes"].items() if cls.get("natural")]
    with rasterio.open(out / "landcover_2022.tif") as src:
        pixel_ha = abs(src.transform.a * src.transform.e) / 10_000
        natural_ha = np.isin(src.read(1), natural_codes).sum() * pixel_ha
    conversion = pd.read_csv(out / "conversion.csv", encoding="utf-8-sig")
    row = conversion[(conversion.metric == "natural_extent_ha") & (conversion.zone_layer == "landscape")
                     & (conversion.ecosystem == "all_natural") & (conversion.year == 2022)]
    assert row["value"].iloc[0] == pytest.approx(natural_ha, abs=1e-6)
    assert f"<td>Natural extent 2022</td><td>{natural_ha:,.1f}</td><td>ha</td><td>worse</td>" in text

    mining = pd.read_csv(out / "mining.csv", encoding="utf-8-sig")
    landscape = mining[(mining.zone_layer == "landscape") & mining.ecosystem.isna()]
    mining_2022 = landscape[(landscape.metric == "mining_ha") & (landscape.year == 2022)].iloc[0]
    assert f"<td>Mining footprint 2022</td><td>{mining_2022.value:,.1f} ({mining_2022.value_lo:,.1f} to " \
           f"{mining_2022.value_hi:,.1f})</td>" in text
    assert mining_2022.value == pytest.approx(1812.51)  # the figure quoted in the README and the closing note

    # sources, licences and the stable band are stated
    for needle in ("CC-BY-SA 4.0", "Earth Genome / Amazon Mining Watch", "ANM - Agência Nacional de Mineração",
                   "0.5 % of the earlier value"):
        assert needle in text, needle
    markdown = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert markdown.count("![") == 8 and "## Alluvial mining footprint" in markdown


def test_report_without_a_run_is_one_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline", "report", "lourenco", "--run-dir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "no run to report on" in result.stderr and "make landscape=lourenco" in result.stderr
    assert "Traceback" not in result.stderr
