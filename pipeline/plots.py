"""Maps and charts for the report (matplotlib, Agg): one PNG each, written atomically by report.py.

Maps are drawn in the landscape grid's CRS (equal-area, metres), so the scale bar is exact at the centre;
the north arrow points to grid north, which on the grid's azimuthal projection centred on the landscape is
true north at the centre.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from pipeline.config import LegendConfig  # noqa: E402

BASE_COLOURS = {"outside": "#ffffff00", "natural": "#b9d8a6", "water": "#a6cee3", "other": "#efe3c8",
                "mining": "#e7a08b", "unmapped": "#d9d9d9"}
BASE_ORDER = ("outside", "natural", "water", "other", "mining", "unmapped")
MAX_MAP_PX = 1400
FEATURE_COLOURS = ("#d7191c", "#fdae61", "#984ea3", "#a65628", "#f781bf", "#4d4d4d", "#ff7f00", "#e7298a")


def base_categories(codes: np.ndarray, legend: LegendConfig, outside_code: int) -> np.ndarray:
    """Raw product codes -> index into BASE_ORDER (natural, water, other land, mining, unmapped, outside)."""
    table = np.full(int(max(codes.max(initial=0), outside_code, *legend.classes)) + 1, BASE_ORDER.index("unmapped"),
                    np.uint8)
    for code, cls in legend.classes.items():
        kind = "water" if cls.water else "mining" if cls.mining else "natural" if cls.natural else "other"
        table[code] = BASE_ORDER.index(kind)
    table[outside_code] = BASE_ORDER.index("outside")
    return table[codes]


def read_overview(path: Path, max_px: int = MAX_MAP_PX) -> tuple[np.ndarray, tuple[float, float, float, float], int]:
    """A land-cover COG read at display size (its mode overviews; nearest otherwise): codes, extent, nodata."""
    with rasterio.open(path) as src:
        factor = max(1, math.ceil(max(src.width, src.height) / max_px))
        shape = (max(1, src.height // factor), max(1, src.width // factor))
        codes = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        b = src.bounds
        return codes, (b.left, b.right, b.bottom, b.top), int(src.nodata)


def scale_bar(ax, *, fraction: float = 0.25) -> None:
    """A scale bar of a round length (m/km) about ``fraction`` of the map width, bottom left."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    target = (x1 - x0) * fraction
    length = max(n * 10**e for e in range(0, 8) for n in (1, 2, 5) if n * 10**e <= target)
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    height = (y1 - y0) * 0.012
    left, bottom = x0 + (x1 - x0) * 0.05, y0 + (y1 - y0) * 0.05
    for i in range(2):
        ax.add_patch(Rectangle((left + i * length / 2, bottom), length / 2, height, facecolor="k" if i == 0 else "w",
                               edgecolor="k", linewidth=0.8, zorder=10))
    ax.text(left + length / 2, bottom + height * 1.8, label, ha="center", va="bottom", fontsize=8, zorder=10)


def north_arrow(ax) -> None:
    ax.annotate("N", xy=(0.94, 0.94), xytext=(0.94, 0.82), xycoords="axes fraction", ha="center", va="center",
                fontsize=10, fontweight="bold", arrowprops={"arrowstyle": "-|>", "color": "k", "linewidth": 1.5},
                zorder=10)


def landscape_map(path: Path, *, landcover: Path | None, legend: LegendConfig, zones: gpd.GeoDataFrame,
                  features: gpd.GeoDataFrame | None, feature_column: str | None, feature_label: str,
                  title: str, lines: gpd.GeoDataFrame | None = None, lines_label: str = "rivers",
                  bins: list[float] | None = None) -> Path:
    """Land cover (natural / water / other / mining), zone outlines, a feature layer coloured by a column
    (categories, or ``bins`` of a numeric column), optional lines; legend, scale bar, north arrow. Writes ``path``."""
    fig, ax = plt.subplots(figsize=(10, 7.2), dpi=130)
    handles = []
    if landcover is not None:  # runs without land cover (mining from polygons only) draw on white
        codes, extent, nodata = read_overview(landcover)
        cats = base_categories(codes, legend, nodata)
        ax.imshow(cats, extent=extent, cmap=ListedColormap([BASE_COLOURS[k] for k in BASE_ORDER]), vmin=0,
                  vmax=len(BASE_ORDER) - 1, interpolation="nearest")
        handles = [Patch(facecolor=BASE_COLOURS[k], edgecolor="0.6", label=f"{k} land" if k in ("natural", "other") else k)
                   for k in ("natural", "water", "other", "mining") if (cats == BASE_ORDER.index(k)).any()]
    else:
        left, bottom, right, top = zones.total_bounds
        extent = (left, right, bottom, top)
    others = zones[zones["zone_layer"] != "landscape"]
    for i, (layer, part) in enumerate(others.groupby("zone_layer", sort=False)):
        colour = ("0.35", "#7b3294", "#1b7837")[i % 3]
        part.boundary.plot(ax=ax, color=colour, linewidth=0.5, linestyle="--", zorder=4)
        handles.append(plt.Line2D([], [], color=colour, linestyle="--", linewidth=0.8, label=f"zones: {layer}"))
    zones[zones["zone_layer"] == "landscape"].boundary.plot(ax=ax, color="k", linewidth=1.2, zorder=5)
    handles.append(plt.Line2D([], [], color="k", linewidth=1.2, label="landscape boundary"))
    if lines is not None and not lines.empty:
        lines.plot(ax=ax, color="#4393c3", linewidth=0.6, zorder=6)
        handles.append(plt.Line2D([], [], color="#4393c3", linewidth=1, label=lines_label))
    if features is not None and not features.empty:
        values = features[feature_column]
        if bins is not None:
            labels = [f"{a:g}-{b:g}" if np.isfinite(b) else f">= {a:g}" for a, b in zip(bins, bins[1:], strict=False)]
            values = pd.cut(values, bins, labels=labels, right=False).astype(str)
            order = [label for label in labels if (values == label).any()]
            colours = plt.get_cmap("RdYlGn")(np.linspace(0.05, 0.75, len(labels)))  # small = red, large = pale green
            colours = {label: colours[labels.index(label)] for label in order}
        else:
            values = values.astype(str)
            order = sorted(values.unique())
            colours = {v: FEATURE_COLOURS[i % len(FEATURE_COLOURS)] for i, v in enumerate(order)}
        for value in order:
            features[values == value].plot(ax=ax, color=colours[value], edgecolor=colours[value], linewidth=0.3, zorder=7)
            handles.append(Patch(facecolor=colours[value], label=f"{feature_label}: {value}"))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(title, fontsize=11)
    scale_bar(ax)
    north_arrow(ax)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9)
    return _save(fig, path)


def line_chart(path: Path, series: dict[str, pd.DataFrame], *, title: str, ylabel: str) -> Path:
    """One line per series (columns x, value and optionally value_lo/value_hi drawn as a band)."""
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=130)
    for label, frame in series.items():
        frame = frame.sort_values("x")
        (line,) = ax.plot(frame["x"], frame["value"], marker="o", label=label)
        if {"value_lo", "value_hi"} <= set(frame.columns) and frame["value_lo"].notna().any():
            ax.fill_between(frame["x"], frame["value_lo"], frame["value_hi"], color=line.get_color(), alpha=0.15,
                            linewidth=0)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def bar_chart(path: Path, table: pd.DataFrame, *, title: str, ylabel: str) -> Path:
    """Grouped bars: index = categories on the x axis (e.g. periods), one column a group (e.g. rules)."""
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=130)
    width = 0.8 / max(1, len(table.columns))
    x = np.arange(len(table.index))
    for i, column in enumerate(table.columns):
        ax.bar(x + i * width - 0.4 + width / 2, table[column].to_numpy(float), width, label=str(column))
    ax.set_xticks(x, [str(i) for i in table.index], fontsize=8)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    if len(table.columns) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight")  # keeps a legend placed outside the axes
    plt.close(fig)
    return path
