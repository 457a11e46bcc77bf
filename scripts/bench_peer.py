#!/usr/bin/env python3
"""The benchmark's Python peer: ukis-csmask's own `CSmask`, scripted as a user would.

Reads the scene's bands with rasterio at the model's 30 m (average resampling on read),
converts DN to reflectance, runs `CSmask` (its own 20 % overlap tiling, Tukey blending and
valid-mask buffering, the same ONNX file eoinfer runs) and writes the class map as a tiled,
DEFLATE-compressed GeoTIFF (255 where the input is nodata).

usage: bench_peer.py SCENE.tif OUT.tif [--resolution 30] [--threads N] [--batch-size B] [--level l1c]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from ukis_csmask.mask import CSmask

BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16", "B12": "swir22"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scene")
    ap.add_argument("out")
    ap.add_argument("--resolution", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--level", default="l1c")
    a = ap.parse_args()

    t0 = time.perf_counter()
    with rasterio.open(a.scene) as src:
        desc = list(src.descriptions)
        idx = [desc.index(b) + 1 for b in BANDS]
        f = a.resolution / src.res[0]
        h, w = int(round(src.height / f)), int(round(src.width / f))
        dn = src.read(idx, out_shape=(len(idx), h, w), resampling=Resampling.average)
        transform = src.transform * src.transform.scale(src.width / w, src.height / h)
        crs = src.crs
    nodata = (dn == 0).all(axis=0)
    img = np.moveaxis(dn, 0, -1).astype(np.float32)
    del dn
    img *= np.float32(1e-4)
    t_read = time.perf_counter()

    cs = CSmask(
        img=img,
        band_order=list(BANDS.values()),
        product_level=a.level,
        nodata_value=0,
        intra_op_num_threads=a.threads,
        inter_op_num_threads=1,
        batch_size=a.batch_size,
    )
    classes = cs.csm[:, :, 0].astype(np.uint8)
    classes[nodata] = 255
    t_model = time.perf_counter()

    profile = dict(
        driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=crs, transform=transform,
        nodata=255, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(a.out, "w", **profile) as dst:
        dst.write(classes, 1)
    t_end = time.perf_counter()
    print(json.dumps({"width": w, "height": h, "read_s": t_read - t0, "csmask_s": t_model - t_read,
                      "write_s": t_end - t_model, "total_s": t_end - t0}))


if __name__ == "__main__":
    main()
