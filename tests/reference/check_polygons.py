"""Reads eoinfer's polygons as an analyst would (geopandas) and checks them against the class
map: CRS, columns, total area per class == pixel count x pixel area (exactly, before
simplification), and no two polygons of one class share an edge (regions are dissolved, also
across tile boundaries). Prints a JSON report.

usage: check_polygons.py CLASSES.tif POLYGONS [POLYGONS ...]
"""
import json
import sys

import geopandas as gpd
import numpy as np
import rasterio
import shapely


def main() -> None:
    classes_path, *vector_paths = sys.argv[1:]
    with rasterio.open(classes_path) as src:
        arr = src.read(1)
        px_area = abs(src.transform.a * src.transform.e)
        epsg = src.crs.to_epsg()
    counts = {int(c): int(n) for c, n in zip(*np.unique(arr[arr != 255], return_counts=True))}
    report = {"epsg": epsg, "pixel_counts": counts, "files": {}}
    for path in vector_paths:
        df = gpd.read_file(path) if not path.endswith(".parquet") else gpd.read_parquet(path)
        assert df.crs is not None and df.crs.to_epsg() == epsg, (path, df.crs)
        assert {"class", "class_name", "area_m2"} <= set(df.columns), df.columns
        area = df.groupby("class")["geometry"].apply(lambda g: g.area.sum()).to_dict()
        attr = df.groupby("class")["area_m2"].sum().to_dict()
        for c, n in counts.items():
            assert abs(area.get(c, 0.0) - n * px_area) <= 1e-6 * n * px_area + 1e-6, (path, c, area.get(c), n * px_area)
            assert abs(attr.get(c, 0.0) - n * px_area) <= 1e-6 * n * px_area + 1e-6, (path, c, attr.get(c))
        # Dissolved: no two polygons of the same class share a boundary of positive length.
        geoms = df.geometry.values
        tree = shapely.STRtree(geoms)
        pairs = tree.query(geoms, predicate="touches")
        shared = 0
        for i, j in zip(*pairs):
            if i < j and df["class"].iat[i] == df["class"].iat[j]:
                if shapely.intersection(geoms[i], geoms[j]).length > 0:
                    shared += 1
        report["files"][path] = {
            "polygons": len(df), "area_by_class": {int(k): float(v) for k, v in area.items()},
            "same_class_shared_edges": shared, "names": sorted(df["class_name"].unique().tolist()),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
