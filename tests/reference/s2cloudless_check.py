"""s2cloudless's own Python on eoinfer's model-ready pixels, against eoinfer's outputs.

    python s2cloudless_check.py STACK.tif PROBS.tif CLASSES.tif THRESHOLD AVERAGE_OVER DILATION_SIZE
    python s2cloudless_check.py --clp CLP_CLM.tif PROBS.tif CLASSES.tif

STACK.tif: `eoinfer prepare` of the s2cloudless manifest (the 10 model bands, reflectance,
float32); PROBS.tif / CLASSES.tif: `eoinfer predict --probabilities` on the same grid. Runs
S2PixelCloudDetector(all_bands=False).get_cloud_probability_maps and get_mask_from_prob, and
prints one JSON line: pixels, max / mean absolute probability difference, mask pixels that
differ, cloud pixels of each. With --clp: eoinfer's outputs against a CLP (probability) and CLM
(mask) pair of bands, Sentinel Hub's own s2cloudless products.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import tifffile
from s2cloudless import S2PixelCloudDetector


def read(path: str) -> np.ndarray:
    """A GeoTIFF as an array, through an uncompressed copy by gdal_translate (the outputs use
    DEFLATE with the floating-point predictor, which tifffile reads only with imagecodecs)."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "plain.tif")
        subprocess.run(["gdal_translate", "-q", "-co", "COMPRESS=NONE", "-co", "INTERLEAVE=BAND",
                        path, plain], check=True)
        return tifffile.imread(plain)


def clp(clp_tif: str, probs_tif: str, classes_tif: str) -> None:
    ref = read(clp_tif)
    probs = read(probs_tif)
    got_p = probs[1].astype(np.float64)
    got_m = read(classes_tif) == 1
    diff = np.abs(got_p - ref[0].astype(np.float64))
    print(json.dumps({
        "pixels": int(got_p.size),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "mask_agree": float((got_m == (ref[1] > 0.5)).mean()),
        "cloud_eoinfer": int(got_m.sum()),
        "cloud_clm": int((ref[1] > 0.5).sum()),
    }))


def main() -> None:
    if sys.argv[1] == "--clp":
        clp(*sys.argv[2:5])
        return
    stack_tif, probs_tif, classes_tif = sys.argv[1:4]
    threshold, average_over, dilation = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    stack = read(stack_tif)  # (bands, h, w) as GDAL writes band-interleaved
    if stack.shape[0] != 10:
        stack = np.moveaxis(stack, -1, 0)
    assert stack.shape[0] == 10, stack.shape
    bands = np.moveaxis(stack, 0, -1)[None].astype(np.float32)  # (1, h, w, 10)
    det = S2PixelCloudDetector(
        threshold=threshold, average_over=average_over, dilation_size=dilation, all_bands=False
    )
    ref_p = det.get_cloud_probability_maps(bands)[0]
    ref_m = det.get_mask_from_prob(ref_p[None])[0].astype(bool)
    probs = read(probs_tif)
    if probs.shape[0] != 2:
        probs = np.moveaxis(probs, -1, 0)
    got_p = probs[1].astype(np.float64)
    got_m = read(classes_tif) == 1
    diff = np.abs(got_p - ref_p.astype(np.float64))
    print(json.dumps({
        "pixels": int(ref_p.size),
        "finite": bool(np.isfinite(got_p).all()),
        "not_finite": int((~np.isfinite(got_p)).sum()),
        "max_abs": float(np.nanmax(diff)),
        "mean_abs": float(np.nanmean(diff)),
        "mask_differ": int((got_m != ref_m).sum()),
        "cloud_eoinfer": int(got_m.sum()),
        "cloud_s2cloudless": int(ref_m.sum()),
    }))


if __name__ == "__main__":
    main()
