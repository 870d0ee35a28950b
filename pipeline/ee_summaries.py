"""Engine-side summaries for landscapes too large to download: per-zone areas of every (class in ya, class in yb)
pair computed by Earth Engine (reduceRegions with pixel areas), and the natural extent and conversion derived
from them, written as a tidy CSV. Nothing but the numbers leaves Earth Engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer

from pipeline.config import LandcoverFetchConfig, LandscapeConfig, load_landscape, load_legend, project_root
from pipeline.errors import ConfigError
from pipeline.fetch import _resolve, fetch_layers, landscape_grid
from pipeline.grid import LandscapeGrid
from pipeline.sources import earthengine as gee
from pipeline.sources import local

SUMMARY_FILE = "landcover_summaries_ee.csv"


def summaries(config_path: Path, *, out: Path | None = None, env: Mapping[str, str] | None = None,
              initialize: bool = True, sleep: Callable[[float], object] = time.sleep) -> Path:
    """Per-zone class-transition areas computed on Earth Engine for every period, and the natural extent and
    conversion derived from them; written as a tidy CSV (default data/processed/<name>/landcover_summaries_ee.csv).

    Nothing is downloaded but the numbers, so this works for landscapes too large to fetch."""
    from pipeline.indicators.base import tidy
    from pipeline.outputs import write_csv

    config = load_landscape(config_path)
    root = project_root(config_path)
    layer = next((lay for lay in fetch_layers(config, root, config_path) if lay.role == "landcover"), None)
    if layer is None:
        raise ConfigError(f"{config_path}: --summaries-only needs landcover.source: earthengine")
    fetch_cfg = config.landcover.fetch or LandcoverFetchConfig()
    grid, boundary = landscape_grid(config, config_path, root, layer.product)
    zones = summary_zones(config, root, boundary, grid)
    if initialize:
        gee.initialize(fetch_cfg.project, env=env)
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    region = shapely.transform(boundary.buffer(2 * grid.resolution_m).simplify(grid.resolution_m),
                               lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    ee_region = gee.region_geometry(region)
    collection = gee.zone_features(zones)
    legend = load_legend(layer.legend_path)
    code_base = 256 if layer.product.dtype == "uint8" else 65536
    rows: list[dict] = []
    extents: dict[tuple, float] = {}
    for ya, yb in config.periods():
        images = [gee.product_image(layer.product, y, region=ee_region, resolution_m=grid.resolution_m,
                                    canopy_threshold_pct=fetch_cfg.canopy_threshold_pct) for y in (ya, yb)]
        request = gee.transition_areas(*images, collection, crs=grid.crs, transform=grid.transform, code_base=code_base)
        features = gee.with_retries(lambda request=request: gee.compute_features(request), sleep=sleep,
                                    max_retries=fetch_cfg.max_retries, what=f"{layer.name} areas {ya}-{yb}")
        period_rows, period_extents = summary_rows(gee.parse_transitions(features, code_base=code_base), legend,
                                                   ya, yb, source=f"{layer.product.product} ({layer.product_path})",
                                                   legend_path=layer.legend_path)
        rows += period_rows
        extents.update(period_extents)
    rows += [{"metric": "natural_extent_ha", "unit": "ha", "zone_layer": zl, "zone": z, "ecosystem": eco, "year": y,
              "value": v} for (zl, z, eco, y), v in sorted(extents.items())]
    target = out or root / "data" / "processed" / config.name / SUMMARY_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    write_csv(tidy(rows, landscape=config.name, indicator="landcover_ee"), part)
    os.replace(part, target)
    return target


def summary_zones(config: LandscapeConfig, root: Path, boundary: shapely.Geometry, grid: LandscapeGrid
                  ) -> list[tuple[str, str, shapely.Geometry]]:
    """(zone_layer, zone, lon/lat geometry): the landscape and every zone of the config's zone layers, cut to the
    boundary, simplified by a quarter pixel (so requests stay small; sub-pixel, so counts barely move)."""
    from pipeline.zones import LANDSCAPE

    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)

    def lonlat(geom: shapely.Geometry) -> shapely.Geometry:
        geom = geom.simplify(grid.resolution_m / 4)
        return shapely.transform(geom, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))

    zones = [(LANDSCAPE, config.name, lonlat(boundary))]
    for name, zone_cfg in config.zones.items():
        frame = local.read_vector(_resolve(root, zone_cfg.path), layer=zone_cfg.layer, where=zone_cfg.where,
                                  what=f"zones.{name}").to_crs(grid.crs.to_wkt())
        for zone, group in frame.groupby(zone_cfg.id_field):
            geom = shapely.union_all(group.geometry.to_numpy()).intersection(boundary)
            if not geom.is_empty:
                zones.append((name, str(zone), lonlat(geom)))
    return zones


def summary_rows(transitions: list[tuple[str, str, int, int, float]], legend, ya: int, yb: int, *, source: str,
                 legend_path: Path) -> tuple[list[dict], dict[tuple, float]]:
    """Tidy rows of one period from (zone_layer, zone, code_from, code_to, area_ha): ``transition_ha`` per class
    pair, ``converted_ha`` (natural in ya, a non-natural class in yb) per ecosystem of ya and all_natural; and the
    natural extent per (zone_layer, zone, ecosystem, year). Pure."""
    from pipeline.errors import LegendError
    from pipeline.indicators.base import ALL_NATURAL

    classes, nodata = legend.classes, set(legend.nodata)
    unknown = sorted({c for _, _, a, b, _ in transitions for c in (a, b) if c not in classes and c not in nodata})
    if unknown:
        raise LegendError(f"codes {unknown} occur in {source} but not in {legend_path}; add them or map them to nodata")
    rows, converted, extents = [], {}, {}
    for zone_layer, zone, a, b, area in transitions:
        name_a = classes[a].name if a in classes else "unmapped"
        name_b = classes[b].name if b in classes else "unmapped"
        rows.append({"metric": "transition_ha", "unit": "ha", "zone_layer": zone_layer, "zone": zone,
                     "class_from": name_a, "class_to": name_b, "year_from": ya, "year_to": yb, "value": area})
        for code, year in ((a, ya), (b, yb)):
            if code in classes and classes[code].natural:
                for eco in (classes[code].ecosystem, ALL_NATURAL):
                    extents[(zone_layer, zone, eco, year)] = extents.get((zone_layer, zone, eco, year), 0.0) + area
        if a in classes and classes[a].natural and b in classes and not classes[b].natural:
            for eco in (classes[a].ecosystem, ALL_NATURAL):
                converted[(zone_layer, zone, eco)] = converted.get((zone_layer, zone, eco), 0.0) + area
    rows += [{"metric": "converted_ha", "unit": "ha", "zone_layer": zl, "zone": z, "ecosystem": eco, "year_from": ya,
              "year_to": yb, "value": v} for (zl, z, eco), v in sorted(converted.items())]
    return rows, extents
