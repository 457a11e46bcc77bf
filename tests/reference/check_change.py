"""Recomputes the monitor's per-pixel change from the class maps alone, independently of
eoinfer, and compares it with what the monitor wrote.

    python check_change.py OUT MODEL [MASK_MODEL MASK_VALUE ...]

For every date of MODEL in OUT/state.sqlite (oldest first): each pixel's previous class is
the class of the newest earlier date where the pixel was valid (not nodata 255, and not one
of MASK_VALUE in MASK_MODEL's map of that date); a pixel valid now with a previous class is
compared, code from * 100 + to (0 unchanged), 65535 otherwise. Checks the change map and the
previous-valid map pixel for pixel, and per region (pixel centres inside its polygon) the
compared and changed counts and the transition matrix in the state. Prints a JSON summary.
With BASELINE=start,end in the environment, the previous class comes from the newest valid
date in that period instead.
"""

import json
import os
import sqlite3
import sys

import numpy as np
import rasterio
from rasterio.features import geometry_mask
from shapely import wkb as swkb

out, model = sys.argv[1], sys.argv[2]
mask_model = sys.argv[3] if len(sys.argv) > 3 else None
mask_values = [int(v) for v in sys.argv[4:]]
db = sqlite3.connect(f"{out}/state.sqlite")


def maps(name):
    return dict(db.execute(
        "SELECT DISTINCT date, output FROM observations WHERE model = ? ORDER BY date", (name,)))


def read(path):
    with rasterio.open(path) as d:
        return d.read(1), d.transform, d.shape


own, masks = maps(model), maps(mask_model) if mask_model else {}
regions = [(r, swkb.loads(w)) for r, w in db.execute("SELECT region, wkb FROM regions ORDER BY region")]
summary = {"dates": 0, "pixels_compared": 0, "pixels_changed": 0, "mismatches": []}
dates = sorted(own)
for i, date in enumerate(dates):
    now, transform, shape = read(own[date])
    ok = now != 255
    if mask_model:
        m, _, _ = read(masks[date])
        ok &= (m != 255) & ~np.isin(m, mask_values)
    prev = np.full(shape, 255, np.uint8)
    baseline = os.environ.get("BASELINE")
    if baseline:
        start, end = baseline.split(",")
        candidates = [d for d in dates[:i] if start <= d <= end]
    else:
        candidates = dates[max(0, i - 10):i]
    for earlier in reversed(candidates):
        if mask_model and earlier not in masks:
            continue
        c, _, _ = read(own[earlier])
        c_ok = c != 255
        if mask_model:
            m, _, _ = read(masks[earlier])
            c_ok &= (m != 255) & ~np.isin(m, mask_values)
        fill = (prev == 255) & c_ok
        prev[fill] = c[fill]
    compared = ok & (prev != 255)
    code = np.where(compared, np.where(prev == now, 0, prev.astype(np.uint32) * 100 + now), 65535)
    row = db.execute(
        "SELECT output FROM changes WHERE model = ? AND date = ? LIMIT 1", (model, date)).fetchone()
    if row is None:
        summary["mismatches"].append(f"{date}: no change row")
        continue
    got, _, _ = read(row[0])
    got_prev, _, _ = read(row[0].replace(".change.tif", ".previous.tif"))
    if not np.array_equal(got.astype(np.uint32), code):
        summary["mismatches"].append(f"{date}: change map differs in {(got != code).sum()} px")
    if not np.array_equal(got_prev, prev):
        summary["mismatches"].append(f"{date}: previous map differs in {(got_prev != prev).sum()} px")
    for region, geom in regions:
        inside = geometry_mask([geom], out_shape=shape, transform=transform, invert=True)
        sel = inside & compared
        exp_compared, exp_changed = int(sel.sum()), int((sel & (code != 0)).sum())
        r = db.execute(
            "SELECT compared, changed, matrix FROM changes WHERE model = ? AND date = ? AND region = ?",
            (model, date, region)).fetchone()
        stored = np.array(json.loads(r[2]), np.int64)
        n = int(round(len(stored) ** 0.5))
        stored = stored.reshape(n, n)
        matrix = np.zeros((n, n), np.int64)
        np.add.at(matrix, (prev[sel], now[sel]), 1)
        if (r[0], r[1]) != (exp_compared, exp_changed) or not np.array_equal(stored, matrix):
            summary["mismatches"].append(
                f"{date} {region}: state {r[0]} compared / {r[1]} changed, expected {exp_compared} / {exp_changed}")
        summary["pixels_compared"] += exp_compared
        summary["pixels_changed"] += exp_changed
    summary["dates"] += 1
print(json.dumps(summary))
