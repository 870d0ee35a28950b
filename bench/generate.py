"""Synthetic, realistic land-cover rasters for the benchmarks, generated once and cached in data/bench/.

A landscape is two years of MapBiomas Amazonia codes (configs/legends/mapbiomas_amazonia.yaml) on a 10 m grid in
EPSG:6933 (equal-area), written as tiled (512 px) DEFLATE uint8 GeoTIFFs, plus the river centre-lines (and, from
``landscape_inputs``, a boundary, a zone layer and the configs that make it a landscape ``pipeline.runner`` runs):

- natural: forest (~70 %), savanna (~8 %), wetland (~4 %, along rivers), water (meandering rivers with
  tributaries and creeks, and oxbow-like lakes near them);
- non-natural (~17 %): pasture, cropland and urban land in fishbone clearings along roads, and mining: chains
  of pits along rivers, clustered in districts (~1 %);
- between the years (~3 % of pixels change): clearing fronts grow and new clearings open, some pasture
  regrows, mining sites lengthen and new ones open, and 0.1 % of pixels per year are classification speckle.

How: large-scale fields (320 m cells: distance to roads and rivers, smoothed gaussian noise) and boundary
detail (40 m cells: smoothed gaussian noise) are held whole at their coarse resolution, a few MB to a few
hundred MB; pixels are made in strips of 256 rows, each field interpolated bilinearly to 10 m (continuous
fields, so class boundaries are smooth curves, not blocks), plus per-pixel noise, then thresholded into
classes; rivers and mining pits are vector shapes rasterised per strip. Thresholds are calibrated on a
sample of rows so that class shares hit the targets at any size. Feature sizes are fixed in metres, so the
sizes differ in extent, not in texture: cost per pixel is comparable across sizes.

Every random draw comes from a fixed seed (pixel noise per 256-row block), so a landscape is identical
whatever the strip height, and the cache key is a hash of the parameters and GENERATOR_VERSION.
Memory: the coarse fields (3 x rows x cols / 16 float32 bytes at 40 m) plus ~20 float32 strip arrays;
about 0.5 GB at 144 Mpx.

    python -m bench.generate 16 144      # make (or find) the 16 and 144 Mpx landscapes and their landscape YAMLs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
import yaml
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity

from bench.vectors import Vectors, boundary_polygon, district_polygons, make_vectors

GENERATOR_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "data" / "bench"
LEGEND = "mapbiomas_amazonia"  # configs/legends/<LEGEND>.yaml describes every code below
CODES = {"forest": 3, "savanna": 4, "wetland": 11, "pasture": 15, "cropland": 18, "urban": 24, "mining": 30, "water": 33}
COLOURS = {3: "#1f8d49", 4: "#7dc975", 11: "#519799", 15: "#edde8e", 18: "#e974ed", 24: "#d4271e", 30: "#9c0027",
           33: "#2532e4"}
NODATA = 0  # never written inside the landscape; the GeoTIFF's nodata value
SIZES = {"16": 4000, "36": 6000, "144": 12000, "576": 24000}  # label (Mpx) -> side (px) of a square landscape

COARSE = 32  # px per cell of the large-scale fields (320 m at 10 m)
NEAR = 8  # px per cell of the distances to roads and rivers (80 m)
MEDIUM = 4  # px per cell of the boundary-detail fields (40 m)
NOISE_ROWS = 256  # per-pixel noise is drawn per block of this many rows (strip-independent)
STRIP_ROWS = 256  # rows made and written at once (a multiple of NOISE_ROWS; memory ~ 25 float32 strips)
TILE = 512

# first-year shares of the landscape (targets; meta.json records the actual shares)
NON_NATURAL, SAVANNA, WETLAND, LAKE, MINING = 0.17, 0.08, 0.04, 0.006, 0.01
URBAN_OF_NON_NATURAL, CROP_OF_NON_NATURAL = 0.03, 0.25
# change to the second year (shares of the landscape unless named otherwise)
NEW_CLEARING, REGROWTH_OF_NON_NATURAL, SPECKLE = 0.024, 0.02, 0.003
# weights of the boundary-detail and per-pixel noise in the class scores (noise fields have unit variance)
DETAIL, PIXEL, FINE = 0.18, 0.03, 0.6


@dataclass(frozen=True)
class Params:
    """Everything that determines a landscape; its hash names the cache directory."""

    rows: int
    cols: int
    seed: int = 20240901
    res_m: float = 10.0
    years: tuple[int, int] = (2020, 2024)
    crs: str = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global, cylindrical equal-area
    origin: tuple[float, float] = (-5_560_000.0, 330_000.0)  # top-left corner: about 57.6 W, 2.6 N (Guiana Shield)
    version: int = GENERATOR_VERSION

    @classmethod
    def of_size(cls, label: str, **kw) -> Params:
        """The square landscape of SIZES[label] px a side."""
        side = SIZES[label]
        return cls(rows=side, cols=side, **kw)

    @property
    def key(self) -> str:
        digest = hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.rows}x{self.cols}_s{self.seed}_{digest}"

    @property
    def transform(self) -> Affine:
        return Affine(self.res_m, 0, self.origin[0], 0, -self.res_m, self.origin[1])

    @property
    def mpx(self) -> float:
        return self.rows * self.cols / 1e6


@dataclass(frozen=True)
class Dataset:
    """A generated landscape on disk."""

    params: Params
    directory: Path

    @classmethod
    def open(cls, directory: Path) -> Dataset:
        """A generated landscape from its directory (parameters from its meta.json)."""
        raw = json.loads((Path(directory) / "meta.json").read_text())["params"]
        return cls(Params(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}), Path(directory))

    def path(self, year: int) -> Path:
        return self.directory / f"landcover_{year}.tif"

    @property
    def paths(self) -> dict[int, Path]:
        return {y: self.path(y) for y in self.params.years}

    @property
    def rivers(self) -> Path:
        return self.directory / "rivers.gpkg"

    @property
    def meta(self) -> dict:
        return json.loads((self.directory / "meta.json").read_text())

    @property
    def config_path(self) -> Path:
        """The landscape YAML written by ``landscape_inputs`` (the runner's input)."""
        return self.directory / "configs" / "landscapes" / f"{LANDSCAPE_NAME}.yaml"


def ensure(params: Params, *, out_dir: Path = BENCH_DIR, log: Callable[[str], object] = print) -> Dataset:
    """The landscape of ``params``: from the cache, or generated now (into a temporary directory, renamed
    into place when complete, so an interrupted run leaves no half-written landscape)."""
    final = out_dir / params.key
    if (final / "meta.json").exists():
        return Dataset(params, final)
    for stale in out_dir.glob(f".{params.key}.tmp*"):  # left by a killed run (its process is gone)
        if not Path(f"/proc/{stale.name.rsplit('.tmp', 1)[1]}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir / f".{params.key}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"generating {params.rows} x {params.cols} px ({params.mpx:.0f} Mpx, 2 years) -> {final}")
    try:
        _generate(params, tmp, log)
        if final.exists():  # a complete copy made by a concurrent run would have meta.json; this one is stale
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Dataset(params, final)


# ---------------------------------------------------------------------------------------------- pipeline inputs
INPUTS_VERSION = 1  # of boundary.gpkg / zones.gpkg (made beside the rasters, so the raster cache key is unchanged)
LANDSCAPE_NAME = "bench"
# what the `pipeline` bench case runs: all four indicators as for lourenco (no rights layers, one dispersal distance)
INDICATORS = {
    "conversion": {"min_mapping_unit_ha": 0.5},
    "degradation": {"rules": ["transition", "condition", "edge", "small_patch", "isolation"], "edge_depth_m": 100,
                    "small_patch_ha": 5, "large_patch_ha": 100, "isolation_m": 1000},
    "connectivity": {"neighbourhood": 8, "edge_depth_m": 100, "min_patch_ha": 1, "dispersal_m": [1000]},
    "mining": {"riparian_buffer_m": 500, "affected_distance_m": 100, "min_persistence_years": 1},
}


def landscape_inputs(ds: Dataset, *, chunk_px: int = 2048, grid_crs: str = "native", workers: int = 2,
                     scheduler: str = "threads", indicators: dict | None = None) -> Path:
    """Make a generated landscape runnable by ``pipeline.runner.run``; returns the landscape YAML's path.

    Beside the rasters and rivers.gpkg: ``boundary.gpkg`` (one polygon of ~4,000 vertices covering ~60 % of its
    bounding box, bench.vectors.boundary_polygon) and ``zones.gpkg`` (layer ``districts``: 9 Voronoi districts
    tiling the extent), both drawn from the landscape's seed and cached (``inputs.json`` holds
    INPUTS_VERSION); then, written every time from the current settings, ``configs/legends/<LEGEND>.yaml``
    (a copy of the project's legend) and ``configs/landscapes/bench.yaml`` (paths relative to the landscape
    directory, which is the config's project root). Run it by hand with
    ``python -m pipeline run data/bench/<key>/configs/landscapes/bench.yaml``.
    """
    import geopandas as gpd

    p, d = ds.params, ds.directory
    stamp = d / "inputs.json"
    if not stamp.exists() or json.loads(stamp.read_text()).get("version") != INPUTS_VERSION:
        rng = np.random.default_rng([p.seed, 11])
        px_to_map = [p.res_m, 0, 0, -p.res_m, p.origin[0], p.origin[1]]
        boundary = affinity.affine_transform(boundary_polygon(p, rng), px_to_map)
        districts = [affinity.affine_transform(g, px_to_map) for g in district_polygons(p, rng)]
        for name, frame, layer in (
            ("boundary.gpkg", gpd.GeoDataFrame({"name": [f"bench {p.key}"]}, geometry=[boundary], crs=p.crs), "boundary"),
            ("zones.gpkg", gpd.GeoDataFrame({"name": [f"District {i + 1}" for i in range(len(districts))]},
                                            geometry=districts, crs=p.crs), "districts"),
        ):
            tmp = d / f".tmp{os.getpid()}.{name}"
            frame.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
            os.replace(tmp, d / name)
        frame_area = p.rows * p.cols * p.res_m**2
        stamp.write_text(json.dumps({
            "version": INPUTS_VERSION, "boundary_vertices": len(boundary.exterior.coords) - 1,
            "boundary_share_of_raster_pct": round(100 * boundary.area / frame_area, 2), "districts": len(districts)}))
    legends = d / "configs" / "legends"
    legends.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "configs" / "legends" / f"{LEGEND}.yaml", legends / f"{LEGEND}.yaml")
    config = {
        "name": LANDSCAPE_NAME,
        "title": f"Generated benchmark landscape {p.key} ({p.mpx:.0f} Mpx a year at {p.res_m:g} m)",
        "boundary": "boundary.gpkg",
        "years": list(p.years),
        "landcover": {"legend": LEGEND, "path": "landcover_{year}.tif"},
        "grid": {"crs": grid_crs, "chunk_px": chunk_px} | ({} if grid_crs == "native" else {"resolution_m": p.res_m}),
        "zones": {"districts": {"path": "zones.gpkg", "layer": "districts", "id_field": "name"}},
        "rivers": {"path": "rivers.gpkg"},
        "indicators": indicators or INDICATORS,
        "compute": {"scheduler": scheduler, "workers": workers},
    }
    ds.config_path.parent.mkdir(parents=True, exist_ok=True)
    ds.config_path.write_text("# written by bench.generate.landscape_inputs; regenerated every bench run\n"
                              + yaml.safe_dump(config, sort_keys=False))
    return ds.config_path


# ---------------------------------------------------------------------------------------------- fields
class _Grid:
    """A coarse grid of cells of ``factor`` px with one cell of margin; bilinear interpolation to pixels."""

    def __init__(self, factor: int, rows: int, cols: int):
        self.factor = factor
        self.shape = (math.ceil(rows / factor) + 3, math.ceil(cols / factor) + 3)
        xc = (np.arange(cols) + 0.5) / factor + 0.5  # pixel centre in cell units (cell centres at integers)
        self.x0 = np.floor(xc).astype(np.intp)
        self.wx = (xc - self.x0).astype(np.float32)

    def transform(self, p: Params) -> Affine:
        return p.transform * Affine.translation(-self.factor, -self.factor) * Affine.scale(self.factor)

    def at_rows(self, field: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), cols): ``field`` interpolated at every pixel of the given (ascending) rows."""
        yc = (rows + 0.5) / self.factor + 0.5
        y0 = np.floor(yc).astype(np.intp)
        wy = (yc - y0).astype(np.float32)[:, None]
        need = np.unique(np.concatenate([y0, y0 + 1]))
        sub = field[need]
        across = sub[:, self.x0] * (1 - self.wx) + sub[:, self.x0 + 1] * self.wx
        return across[np.searchsorted(need, y0)] * (1 - wy) + across[np.searchsorted(need, y0 + 1)] * wy


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma_cells: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_cells, mode="wrap")
    return (f - f.mean()) / f.std()


def _standard(f: np.ndarray) -> np.ndarray:
    return ((f - f.mean()) / f.std()).astype(np.float32)


class _Fields:
    """The landscape's continuous fields, whole at coarse resolution."""

    def __init__(self, p: Params, v: Vectors, rng: np.random.Generator):
        self.coarse, self.near, self.medium = (_Grid(f, p.rows, p.cols) for f in (COARSE, NEAR, MEDIUM))
        px_to_map = [p.res_m, 0, 0, -p.res_m, p.origin[0], p.origin[1]]

        def dist_m(lines):
            shapes = [affinity.affine_transform(g, px_to_map) for g in lines]
            mask = rasterize(shapes, out_shape=self.near.shape, transform=self.near.transform(p), all_touched=True,
                             dtype=np.uint8)
            return ndimage.distance_transform_edt(mask == 0).astype(np.float32) * (NEAR * p.res_m)

        self.d_road = dist_m(v.roads)
        self.d_river = dist_m([line for line, _, _ in v.rivers])
        cs, cell = self.coarse.shape, COARSE * p.res_m
        self.pressure = _noise(rng, cs, 1500 / cell)
        self.savanna = _noise(rng, cs, 4000 / cell)
        self.wet = _noise(rng, cs, 800 / cell)
        self.crop = _noise(rng, cs, 1200 / cell)
        self.new_clearing = _noise(rng, cs, 800 / cell)
        self.regrowth = _noise(rng, cs, 500 / cell)
        ms, cell = self.medium.shape, MEDIUM * p.res_m
        # boundary detail: 80 m undulations plus 30 m texture (small islands and gaps near boundaries)
        self.detail = _standard(0.8 * _noise(rng, ms, 80 / cell) + FINE * _noise(rng, ms, 30 / cell))
        self.detail2 = _standard(0.8 * _noise(rng, ms, 80 / cell) + FINE * _noise(rng, ms, 30 / cell))
        self.lake = _noise(rng, ms, 150 / cell)

    def at_rows(self, rows: np.ndarray, pixel_noise: np.ndarray) -> dict[str, np.ndarray]:
        """The class scores (float32, len(rows) x cols) at the given pixel rows; a class is where its score
        exceeds its threshold (_thresholds)."""
        c, n, m = self.coarse.at_rows, self.near.at_rows, self.medium.at_rows
        e = PIXEL * pixel_noise
        detail, detail2 = DETAIL * m(self.detail, rows), DETAIL * m(self.detail2, rows)
        near_river = np.exp(n(self.d_river, rows) / -600)
        # clearing: fishbones along roads, a little along rivers, km-scale variation
        z0 = np.exp(n(self.d_road, rows) / -700) + 0.15 * near_river + 0.2 * c(self.pressure, rows) + 0.4 * (detail + e)
        return {
            "clear0": z0,
            "clear1": z0 + 0.15 * c(self.new_clearing, rows),
            "savanna": c(self.savanna, rows) + detail2 + e,
            "wetland": near_river + 0.5 * c(self.wet, rows) - detail2 + e,
            "lake": m(self.lake, rows) + 2.0 * near_river,
            "crop": c(self.crop, rows) + detail,
            "regrowth": c(self.regrowth, rows) + detail2,
        }


def _thresholds(p: Params, fields: _Fields) -> dict[str, float]:
    """Score thresholds that give the target shares, from a sample of ~2 Mpx of whole rows."""
    step = max(1, int(p.rows * p.cols / 2e6))
    rows = np.arange(step // 2, p.rows, step)
    rng = np.random.default_rng([p.seed, 99])
    s = fields.at_rows(rows, rng.standard_normal((rows.size, p.cols), dtype=np.float32))
    q = np.quantile
    nn0 = s["clear0"] > q(s["clear0"], 1 - NON_NATURAL)
    natural = ~nn0
    return {
        "clear0": float(q(s["clear0"], 1 - NON_NATURAL)),
        "urban": float(q(s["clear0"], 1 - NON_NATURAL * URBAN_OF_NON_NATURAL)),
        # new clearings: the top NEW_CLEARING of the landscape among pixels natural in year 0
        "clear1": float(q(s["clear1"][natural], 1 - NEW_CLEARING / natural.mean())),
        "savanna": float(q(s["savanna"][natural], 1 - SAVANNA / natural.mean())),
        "wetland": float(q(s["wetland"][natural], 1 - WETLAND / natural.mean())),
        "lake": float(q(s["lake"][natural], 1 - LAKE / natural.mean())),
        "crop": float(q(s["crop"][nn0], 1 - CROP_OF_NON_NATURAL)),
        "regrowth": float(q(s["regrowth"], 1 - REGROWTH_OF_NON_NATURAL)),
    }


# ---------------------------------------------------------------------------------------------- pixels
def _block_noise(p: Params, row0: int, height: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-pixel gaussian noise and one uniform draw per year for rows [row0, row0 + height), drawn per
    NOISE_ROWS block from its own seed (the same values whatever the strip height)."""
    gauss, uniform = [], [[] for _ in p.years]
    for b in range(row0 // NOISE_ROWS, math.ceil((row0 + height) / NOISE_ROWS)):
        n = min(NOISE_ROWS, p.rows - b * NOISE_ROWS)
        rng = np.random.default_rng([p.seed, 7, b])
        gauss.append(rng.standard_normal((n, p.cols), dtype=np.float32))
        for u in uniform:
            u.append(rng.random((n, p.cols), dtype=np.float32))
    lo = row0 - (row0 // NOISE_ROWS) * NOISE_ROWS
    return (np.concatenate(gauss)[lo:lo + height], [np.concatenate(u)[lo:lo + height] for u in uniform])


def _strip_codes(p: Params, fields: _Fields, th: dict[str, float], row0: int, height: int, *, rivers: np.ndarray,
                 mining: list[np.ndarray]) -> list[np.ndarray]:
    """uint8 codes of rows [row0, row0 + height) for each year."""
    e, uniforms = _block_noise(p, row0, height)
    s = fields.at_rows(np.arange(row0, row0 + height), e)
    natural = np.full((height, p.cols), CODES["forest"], np.uint8)
    natural[s["savanna"] > th["savanna"]] = CODES["savanna"]
    natural[s["wetland"] > th["wetland"]] = CODES["wetland"]
    natural[s["lake"] > th["lake"]] = CODES["water"]
    crop = s["crop"] > th["crop"]
    cleared0 = s["clear0"] > th["clear0"]
    urban0 = s["clear0"] > th["urban"]
    cleared1 = (cleared0 & ~(s["regrowth"] > th["regrowth"])) | (s["clear1"] > th["clear1"]) | urban0
    out = []
    for cleared, mine, u in zip((cleared0, cleared1), mining, uniforms, strict=True):
        codes = natural.copy()
        codes[cleared] = np.where(crop[cleared], CODES["cropland"], CODES["pasture"])
        codes[urban0] = CODES["urban"]
        codes[rivers] = CODES["water"]
        codes[mine] = CODES["mining"]
        speckle = u < SPECKLE
        choice = u[speckle] / SPECKLE  # uniform in [0, 1): which class the misclassified pixel gets
        codes[speckle] = np.select([choice < 0.45, choice < 0.75, choice < 0.9],
                                   [CODES["pasture"], CODES["forest"], CODES["savanna"]], CODES["cropland"])
        out.append(codes)
    return out


def _generate(p: Params, directory: Path, log: Callable[[str], object]) -> None:
    started = time.perf_counter()
    rng = np.random.default_rng([p.seed, 1])
    vectors = make_vectors(p, rng, mining_share=MINING)
    fields = _Fields(p, vectors, rng)
    th = _thresholds(p, fields)
    px_to_map = [p.res_m, 0, 0, -p.res_m, p.origin[0], p.origin[1]]
    to_map = lambda gs: [affinity.affine_transform(g, px_to_map) for g in gs]  # noqa: E731
    # rivers as buffered pieces of <= ~1 km, so each strip rasterises only the pieces that cross it
    river_shapes = []
    for line, width, _ in vectors.rivers:
        coords = np.asarray(line.coords)
        for i in range(0, len(coords) - 1, 60):
            piece = shapely.LineString(coords[i:i + 61])
            river_shapes.append(piece.buffer(width / 2))
    river_shapes = to_map(river_shapes)
    mining_shapes = [to_map(vectors.mining[y]) for y in p.years]
    trees = [shapely.STRtree(g) for g in (river_shapes, *mining_shapes)]
    shape_lists = [river_shapes, *mining_shapes]

    profile = dict(driver="GTiff", height=p.rows, width=p.cols, count=1, dtype="uint8", crs=p.crs, transform=p.transform,
                   nodata=NODATA, tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate", zlevel=6,
                   num_threads=2, bigtiff="if_safer")
    hist = np.zeros((len(p.years), 256), np.int64)
    changed = 0
    thin = max(1, max(p.rows, p.cols) // 1500)  # preview: every thin-th pixel
    preview = [[] for _ in p.years]
    crop_rows = slice(p.rows // 2 - 768, p.rows // 2 + 768)
    crop = [np.zeros((1536, 1536), np.uint8) for _ in p.years]
    with rasterio.Env(GDAL_CACHEMAX=128 * 2**20):
        outs = [rasterio.open(directory / f"landcover_{y}.tif", "w", **profile) for y in p.years]
        try:
            for row0 in range(0, p.rows, STRIP_ROWS):
                height = min(STRIP_ROWS, p.rows - row0)
                strip_t = p.transform * Affine.translation(0, row0)
                left, top = strip_t * (0, 0)
                right, bottom = strip_t * (p.cols, height)
                box = shapely.box(left, bottom, right, top)
                masks = []
                for tree, shapes in zip(trees, shape_lists, strict=True):
                    hits = tree.query(box)
                    masks.append(rasterize([shapes[i] for i in hits], out_shape=(height, p.cols), transform=strip_t,
                                           dtype=np.uint8).astype(bool) if hits.size else np.zeros((height, p.cols), bool))
                codes = _strip_codes(p, fields, th, row0, height, rivers=masks[0], mining=masks[1:])
                for k, (out, c) in enumerate(zip(outs, codes, strict=True)):
                    out.write(c, 1, window=rasterio.windows.Window(0, row0, p.cols, height))
                    hist[k] += np.bincount(c.ravel(), minlength=256)
                    preview[k].append(c[(thin - row0 % thin) % thin::thin, ::thin])
                    lo, hi = max(row0, crop_rows.start), min(row0 + height, crop_rows.stop)
                    if lo < hi:
                        c0 = p.cols // 2 - 768
                        crop[k][lo - crop_rows.start:hi - crop_rows.start] = c[lo - row0:hi - row0, c0:c0 + 1536]
                changed += int((codes[0] != codes[1]).sum())
                if (row0 // STRIP_ROWS) % 8 == 0:
                    log(f"  rows {row0:>6}/{p.rows}  {time.perf_counter() - started:6.1f} s")
            for out in outs:
                out.write_colormap(1, {code: _rgba(hexc) for code, hexc in COLOURS.items()})
        finally:
            for out in outs:
                out.close()

    import geopandas as gpd

    gpd.GeoDataFrame({"order": [o for _, _, o in vectors.rivers], "width_m": [w * p.res_m for _, w, _ in vectors.rivers]},
                     geometry=to_map([line for line, _, _ in vectors.rivers]), crs=p.crs).to_file(directory / "rivers.gpkg")
    _previews(p, directory, [np.concatenate(pv) for pv in preview], crop)
    total = p.rows * p.cols
    names = {v: k for k, v in CODES.items()}
    meta = {
        "params": asdict(p), "key": p.key, "legend": LEGEND,
        "files": {str(y): f"landcover_{y}.tif" for y in p.years}, "rivers": "rivers.gpkg",
        "shares_pct": {str(y): {names[c]: round(100 * float(hist[k, c]) / total, 3) for c in sorted(names) if hist[k, c]}
                       for k, y in enumerate(p.years)},
        "natural_pct": {str(y): round(100 * float(sum(hist[k, CODES[n]] for n in ("forest", "savanna", "wetland", "water"))) / total, 3)
                        for k, y in enumerate(p.years)},
        "changed_pct": round(100 * changed / total, 3),
        "thresholds": th,
        "counts": {"river_lines": len(vectors.rivers), "roads": len(vectors.roads),
                   "mining_pits": {str(y): len(vectors.mining[y]) for y in p.years}},
        "file_mb": {str(y): round((directory / f"landcover_{y}.tif").stat().st_size / 2**20, 1) for y in p.years},
        "generation_s": round(time.perf_counter() - started, 1),
        "generation_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    log(f"  done in {meta['generation_s']} s; changed {meta['changed_pct']} %; natural {meta['natural_pct']} %; "
        f"shares {meta['shares_pct'][str(p.years[0])]}")


def _rgba(hexc: str) -> tuple[int, int, int, int]:
    h = hexc.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255


def _previews(p: Params, directory: Path, thinned: list[np.ndarray], crops: list[np.ndarray]) -> None:
    """preview_<year>.png (whole landscape, every k-th pixel) and crop_<year>.png (1536 px at full resolution)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    lut = np.zeros((256, 3), np.uint8)
    for code, hexc in COLOURS.items():
        lut[code] = _rgba(hexc)[:3]
    for y, th_, cr in zip(p.years, thinned, crops, strict=True):
        plt.imsave(directory / f"preview_{y}.png", lut[th_])
        plt.imsave(directory / f"crop_{y}.png", lut[cr])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", default=["16", "144"], choices=sorted(SIZES, key=int),
                        help="landscape sizes (Mpx per year)")
    parser.add_argument("--seed", type=int, default=Params.seed)
    args = parser.parse_args(argv)
    for size in args.sizes:
        ds = ensure(Params.of_size(size, seed=args.seed))
        print(f"{size:>4} Mpx: {ds.directory}  (run it: python -m pipeline run {landscape_inputs(ds)})")


if __name__ == "__main__":
    main()
