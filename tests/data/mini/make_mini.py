"""Regenerate the `mini` test landscape from real data already in the repository.

Run from the project root: `.venv/bin/python tests/data/mini/make_mini.py`. See tests/data/mini/README.md.
"""

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.windows import Window, bounds
from rasterio.windows import transform as window_transform

HERE = Path(__file__).parent
SOURCE = Path("tests/data/vilanova/mapbiomas_c8_vilanova_1985_2022.tif")
WINDOW = Window(560, 600, 160, 160)  # rows 600-759, cols 560-719: fast mining growth, a municipal border, overlapping titles
YEARS = {1985: 1, 2000: 16, 2022: 38}  # year -> band of the Vila Nova file


def main() -> None:
    with rasterio.open(SOURCE) as src:
        data = src.read(list(YEARS.values()), window=WINDOW)
        profile = src.profile | {
            "width": WINDOW.width, "height": WINDOW.height, "count": len(YEARS),
            "transform": window_transform(WINDOW, src.transform), "tiled": True, "blockxsize": 64,
            "blockysize": 64, "compress": "deflate",
        }
        box = shapely.box(*bounds(WINDOW, src.transform))
        crs = src.crs
    with rasterio.open(HERE / "landcover_1985_2000_2022.tif", "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(f"mapbiomas_cover_{y}" for y in YEARS)
    centre = box.centroid
    boundary = gpd.GeoDataFrame({"landscape": ["mini"]}, geometry=[centre.buffer(2200, quad_segs=16)], crs=crs)
    boundary.to_file(HERE / "boundary.gpkg", driver="GPKG")
    area = box.buffer(500)
    municipalities = gpd.read_file("data/raw/lourenco/ibge_municipios_amapa.shp")
    titles = gpd.read_file("data/raw/lourenco/anm_sigmine_amapa_2021.gpkg", layer="sigmine_AP_2021_poly")
    for name, frame, keep in (("municipalities", municipalities, ["NM_MUN"]),
                              ("mining_titles", titles, ["PROCESSO", "FASE", "SUBS"])):
        local_area = gpd.GeoSeries([area], crs=crs).to_crs(frame.crs).iloc[0]
        subset = frame[frame.intersects(local_area)].copy()
        subset["geometry"] = subset.geometry.make_valid().intersection(local_area)
        subset[keep + ["geometry"]].to_file(HERE / "zones.gpkg", layer=name, driver="GPKG")
    for name, path in (("amw", "data/raw/lourenco/amw_mining_amapa_2018_2025q3.geojson"),
                       ("rivers", "data/raw/lourenco/ffr_river_segments_lourenco_vilanova.gpkg")):
        frame = gpd.read_file(path)
        local_area = gpd.GeoSeries([area.buffer(3000)], crs=crs).to_crs(frame.crs).iloc[0]
        subset = frame[frame.intersects(local_area)]
        subset.to_file(HERE / f"{name}.gpkg", driver="GPKG")
        print(name, len(subset))
    print(np.unique(data, return_counts=True))


if __name__ == "__main__":
    main()
