"""Recomputes eoinfer's zonal statistics with numpy/rasterio over the same pixels and reads
the outputs as analysts do (geopandas, DuckDB). Prints a JSON report; exits 1 on a mismatch.

usage: check_zonal.py CLASSES.tif PROBS.tif REGIONS ZONAL_CLASSES.parquet ZONAL_CLASSES.csv ZONAL_PROBS.parquet ALL_TOUCHED(0|1)
"""
import json
import sys

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.features import rasterize


def masks(regions, src, all_touched):
    gdf = gpd.read_file(regions).to_crs(src.crs)
    for geom in gdf.geometry:
        yield rasterize([(geom, 1)], out_shape=(src.height, src.width), transform=src.transform,
                        fill=0, all_touched=all_touched, dtype="uint8").astype(bool)


def main() -> None:
    classes, probs, regions, zc_parquet, zc_csv, zp_parquet, touched = sys.argv[1:8]
    all_touched = touched == "1"
    regions_df = gpd.read_file(regions)
    zc = gpd.read_parquet(zc_parquet)
    zcsv = pd.read_csv(zc_csv)
    zp = gpd.read_parquet(zp_parquet)
    assert len(zc) == len(zp) == len(zcsv) == len(regions_df), (len(zc), len(regions_df))
    for col in regions_df.columns.drop("geometry"):
        assert col in zc.columns and col in zcsv.columns, col
    report = {"regions": len(zc), "crs": zc.crs.to_epsg(), "mismatches": []}
    with rasterio.open(classes) as src:
        arr = src.read(1)
        px_area = abs(src.transform.a * src.transform.e)
        names = ["clear", "cloud", "cloud_shadow"]
        total = {n: 0 for n in names}
        for i, m in enumerate(masks(regions, src, all_touched)):
            valid = m & (arr != 255)
            for c, n in enumerate(names):
                want = int((arr[valid] == c).sum())
                total[n] += want
                for got in (int(zc[f"count_{n}"].iat[i]), int(zcsv[f"count_{n}"].iat[i])):
                    if got != want:
                        report["mismatches"].append(["classes", i, n, got, want])
    with rasterio.open(probs) as src:
        p = src.read().astype(np.float64) * np.array(src.scales)[:, None, None] + np.array(src.offsets)[:, None, None]
        for i, m in enumerate(masks(regions, src, all_touched)):
            for b in range(src.count):
                col = f"{src.descriptions[b]}_mean"
                if m.sum() == 0:
                    continue
                want = float(p[b][m].mean())
                got = float(zp[col].iat[i])
                if abs(got - want) > 1e-9:
                    report["mismatches"].append(["probs", i, col, got, want])
    con = duckdb.connect()
    duck = con.execute(
        f"SELECT sum(area_m2_clear), sum(area_m2_cloud), sum(area_m2_cloud_shadow) FROM read_parquet('{zc_parquet}')"
    ).fetchone()
    report["duckdb_area_m2"] = list(duck)
    report["numpy_area_m2"] = [total[n] * px_area for n in names]
    report["pixel_area"] = px_area
    report["regions_with_pixels"] = int((zc["valid_pixels"] > 0).sum())
    print(json.dumps(report))
    if report["mismatches"] or any(abs(a - b) > px_area for a, b in zip(duck, report["numpy_area_m2"])):
        sys.exit(1)


if __name__ == "__main__":
    main()
