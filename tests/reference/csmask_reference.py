"""Runs ukis-csmask's own CSmask (the model authors' reference implementation) on a
model-ready reflectance stack written by `eoinfer prepare`, and writes its class map as raw
uint8 (rows x cols) so the Rust test can compare it pixel by pixel with `eoinfer predict`.

usage: csmask_reference.py STACK.tif BAND,BAND,... PRODUCT_LEVEL OUT.u8
(band names in the stack's band order, as ukis-csmask names them: blue, green, red, nir, swir16, swir22)
"""
import json
import sys

import numpy as np
import tifffile
from ukis_csmask.mask import CSmask


def main() -> None:
    stack_path, bands, level, out_path = sys.argv[1:5]
    order = bands.split(",")
    img = tifffile.imread(stack_path)  # (bands, rows, cols): eoinfer writes band-separate planes
    if img.ndim == 2:
        img = img[np.newaxis]
    if img.shape[0] != len(order):
        raise SystemExit(f"expected {len(order)} bands from the descriptions, found shape {img.shape}")
    img = np.ascontiguousarray(np.moveaxis(img, 0, -1)).astype(np.float32)
    invalid = ~np.isfinite(img).all(axis=2)
    img[~np.isfinite(img)] = 0.0
    csm = CSmask(img=img, band_order=order, product_level=level, nodata_value=None, batch_size=1)
    classes = csm.csm[:, :, 0].astype(np.uint8)
    classes[invalid] = 255
    classes.tofile(out_path)
    print(json.dumps({"rows": classes.shape[0], "cols": classes.shape[1], "bands": order, "model": csm.model_file}))


if __name__ == "__main__":
    main()
