"""Auxiliary vector layers (rivers, yearly mining polygons, mining and surface rights) read once and put on
the grid CRS, so indicators get geometries and never open files."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from pipeline.config import LandscapeConfig, ZoneLayerConfig
from pipeline.errors import SourceError
from pipeline.sources.local import read_vector

RIVER_MARGIN_M = 50_000  # rivers this far beyond the boundary still count for site-to-river distances


def parse_year(value: object) -> int:
    """2019, "2019", 201900 or 202503 (AMW's YYYYxx layers) -> 2019 / 2025."""
    digits = str(value).strip()
    if not digits[:4].isdigit():
        raise ValueError(value)
    return int(digits[:4])


def load_layers(config: LandscapeConfig, resolve, grid_crs: CRS, boundary: shapely.Geometry) -> tuple[dict, list]:
    """{"rivers": ..., "mining:<name>": ..., "mining_rights": ..., "surface_rights": ...} in the grid CRS, and
    the (role, path) of every file read (for the manifest)."""
    layers: dict[str, gpd.GeoDataFrame] = {}
    inputs: list[tuple[str, Path]] = []
    if config.rivers is not None:
        path = resolve(config.rivers.path)
        rivers = read_vector(path, layer=config.rivers.layer, what="rivers").to_crs(grid_crs)
        # within the margin, exactly (shapely.dwithin; a buffer of a 4,000-vertex boundary took 2 s)
        rivers = rivers[shapely.dwithin(rivers.geometry.to_numpy(), boundary, RIVER_MARGIN_M)]
        layers["rivers"] = rivers[["geometry"]].reset_index(drop=True)
        inputs.append(("rivers", path))
    for i, layer_cfg in enumerate(config.mining_layers):
        path = resolve(layer_cfg.path)
        what = f"mining_layers[{i}]"
        frame = read_vector(path, layer=layer_cfg.layer, what=what)
        if layer_cfg.year_field not in frame.columns:
            raise SourceError(f"{path}: {what}.year_field {layer_cfg.year_field!r} is not a field of the layer; "
                              f"fields: {', '.join(c for c in frame.columns if c != 'geometry')}")
        try:
            years = frame[layer_cfg.year_field].map(parse_year)
        except ValueError as exc:
            raise SourceError(f"{path}: {what}.year_field {layer_cfg.year_field!r} holds {exc.args[0]!r}, not a year") from None
        columns = {"year": years.astype(int).to_numpy()}
        if layer_cfg.area_field is not None:
            if layer_cfg.area_field not in frame.columns:
                raise SourceError(f"{path}: {what}.area_field {layer_cfg.area_field!r} is not a field of the layer")
            columns["mined_area_ha"] = frame[layer_cfg.area_field].astype(float).to_numpy()
        frame = gpd.GeoDataFrame(columns, geometry=frame.geometry.to_numpy(), crs=frame.crs)
        frame = frame.to_crs(grid_crs)
        frame["geometry"] = shapely.make_valid(frame.geometry.to_numpy())
        layers[f"mining:{layer_cfg.name}"] = frame[frame.intersects(boundary)].reset_index(drop=True)
        inputs.append((f"mining_layers.{layer_cfg.name}", path))
    mining = config.indicators.mining
    for key in ("mining_rights", "surface_rights"):
        cfg: ZoneLayerConfig | None = getattr(mining, key, None) if mining else None
        if cfg is None:
            continue
        path = resolve(cfg.path)
        frame = read_vector(path, layer=cfg.layer, where=cfg.where, what=f"indicators.mining.{key}").to_crs(grid_crs)
        frame["geometry"] = shapely.make_valid(frame.geometry.to_numpy())
        frame = frame[frame.intersects(boundary)]
        ids = frame[cfg.id_field].astype(str) if cfg.id_field in frame.columns else np.arange(len(frame)).astype(str)
        layers[key] = gpd.GeoDataFrame({"id": ids.to_numpy()}, geometry=frame.geometry.to_numpy(), crs=grid_crs)
        inputs.append((f"indicators.mining.{key}", path))
    return layers, inputs
