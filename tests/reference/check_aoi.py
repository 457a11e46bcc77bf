"""Checks an AOI mosaic's class map against the AOI polygon and single-scene runs.

usage: check_aoi.py AOI.geojson MOSAIC.classes.tif A.classes.tif B.classes.tif

Prints JSON: the grid, how many pixels inside/outside the polygon are nodata, and in the
zones only scene A (or only B) covers, the share of pixels where the mosaic agrees with the
run on that scene alone (rasterio + numpy, independent of eoinfer).
"""

import json
import sys

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.warp import transform_geom

aoi, mosaic, a_path, b_path = sys.argv[1:5]
# Densified like eoinfer does (a point every 0.01 degree) so edges stay true in UTM.
geom = json.load(open(aoi))["features"][0]["geometry"]
geom = shapely.geometry.mapping(shapely.segmentize(shapely.geometry.shape(geom), 0.01))
with rasterio.open(mosaic) as r:
    m = r.read(1)
    crs = r.crs.to_string()
    transform = r.transform
    inside = rasterize(
        [(transform_geom("EPSG:4326", r.crs, geom), 1)],
        out_shape=m.shape,
        transform=transform,
        fill=0,
    ).astype(bool)
a = rasterio.open(a_path).read(1)
b = rasterio.open(b_path).read(1)
a_only = (a != 255) & (b == 255) & inside
b_only = (b != 255) & (a == 255) & inside
print(
    json.dumps(
        {
            "crs": crs,
            "origin": [transform.c, transform.f],
            "pixel": [transform.a, transform.e],
            "shape": list(m.shape),
            "inside": int(inside.sum()),
            "inside_nodata": int((m[inside] == 255).sum()),
            "outside": int((~inside).sum()),
            "outside_valid": int((m[~inside] != 255).sum()),
            "a_only": int(a_only.sum()),
            "a_only_agree": float((m[a_only] == a[a_only]).mean()),
            "b_only": int(b_only.sum()),
            "b_only_agree": float((m[b_only] == b[b_only]).mean()),
        }
    )
)
