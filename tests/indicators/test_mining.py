"""Mining footprint metrics on a hand-made landscape a person can check (DESIGN.md §4)."""

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.indicators import mining
from pipeline.testing import (
    LAEA_AT_ORIGIN,
    make_config,
    make_context,
    make_grid,
    make_legend,
    make_stack,
    pixel_box,
)

PX = 0.09
F, G, P, M, W = 3, 12, 15, 30, 33  # forest, grassland, pasture, mining, river
# 6 x 10 pixels of 30 m. Row 3 is a river (the centre-line runs along it at y = -105 m).
LC_2000 = np.full((6, 10), F, np.uint8)
LC_2000[3] = W
LC_2000[5, 8:] = G
LC_2010 = LC_2000.copy()
LC_2010[0:2, 1:3] = M  # site A (4 px)
LC_2010[4:6, 4:6] = M  # site B (4 px), across the zone border between columns 4 and 5
LC_2010[0, 8] = M  # a pixel that flickers: mining in 2010 only
LC_2020 = LC_2010.copy()
LC_2020[0, 8] = F
LC_2020[5, 8:] = M  # site C (2 px) on former grassland
YEARS = [2000, 2010, 2020]


def _vectors(grid):
    river = gpd.GeoDataFrame(geometry=[shapely.LineString([(0, -105), (300, -105)])], crs=grid.crs)
    amw = gpd.GeoDataFrame({"year": [2018, 2020], "mined_area_ha": [1.5, 0.3]},
                           geometry=[pixel_box(grid, slice(0, 2), slice(1, 3)), pixel_box(grid, slice(5, 6), slice(8, 10))],
                           crs=grid.crs)
    rights = gpd.GeoDataFrame({"id": ["west"]}, geometry=[pixel_box(grid, slice(0, 6), slice(0, 5))], crs=grid.crs)
    surface = gpd.GeoDataFrame({"id": ["north"]}, geometry=[pixel_box(grid, slice(0, 3), slice(0, 10))], crs=grid.crs)
    return {"rivers": river, "mining:amw": amw, "mining_rights": rights, "surface_rights": surface}


def _run(chunks=(2048, 2048), k=1, with_landcover=True, layers=True, landcover_source=True):
    grid = make_grid(LC_2000.shape, chunk_px=chunks[0], crs=LAEA_AT_ORIGIN)
    legend = make_legend()
    config = make_config(
        YEARS,
        indicators={"mining": {"riparian_buffer_m": 50, "affected_distance_m": 60, "min_persistence_years": k,
                               "landcover_source": landcover_source,
                               "mining_rights": {"path": "r.gpkg", "id_field": "id"},
                               "surface_rights": {"path": "s.gpkg", "id_field": "id"}}},
        mining_layers=[{"name": "amw", "path": "amw.geojson", "year_field": "year", "footprint": False,
                        "area_field": "mined"}] if layers else [],
    )
    zones = {"halves": [("west", pixel_box(grid, slice(0, 6), slice(0, 5))),
                        ("east", pixel_box(grid, slice(0, 6), slice(5, 10)))]}
    vectors = _vectors(grid)
    if not layers:
        vectors.pop("mining:amw")
    ctx = make_context(grid, legend, config, zones={"halves": zones["halves"]} if zones else None, vectors=vectors)
    stack = None
    if with_landcover:
        stack = make_stack(dict(zip(YEARS, (LC_2000, LC_2010, LC_2020), strict=True)), legend, grid)
        stack = stack.chunk({"y": chunks[0], "x": chunks[1]})
    return mining.compute(stack, ctx)


def _v(table, metric, *, zone_layer="landscape", zone=None, ecosystem=None, **years):
    rows = table[(table.metric == metric) & (table.zone_layer == zone_layer)]
    if zone is not None:
        rows = rows[rows.zone == zone]
    rows = rows[rows.ecosystem.isna()] if ecosystem is None else rows[rows.ecosystem == ecosystem]
    for key, value in years.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, (metric, zone_layer, zone, ecosystem, years, len(rows))
    return float(rows["value"].iloc[0])


@pytest.fixture(scope="module")
def result():
    return _run()


def test_footprint_new_mining_and_mining_on_natural(result):
    t = result.table
    assert _v(t, "mining_ha", year=2000) == 0
    assert _v(t, "mining_ha", year=2010) == pytest.approx(9 * PX)
    assert _v(t, "mining_ha", year=2020) == pytest.approx(10 * PX)
    assert _v(t, "new_mining_ha", year_from=2000, year_to=2010) == pytest.approx(9 * PX)
    assert _v(t, "new_mining_ha", year_from=2010, year_to=2020) == pytest.approx(2 * PX)
    assert _v(t, "mining_on_natural_ha", ecosystem="forest", year_from=2000, year_to=2010) == pytest.approx(9 * PX)
    assert _v(t, "mining_on_natural_ha", ecosystem="savanna_grassland", year_from=2010, year_to=2020) == pytest.approx(2 * PX)
    assert _v(t, "mining_on_natural_ha", ecosystem="all_natural", year_from=2010, year_to=2020) == pytest.approx(2 * PX)
    assert _v(t, "mining_on_natural_ha", ecosystem="forest", year_from=2000, year_to=2020) == pytest.approx(8 * PX)


def test_riparian_share_and_river_km(result):
    t = result.table
    # riparian pixels have centres within 50 m of y = -105: rows 2-4; only B's row 4 (2 px) is mining
    assert _v(t, "riparian_mining_ha", year=2020) == pytest.approx(2 * PX)
    assert _v(t, "riparian_mining_pct", year=2020) == pytest.approx(100 * 2 / 10)
    # 2010: 60 m around A reaches the river (45 m below A) over x in [30 - 39.69, 90 + 39.69]; around B
    # (15 m away) over [120 - 58.09, 180 + 58.09]; the flickering pixel is 75 m away: x from 0 to 238.09 m
    expected_km = (180 + math.sqrt(60**2 - 15**2)) / 1000
    assert _v(t, "river_km_affected", year=2010) == pytest.approx(expected_km, rel=1e-4)
    # 2020: C (45 m away) adds [240 - 39.69, 300 + 39.69]: the whole 300 m river
    assert _v(t, "river_km_affected", year=2020) == pytest.approx(0.300, rel=1e-5)
    assert _v(t, "river_km_affected", zone_layer="halves", zone="west", year=2020) == pytest.approx(0.150, rel=1e-5)
    assert _v(t, "median_distance_to_river_m", year=2020) == pytest.approx(45)  # A 45, B 15, C 45


def test_sites_and_zones(result):
    t = result.table
    assert _v(t, "mining_sites", year=2010) == 3 and _v(t, "mining_sites", year=2020) == 3
    # B straddles the border: it counts in both halves
    assert _v(t, "mining_sites", zone_layer="halves", zone="west", year=2020) == 2
    assert _v(t, "mining_sites", zone_layer="halves", zone="east", year=2020) == 2
    assert _v(t, "mining_ha", zone_layer="halves", zone="west", year=2020) == pytest.approx(6 * PX)
    assert _v(t, "mining_ha", zone_layer="halves", zone="east", year=2020) == pytest.approx(4 * PX)
    assert _v(t, "mining_ha", zone_layer="halves", zone=mining.OUTSIDE_ZONES, year=2020) == 0
    sites = result.features[mining.SITE_LAYER]
    s2020 = sites[sites.year == 2020].sort_values("site_id")
    assert s2020["area_ha"].round(4).tolist() == [0.36, 0.36, 0.18]
    assert s2020["first_year_seen"].tolist() == [2010, 2010, 2020]
    assert s2020["distance_to_river_m"].round(6).tolist() == [45, 15, 45]
    assert s2020["category"].tolist() == ["I", "II", "IV"]  # B: 2 px II, 2 px IV -> the more formal one
    assert s2020["was_natural"].tolist() == [True, True, True]
    assert s2020["halves"].tolist() == ["west", "east; west", "east"]  # equal overlaps: zone name order


def test_formalization_categories(result):
    t = result.table
    got = [_v(t, f"mining_category_{c}_ha", year=2020) / PX for c in ("I", "II", "III", "IV")]
    assert got == pytest.approx([4, 2, 0, 4])
    got = [_v(t, f"mining_category_{c}_ha", year=2010) / PX for c in ("I", "II", "III", "IV")]
    assert got == pytest.approx([4, 2, 1, 2])  # the flickering pixel is under surface rights only


def test_two_sources_and_their_agreement(result):
    t = result.table
    # the AMW-like layer starts in 2018: 2000 and 2010 are not observed by it
    assert t[(t.metric == "mining_ha_source_amw")]["year"].dropna().unique().tolist() == [2020]
    assert _v(t, "mining_ha_source_amw", year=2020) == pytest.approx(6 * PX)
    assert _v(t, "mining_ha_source_landcover", year=2020) == pytest.approx(10 * PX)
    assert _v(t, "mining_in_all_sources_ha", year=2020) == pytest.approx(6 * PX)
    assert _v(t, "mining_only_landcover_ha", year=2020) == pytest.approx(4 * PX)
    assert _v(t, "mining_only_amw_ha", year=2020) == 0
    assert _v(t, "mined_area_ha_source_amw", year=2020) == pytest.approx(1.8)
    assert _v(t, "mined_area_ha_source_amw", zone_layer="halves", zone="east", year=2020) == pytest.approx(0.3)


def test_persistence_drops_flicker_and_unconfirmed_last_year():
    t = _run(k=2).table
    assert _v(t, "mining_ha", year=2010) == pytest.approx(8 * PX)  # the flickering pixel is gone
    assert _v(t, "mining_ha", year=2020) == pytest.approx(8 * PX)  # C, seen in the last year only, waits


def test_persistence_kernel():
    seq = np.array([1, 0, 1, 1, 0, 1], bool)[:, None, None]
    observed = np.ones(6, bool)
    assert mining.persistent(seq, observed, 2)[:, 0, 0].tolist() == [0, 0, 1, 1, 0, 0]
    assert mining.persistent(seq, observed, 1)[:, 0, 0].tolist() == seq[:, 0, 0].tolist()
    observed = np.array([0, 1, 1, 1, 1, 1], bool)  # the first year is not observed: it counts for nothing
    assert mining.persistent(seq, observed, 1)[:, 0, 0].tolist() == [0, 0, 1, 1, 0, 1]


def test_increments_count_from_their_year_on():
    grid = make_grid((2, 2))
    shapes = [(pixel_box(grid, slice(0, 1), slice(0, 2)), 2019), (pixel_box(grid, slice(0, 2), slice(0, 1)), 2018)]
    first = mining.first_year_index(shapes, [2018, 2019, 2020], cumulative=True, transform=grid.transform, shape=(2, 2))
    # (0,0) in both -> 2018 (index 1); (0,1) only in 2019's layer -> index 2; (1,0) 2018; (1,1) never
    assert first.tolist() == [[1, 2], [1, 0]]
    later = mining.first_year_index([(pixel_box(grid, slice(0, 2), slice(0, 2)), 2021)], [2018, 2019, 2020],
                                    cumulative=True, transform=grid.transform, shape=(2, 2))
    assert not later.any()  # after the last configured year


@pytest.mark.parametrize("chunks", [(3, 4), (2, 3), (4, 7)])
def test_same_numbers_at_any_chunking(result, chunks):
    other = _run(chunks=chunks)
    pd.testing.assert_frame_equal(other.table, result.table)
    a = result.features[mining.SITE_LAYER]
    b = other.features[mining.SITE_LAYER]
    assert a.geometry.normalize().geom_equals_exact(b.geometry.normalize(), 1e-9).all()


def test_without_land_cover_uses_the_layers_and_says_what_is_missing():
    out = _run(with_landcover=False)
    t = out.table
    assert _v(t, "mining_ha", year=2020) == pytest.approx(6 * PX)  # detection polygons stand in for the footprint
    assert "mining_on_natural_ha" not in set(t.metric)
    assert any("mining_on_natural_ha" in item["metric"] for item in out.not_computed)


def test_land_cover_on_disk_but_not_a_source():
    """landcover_source: false with land cover present: the layers make the footprint, and land cover still
    tells what the mining replaced."""
    out = _run(landcover_source=False)
    t = out.table
    assert "mining_ha_source_landcover" not in set(t.metric)
    assert _v(t, "mining_ha", year=2020) == pytest.approx(6 * PX) == _v(t, "mining_ha_source_amw", year=2020)
    sites = out.features[mining.SITE_LAYER]
    assert len(sites) and sites["was_natural"].notna().all()  # from the land cover of the first year
    # with persistence 2, the layer's one observed year (2020) confirms nothing
    assert _v(_run(k=2, landcover_source=False).table, "mining_ha", year=2020) == 0


def test_yearly_footprint_layers_count_in_their_own_year_only():
    """A layer of whole yearly footprints (cumulative_increments: false): a 2010 polygon is mining in 2010
    only; with increments the same polygon also counts in 2020."""
    grid = make_grid((2, 2))
    shapes = [(pixel_box(grid, slice(0, 1), slice(0, 1)), 2010), (pixel_box(grid, slice(1, 2), slice(1, 2)), 2020)]
    bits = mining.year_bits(shapes, YEARS, cumulative=False, transform=grid.transform, shape=(2, 2))
    assert bits.tolist() == [[0b010, 0], [0, 0b100]]
    bits = mining.year_bits(shapes, YEARS, cumulative=True, transform=grid.transform, shape=(2, 2))
    assert bits.tolist() == [[0b110, 0], [0, 0b100]]
