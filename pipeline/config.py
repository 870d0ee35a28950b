"""Landscape and legend configuration (DESIGN.md §3, §7): pydantic models and YAML loading.

Every model forbids unknown keys, so a typo is an error instead of a silently ignored option.
Relative paths in a landscape file are resolved against the project root: the folder that holds
``configs/landscapes/<name>.yaml`` (or the YAML file's own folder when it lives elsewhere).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z0-9_-]+$")
ECOSYSTEMS = ("forest", "savanna_grassland", "wetland", "mangrove", "water", "other_natural")
GROUPS = ("tree_covered", "grassland", "cropland", "wetland", "artificial", "other_land", "water_body")

Ecosystem = Literal["forest", "savanna_grassland", "wetland", "mangrove", "water", "other_natural"]
Group = Literal["tree_covered", "grassland", "cropland", "wetland", "artificial", "other_land", "water_body"]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- legend
class LegendClass(_Strict):
    """One product code: its name and the flags the indicators use."""

    name: str = Field(description="Class name as the product documents it.")
    natural: bool = Field(description="True for natural ecosystems (forest, savanna, wetland, water, ...).")
    ecosystem: Ecosystem | None = Field(
        None, description="Natural ecosystem type; required for natural classes, absent otherwise."
    )
    mining: bool = Field(False, description="True for mining (e.g. MapBiomas class 30).")
    water: bool = Field(False, description="True for open water surfaces.")
    condition: int | None = Field(
        None, description="Condition rank within the ecosystem (higher = more intact), for degradation."
    )
    group: Group | None = Field(None, description="IPCC-like land-cover group for transition matrices.")
    color: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}$", description="Display colour, #rrggbb.")

    @model_validator(mode="after")
    def _ecosystem_matches_natural(self) -> LegendClass:
        if self.natural and self.ecosystem is None:
            raise ValueError(f"natural class {self.name!r} needs an ecosystem (one of {', '.join(ECOSYSTEMS)})")
        if not self.natural and self.ecosystem is not None:
            raise ValueError(f"non-natural class {self.name!r} must not have an ecosystem")
        return self


# Trends.Earth / UNCCD good-practice default meaning of a transition between the 7 IPCC-like groups
# (rows: from, columns: to): -1 degradation, 0 stable, +1 improvement.
DEFAULT_TRANSITIONS: dict[str, dict[str, int]] = {
    "tree_covered": {"tree_covered": 0, "grassland": -1, "cropland": -1, "wetland": -1, "artificial": -1, "other_land": -1, "water_body": 0},
    "grassland": {"tree_covered": 1, "grassland": 0, "cropland": 1, "wetland": -1, "artificial": -1, "other_land": -1, "water_body": 0},
    "cropland": {"tree_covered": 1, "grassland": -1, "cropland": 0, "wetland": -1, "artificial": -1, "other_land": -1, "water_body": 0},
    "wetland": {"tree_covered": -1, "grassland": -1, "cropland": -1, "wetland": 0, "artificial": -1, "other_land": -1, "water_body": 0},
    "artificial": {"tree_covered": 1, "grassland": 1, "cropland": 1, "wetland": 1, "artificial": 0, "other_land": 1, "water_body": 0},
    "other_land": {"tree_covered": 1, "grassland": 1, "cropland": 1, "wetland": 1, "artificial": -1, "other_land": 0, "water_body": 0},
    "water_body": {"tree_covered": 0, "grassland": 0, "cropland": 0, "wetland": 0, "artificial": 0, "other_land": 0, "water_body": 0},
}


class LegendConfig(_Strict):
    """A land-cover product's legend: configs/legends/<legend>.yaml."""

    product: str = Field(description="Product name and version, e.g. MapBiomas Brazil Collection 8.")
    reference: str | None = Field(None, description="Citation or URL of the product's legend document.")
    nodata: list[int] = Field(
        min_length=1, description="Codes meaning 'not observed'; counted as unmapped inside the boundary."
    )
    classes: dict[int, LegendClass] = Field(min_length=1, description="Every code the product uses.")
    transitions: dict[Group, dict[Group, Literal[-1, 0, 1]]] | None = Field(
        None, description="Meaning of each (from group, to group) transition for the degradation rule "
        "`transition`: -1 degradation, 0 stable, +1 improvement. Default: Trends.Earth's matrix (DEFAULT_TRANSITIONS)."
    )

    @model_validator(mode="after")
    def _complete_transitions(self) -> LegendConfig:
        if self.transitions is not None:
            missing = [f"({a}, {b})" for a in GROUPS for b in GROUPS if b not in self.transitions.get(a, {})]
            if missing:
                raise ValueError(f"transitions has no meaning for {', '.join(missing[:5])}"
                                 + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                                 + "; give -1, 0 or 1 for every (from, to) pair of the 7 groups")
        return self

    def transition_matrix(self) -> dict[str, dict[str, int]]:
        return self.transitions if self.transitions is not None else DEFAULT_TRANSITIONS

    @model_validator(mode="after")
    def _nodata_not_a_class(self) -> LegendConfig:
        both = sorted(set(self.nodata) & set(self.classes))
        if both:
            raise ValueError(f"codes {both} are listed both in nodata and in classes")
        negative = sorted(c for c in [*self.nodata, *self.classes] if c < 0 or c > 65535)
        if negative:
            raise ValueError(f"codes {negative} are outside 0..65535")
        return self


# ------------------------------------------------------------------------------------------ landscape
class BandPerYear(_Strict):
    """Layout of a multi-band land-cover file: consecutive years from `first_year`, or one year per band."""

    first_year: int | None = Field(None, description="Year held by band 1; band 2 holds the next year, ...")
    years: list[int] | None = Field(None, description="The year each band holds, band 1 first (for gaps).")

    @model_validator(mode="after")
    def _one_layout(self) -> BandPerYear:
        if (self.first_year is None) == (self.years is None):
            raise ValueError("give exactly one of first_year or years")
        return self

    def band(self, year: int) -> int | None:
        """1-based band holding `year` (None when the layout has no such year)."""
        if self.years is not None:
            return self.years.index(year) + 1 if year in self.years else None
        return year - self.first_year + 1 if year >= self.first_year else None  # type: ignore[operator]


class FetchLayerConfig(_Strict):
    """One more Earth Engine product fetched on the same grid and years (e.g. JRC TMF for degradation `external`)."""

    product: str = Field(pattern=r"^[a-z0-9_-]+$", description="Product name: configs/products/<product>.yaml.")
    path: str = Field(description="Per-year output template containing {year}, e.g. data/raw/NAME/tmf_{year}.tif.")

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{year}" not in value:
            raise ValueError("Earth Engine writes one file per year: put {year} in the path")
        return value


class LandcoverFetchConfig(_Strict):
    """How `python -m pipeline fetch` gets land cover from Earth Engine (pipeline/fetch.py)."""

    product: str | None = Field(
        None, pattern=r"^[a-z0-9_-]+$",
        description="Product name: configs/products/<product>.yaml (asset ids, bands). Default: the one product "
        "whose legend is landcover.legend.",
    )
    project: str | None = Field(
        None, description="Google Cloud project registered for Earth Engine. Default: env EARTHENGINE_PROJECT, "
        "GOOGLE_CLOUD_PROJECT, or the service-account key's project.",
    )
    adjacency_m: float = Field(
        0, ge=0, le=200_000, description="Ring around the boundary also fetched (m), e.g. 10000 for LandScale's "
        "adjacent-area review. The indicators still clip to the boundary.",
    )
    tile_px: int = Field(
        2048, ge=16, le=32768, description="Tile side (pixels) of each computePixels request (limit 32768 px and 48 MB).",
    )
    max_tiles: int = Field(
        4096, ge=1, description="A boundary needing more tiles than this is too large to download; use --summaries-only.",
    )
    max_retries: int = Field(8, ge=0, le=50, description="Retries of a tile on quota or transient errors (exponential back-off).")
    canopy_threshold_pct: float | None = Field(
        None, gt=0, le=100, description="Tree-cover threshold (%) for forest_loss products (Hansen); default: the product's.",
    )
    layers: list[FetchLayerConfig] = Field(
        default_factory=list, description="Other products fetched on the same grid and years (e.g. JRC TMF).",
    )


class LandcoverConfig(_Strict):
    legend: str = Field(description="Legend name: configs/legends/<legend>.yaml.")
    source: Literal["local", "earthengine"] = Field(
        "local", description="local: files in data/raw; earthengine: fetched by `make fetch` into `path`."
    )
    path: str = Field(
        description="One multi-band file (with band_per_year) or a per-year template containing {year}."
    )
    band_per_year: BandPerYear | None = Field(None, description="Set for one file with a band per year.")
    fetch: LandcoverFetchConfig | None = Field(
        None, description="Earth Engine fetch options (source: earthengine, or extra layers for a local source)."
    )

    @model_validator(mode="after")
    def _layout(self) -> LandcoverConfig:
        has_template = "{year}" in self.path
        if has_template and self.band_per_year is not None:
            raise ValueError("use either a {year} template in path or band_per_year, not both")
        if not has_template and self.band_per_year is None:
            raise ValueError("path has no {year} template: add band_per_year: {first_year: ...} for a multi-band file")
        if self.source == "earthengine" and not has_template:
            raise ValueError("source: earthengine writes one file per year: use a {year} template in path")
        return self


class GridConfig(_Strict):
    crs: str = Field(
        "auto",
        description="auto (Lambert azimuthal equal-area on the boundary centroid), native (the land-cover "
        "raster's own projected grid, no resampling), or any CRS string (EPSG:xxxx, ESRI:xxxx, WKT).",
    )
    resolution_m: PositiveFloat | None = Field(
        None, description="Pixel size in metres (ignored with native); default: the land cover's own."
    )
    chunk_px: int = Field(2048, ge=16, le=16384, description="Dask chunk size in pixels (square).")
    resampling: Literal["auto", "nearest", "mode"] = Field(
        "auto",
        description="Categorical resampling. auto: nearest unless the grid pixel is over 1.5x the "
        "source pixel, then mode. Bilinear/cubic are never used for classes.",
    )


class ZoneLayerConfig(_Strict):
    path: str = Field(description="Vector file with the zone polygons (any CRS GDAL reads, WKT-only included).")
    id_field: str = Field(description="Attribute that names each zone; polygons sharing a value form one zone.")
    layer: str | None = Field(None, description="Layer name for multi-layer files (GeoPackage).")
    where: str | None = Field(None, description="Optional attribute filter (OGR SQL WHERE clause).")
    protected: bool = Field(False, description="True for a protected-areas layer: ProtConn is computed from it.")


class VectorConfig(_Strict):
    path: str = Field(description="Vector file path.")
    layer: str | None = Field(None, description="Layer name for multi-layer files.")


class MiningLayerConfig(_Strict):
    path: str = Field(description="Yearly mining polygons (e.g. Amazon Mining Watch).")
    name: str = Field("amw", pattern=r"^[a-z0-9_]+$", description="Short source name used in metric names.")
    year_field: str = Field(description="Attribute holding the year (YYYY, or YYYYxx such as AMW's 201800).")
    cumulative_increments: bool = Field(
        True, description="True when each year's layer holds only the new detections (footprint = union to Y); "
        "false when each year's layer is that year's whole footprint."
    )
    footprint: bool = Field(
        True, description="True when the polygons are mined surface. False for detection areas larger than the "
        "mined surface (Amazon Mining Watch's 480 m patches): they then count in the footprint only when no "
        "mined-surface source exists."
    )
    area_field: str | None = Field(
        None, description="Attribute with the source's own mined area (ha) per polygon, reported as "
        "mined_area_ha_source_<name> (shared among zones by polygon overlap)."
    )
    layer: str | None = None


class MiningRasterConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$", description="Short source name used in metric names.")
    path: str = Field(description="Mining mask raster: a per-year template with {year}, or one multi-band file.")
    band_per_year: BandPerYear | None = Field(None, description="Band layout of a multi-band file.")
    mining_values: list[int] = Field([1], min_length=1, description="Pixel values that mean mining.")
    footprint: bool = Field(True, description="True when the mask is mined surface (see mining_layers.footprint).")


class ConversionConfig(_Strict):
    min_mapping_unit_ha: float = Field(
        0.5, ge=0, description="Smallest conversion patch (ha) written to conversion.gpkg; the CSV counts all pixels."
    )


class ConnectivityConfig(_Strict):
    neighbourhood: Literal[4, 8] = Field(8, description="Pixels joined through edges (4) or edges and corners (8).")
    edge_depth_m: PositiveFloat = Field(100, description="Edge depth for core area (m), cityblock as in FRAGSTATS.")
    min_patch_ha: float = Field(1.0, ge=0, description="Smallest patch (ha) in the ECA graph and the patches layer.")
    dispersal_m: list[PositiveFloat] = Field(
        [1000, 10000], min_length=1, description="Dispersal distances (m) at which the link probability is p_at_dispersal."
    )
    p_at_dispersal: float = Field(0.5, gt=0, lt=1, description="Link probability at the dispersal distance.")
    prune_probability: float = Field(
        1e-4, gt=0, lt=0.5, description="Links and paths less likely than this are dropped from the ECA graph."
    )


class MiningConfig(_Strict):
    riparian_buffer_m: PositiveFloat = Field(500, description="Mining within this distance of a river is riparian (m).")
    affected_distance_m: PositiveFloat = Field(100, description="River centre-line this close to mining is affected (m).")
    min_persistence_years: int = Field(
        1, ge=1, description="A pixel is mining only inside a run of this many consecutive observed years."
    )
    landcover_source: bool = Field(True, description="Use the legend's mining classes as a mining source.")
    mining_rights: ZoneLayerConfig | None = Field(
        None, description="Mining (exploitation) rights polygons; `where` selects the granted phases. id_field names titles."
    )
    surface_rights: ZoneLayerConfig | None = Field(None, description="Surface (land) rights polygons.")


class ExternalDegradationConfig(_Strict):
    path: str = Field(description="Degradation raster: a per-year template with {year}, or one multi-band file.")
    band_per_year: BandPerYear | None = Field(None, description="Band layout of a multi-band file.")
    degraded_values: list[int] = Field(min_length=1, description="Pixel values that mean degraded (e.g. JRC TMF).")
    name: str = Field("external", pattern=r"^[a-z0-9_]+$", description="Name of the source in reports.")


DegradationRule = Literal["transition", "condition", "edge", "small_patch", "isolation", "external"]


class DegradationConfig(_Strict):
    rules: list[DegradationRule] = Field(
        ["transition", "condition", "edge", "small_patch", "isolation"], min_length=1,
        description="Rules to apply; each is reported apart, and their union once per pixel.",
    )
    neighbourhood: Literal[4, 8] = Field(8, description="Patch rule for small_patch and isolation.")
    edge_depth_m: PositiveFloat = Field(100, description="Natural pixels this close to non-natural land are edge (m).")
    small_patch_ha: PositiveFloat = Field(5, description="Patches smaller than this are small (ha).")
    large_patch_ha: PositiveFloat = Field(100, description="Patches larger than this are core habitat (ha).")
    isolation_m: PositiveFloat = Field(1000, description="Pixels farther than this from a large patch are isolated (m).")
    external: ExternalDegradationConfig | None = Field(None, description="User degradation raster (rule `external`).")

    @model_validator(mode="after")
    def _external_given(self) -> DegradationConfig:
        if "external" in self.rules and self.external is None:
            raise ValueError("rule 'external' needs indicators.degradation.external: {path: ..., degraded_values: [...]}")
        return self


class IndicatorsConfig(_Strict):
    conversion: ConversionConfig | None = Field(None, description="Natural-ecosystem conversion (DESIGN §4).")
    connectivity: ConnectivityConfig | None = Field(None, description="Natural-ecosystem connectivity (DESIGN §4).")
    mining: MiningConfig | None = Field(None, description="Alluvial mining footprint (DESIGN §4).")
    degradation: DegradationConfig | None = Field(None, description="Natural-ecosystem degradation (DESIGN §4).")


class ComputeConfig(_Strict):
    scheduler: str = Field(
        "threads", description="threads | synchronous | processes | local-cluster (a dask.distributed cluster on "
        "this machine for the run) | tcp://HOST:PORT (an existing dask.distributed scheduler) | distributed (the "
        "Client already active in this Python process: Coiled, dask-gateway, dask-jobqueue). See pipeline/cluster.py.")
    workers: int = Field(2, ge=1, le=256, description="Worker threads or processes (local-cluster: worker processes).")
    threads_per_worker: int = Field(1, ge=1, le=256, description="local-cluster: threads per worker process.")
    memory_limit_gb: float | None = Field(
        None, gt=0, description="local-cluster: memory limit per worker (GB); default: the machine's memory / workers.")
    gdal_cachemax_mb: int = Field(
        64, ge=16, description="GDAL block cache per process, workers included (MB). Chunks are read whole and once "
        "a pass, so a larger cache saves little; at 576 Mpx x 2 years 256 MB took 200 MB more memory and more CPU.")

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in {"threads", "synchronous", "processes", "local-cluster", "distributed"} and not re.fullmatch(
                r"(tcp|tls|ucx)://[^\s/]+:\d+/?", value):
            raise ValueError("scheduler must be threads, synchronous, processes, local-cluster, distributed or a "
                             f"dask.distributed scheduler address tcp://HOST:PORT (got {value!r})")
        return value


class SensitivityConfig(_Strict):
    """Cheap reruns of the indicator kernels with one parameter changed; each metric gets value_lo/value_hi."""

    neighbourhood: bool = Field(True, description="Rerun patch metrics with the other neighbour rule (4 vs 8).")
    edge_depth_factor: float = Field(
        0.5, ge=0, lt=1, description="Rerun with edge depths x (1 - f) and x (1 + f) (0.5 = edge depth +-50 %).")
    mapping_unit_px: int = Field(1, ge=0, description="Rerun with the minimum patch size +- this many pixels.")
    persistence: bool = Field(True, description="Rerun mining with min_persistence_years 1 <-> 2.")


class DataSourceConfig(_Strict):
    name: str = Field(description="Dataset name as the report shows it.")
    used_for: str = Field("", description="What the pipeline uses it for.")
    licence: str = Field(description="Licence, as stated by the provider (say 'not stated' when it is not).")
    attribution: str = Field(description="The attribution line the provider asks for.")


class TrendsConfig(_Strict):
    relative_tolerance_pct: float = Field(
        0.5, ge=0, description="Changes below this % of the earlier value are `stable` in trends.csv (with the "
        "minimum mapping unit and the sensitivity range).")


class LandscapeConfig(_Strict):
    """A landscape: configs/landscapes/<name>.yaml (DESIGN.md §7)."""

    name: str = Field(description="Landscape id, [a-z0-9_-]+, equal to the file name.")
    title: str = Field("", description="Human-readable title for reports.")
    boundary: str = Field(description="Boundary vector file; all features are dissolved into one area.")
    boundary_layer: str | None = Field(None, description="Layer name when the boundary file has several.")
    years: list[int] = Field(min_length=2, description="Assessment years, strictly ascending.")
    baseline_year: int | None = Field(None, description="Baseline year (default: the first year).")
    cutoff_year: int | None = Field(None, description="Cut-off year for 'conversion since' (AFi/EUDR), one of years.")
    landcover: LandcoverConfig
    grid: GridConfig = GridConfig()
    zones: dict[str, ZoneLayerConfig] = Field(default_factory=dict, description="Zone layers for breakdowns.")
    rivers: VectorConfig | None = Field(None, description="River centre-lines (mining indicator).")
    mining_layers: list[MiningLayerConfig] = Field(default_factory=list, description="Yearly mining polygons.")
    mining_rasters: list[MiningRasterConfig] = Field(default_factory=list, description="Yearly mining mask rasters.")
    indicators: IndicatorsConfig = Field(description="Indicators to compute; only the listed ones run.")
    compute: ComputeConfig = ComputeConfig()
    sensitivity: SensitivityConfig | None = Field(
        None, description="Parameter sensitivity reruns (value_lo/value_hi columns); omit to skip them.")
    trends: TrendsConfig = TrendsConfig()
    data_sources: list[DataSourceConfig] = Field(
        default_factory=list, description="Datasets with licence and attribution, listed in the report.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"name {value!r} may only contain a-z, 0-9, _ and - (no paths)")
        return value

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, value: dict[str, ZoneLayerConfig]) -> dict[str, ZoneLayerConfig]:
        for key in value:
            if not NAME_PATTERN.match(key) or key == "landscape":
                raise ValueError(f"zone layer name {key!r} must match [a-z0-9_-]+ and not be 'landscape'")
        return value

    @model_validator(mode="after")
    def _years(self) -> LandscapeConfig:
        if any(b <= a for a, b in zip(self.years, self.years[1:], strict=False)):
            raise ValueError(f"years must be strictly ascending (got {self.years})")
        if self.baseline_year is not None and self.baseline_year not in self.years:
            raise ValueError(f"baseline_year {self.baseline_year} is not one of years {self.years}")
        if len(self.mining_layers) + len(self.mining_rasters) > 7:
            raise ValueError("at most 7 mining_layers and mining_rasters together (8 mining sources with land cover)")
        if self.mining_layers and len(self.years) > 64:
            raise ValueError(f"mining_layers work with at most 64 assessment years (got {len(self.years)})")
        if self.cutoff_year is not None and self.cutoff_year not in self.years[:-1]:
            raise ValueError(
                f"cutoff_year {self.cutoff_year} must be one of years {self.years} before the last; add it to years"
            )
        return self

    @property
    def baseline(self) -> int:
        return self.baseline_year if self.baseline_year is not None else self.years[0]

    def periods(self) -> list[tuple[int, int]]:
        """Consecutive year pairs, then baseline -> last and cutoff -> last when those are new pairs."""
        pairs = list(zip(self.years, self.years[1:], strict=False))
        for start in (self.baseline, self.cutoff_year):
            if start is not None and (start, self.years[-1]) not in pairs and start != self.years[-1]:
                pairs.append((start, self.years[-1]))
        return pairs


# ------------------------------------------------------------------------------------ Earth Engine products
class ForestLossRecipe(_Strict):
    """Forest / non-forest per year from a tree-cover baseline and a loss-year band (Hansen GFC)."""

    treecover_band: str = Field(description="Tree canopy cover (%) in base_year.")
    lossyear_band: str = Field(description="Year of loss as years after base_year (0 = no loss).")
    datamask_band: str | None = Field(None, description="0 no data, 1 land, 2 permanent water (Hansen datamask).")
    base_year: int = Field(description="Year of the tree-cover baseline (2000 for Hansen).")
    canopy_threshold_pct: float = Field(30, gt=0, le=100, description="Default canopy cover (%) that makes forest.")
    forest_code: int = Field(1, ge=1, le=255, description="Output code for forest.")
    non_forest_code: int = Field(2, ge=1, le=255, description="Output code for land that is not forest.")
    water_code: int = Field(3, ge=1, le=255, description="Output code for permanent water (datamask 2).")


class ProductConfig(_Strict):
    """An Earth Engine land-cover product: configs/products/<product>.yaml (used by pipeline/fetch.py).

    Recipes: ``band_per_year`` (one image, or a mosaicked collection, with a band per year, e.g. MapBiomas,
    JRC TMF), ``image_per_year`` (one asset per year, e.g. ESA WorldCover), ``annual_mode`` (mode of a
    collection's band over the calendar year, e.g. Dynamic World), ``forest_loss`` (Hansen GFC).
    """

    product: str = Field(description="Product name and version.")
    reference: str | None = Field(None, description="Citation, catalogue page or source of the asset ids.")
    legend: str = Field(description="Legend of the fetched codes: configs/legends/<legend>.yaml.")
    recipe: Literal["band_per_year", "image_per_year", "annual_mode", "forest_loss"]
    asset: str | None = Field(None, description="Earth Engine asset id (all recipes but image_per_year).")
    assets_by_year: dict[int, str] | None = Field(None, description="image_per_year: asset id of each year.")
    asset_type: Literal["image", "image_collection"] = Field(
        "image", description="image_collection assets are mosaicked (band_per_year, image_per_year) or reduced."
    )
    band: str | None = Field(
        None, description="Band to fetch; band_per_year: a template with {year} (e.g. classification_{year})."
    )
    first_year: int = Field(description="First year the product maps.")
    last_year: int = Field(description="Last year the product maps.")
    native_resolution_m: PositiveFloat = Field(description="Pixel size of the product (m); a coarser grid uses mode.")
    dtype: Literal["uint8", "uint16"] = Field("uint8", description="Data type of the fetched rasters.")
    nodata_value: int = Field(
        ge=0, le=65535, description="Written where the product has no data (masked) and outside the fetched area; "
        "the GeoTIFF's nodata value. Must not be a class code.",
    )
    forest_loss: ForestLossRecipe | None = Field(None, description="Parameters of the forest_loss recipe.")

    @model_validator(mode="after")
    def _recipe_fields(self) -> ProductConfig:
        need = {"band_per_year": ("asset", "band"), "image_per_year": ("assets_by_year", "band"),
                "annual_mode": ("asset", "band"), "forest_loss": ("asset", "forest_loss")}[self.recipe]
        missing = [name for name in need if getattr(self, name) is None]
        if missing:
            raise ValueError(f"recipe {self.recipe} needs {' and '.join(missing)}")
        if self.recipe == "band_per_year" and "{year}" not in (self.band or ""):
            raise ValueError("recipe band_per_year needs a {year} template in band, e.g. classification_{year}")
        if self.first_year > self.last_year:
            raise ValueError(f"first_year {self.first_year} is after last_year {self.last_year}")
        if self.assets_by_year is not None:
            outside = sorted(y for y in self.assets_by_year if not self.first_year <= y <= self.last_year)
            if outside:
                raise ValueError(f"assets_by_year has years {outside} outside first_year..last_year")
        if self.dtype == "uint8" and self.nodata_value > 255:
            raise ValueError(f"nodata_value {self.nodata_value} does not fit dtype uint8")
        return self

    def years(self) -> list[int]:
        """Years this product can deliver."""
        if self.assets_by_year is not None:
            return sorted(self.assets_by_year)
        return list(range(self.first_year, self.last_year + 1))


# ---------------------------------------------------------------------------------------------- loading
def project_root(config_path: Path) -> Path:
    """The folder relative paths are resolved against (see module docstring)."""
    config_path = config_path.resolve()
    if config_path.parent.name == "landscapes" and config_path.parent.parent.name == "configs":
        return config_path.parent.parent.parent
    return config_path.parent


def legends_dir(root: Path) -> Path:
    """configs/legends/ of the project root, or else the one shipped beside the package (checkouts)."""
    own = root / "configs" / "legends"
    return own if own.is_dir() else Path(__file__).resolve().parent.parent / "configs" / "legends"


def products_dir(root: Path) -> Path:
    """configs/products/ of the project root, or else the one shipped beside the package (checkouts)."""
    own = root / "configs" / "products"
    return own if own.is_dir() else Path(__file__).resolve().parent.parent / "configs" / "products"


def load_product(path: Path) -> ProductConfig:
    """Read and validate an Earth Engine product YAML file."""
    return _load(path, ProductConfig)


def _load(path: Path, model: type[BaseModel]):
    """Read a YAML file into ``model``; validation errors name the file and the dotted key."""
    try:
        return model.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise _first_error(path, exc) from None


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def _first_error(path: Path, exc: ValidationError) -> ConfigError:
    """One line per problem: file, dotted key, message and the bad value."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against DESIGN.md §7"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        suffix = f" (got {got!r})" if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict) else ""
        lines.append(f"{path}: {key}: {msg}{suffix}")
    return ConfigError("\n".join(lines))


def load_legend(path: Path) -> LegendConfig:
    """Read and validate a legend YAML file."""
    return _load(path, LegendConfig)


def resolve_config_path(name_or_path: str, root: Path) -> Path:
    """A landscape name (``lourenco``) or a YAML path -> the YAML path. Names with path parts are refused."""
    if name_or_path.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    if not NAME_PATTERN.match(name_or_path):
        raise ConfigError(
            f"landscape name {name_or_path!r} may only contain a-z, 0-9, _ and - (no paths); "
            f"use a name from {root / 'configs/landscapes'} or give the path of a .yaml file"
        )
    path = root / "configs" / "landscapes" / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "configs" / "landscapes").glob("*.yaml"))
        raise ConfigError(f"{path}: no such landscape; known landscapes: {', '.join(known) or 'none'}")
    return path


def load_landscape(path: Path) -> LandscapeConfig:
    """Read and validate a landscape YAML file; its name must equal the file name."""
    data = _read_yaml(path)
    try:
        config = LandscapeConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(path, exc) from None
    if config.name != path.stem:
        raise ConfigError(f"{path}: name: {config.name!r} must equal the file name {path.stem!r}")
    return config
