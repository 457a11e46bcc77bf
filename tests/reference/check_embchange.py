"""Recomputes the monitor's per-patch embedding change from the embedding maps alone,
independently of eoinfer, and compares it with what the monitor wrote.

    python check_embchange.py OUT MODEL THRESHOLD MASK_MODEL MASK_VALUE ...

For every date of MODEL in OUT/state.sqlite (oldest first): a patch is valid where every band
is a number and no pixel of MASK_MODEL's class map of that date whose centre lies in the patch
has one of the MASK_VALUEs; each patch's previous embedding is the newest earlier valid one;
the change is 1 - cosine. Checks the distance map and the previous embeddings, and per region
(patch centres inside its polygon) the compared patches, those above THRESHOLD and the mean
distance in the state. Prints a JSON summary.
"""

import json
import sqlite3
import sys

import numpy as np
import rasterio
from rasterio.features import geometry_mask
from shapely import wkb as swkb

out, model, threshold, mask_model = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
mask_values = [int(v) for v in sys.argv[5:]]
db = sqlite3.connect(f"{out}/state.sqlite")


def maps(name):
    return dict(db.execute(
        "SELECT DISTINCT date, output FROM observations WHERE model = ? ORDER BY date", (name,)))


def vectors(path):
    with rasterio.open(path) as d:
        v = d.read(masked=False).astype(np.float64)
        for b in range(d.count):
            nd = d.nodatavals[b]
            bad = np.isnan(v[b]) if nd is None or np.isnan(nd) else (v[b] == nd)
            v[b] = v[b] * d.scales[b] + d.offsets[b]
            v[b][bad] = np.nan
        return v, d.transform, d.shape


def masked(mask_path, transform, shape):
    with rasterio.open(mask_path) as m:
        c = m.read(1)
        rows, cols = np.nonzero(np.isin(c, mask_values))
        xs, ys = rasterio.transform.xy(m.transform, rows, cols, offset="center")
    out = np.zeros(shape, bool)
    if len(rows):
        inv = ~transform
        px, py = inv * (np.asarray(xs), np.asarray(ys))
        px, py = np.floor(px).astype(int), np.floor(py).astype(int)
        ok = (px >= 0) & (py >= 0) & (px < shape[1]) & (py < shape[0])
        out[py[ok], px[ok]] = True
    return out


def valid(path, mask_path):
    v, t, shape = vectors(path)
    ok = ~np.isnan(v).any(axis=0) & ~masked(mask_path, t, shape)
    v[:, ~ok] = np.nan
    return v, t, shape


own, masks = maps(model), maps(mask_model)
regions = [(r, swkb.loads(w)) for r, w in db.execute("SELECT region, wkb FROM regions ORDER BY region")]
summary = {"dates": 0, "patches_compared": 0, "patches_changed": 0, "mismatches": []}
dates = sorted(own)
for i, date in enumerate(dates):
    now, transform, shape = valid(own[date], masks[date])
    prev = np.full(now.shape, np.nan)
    for earlier in reversed(dates[max(0, i - 10):i]):
        e, _, _ = valid(own[earlier], masks[earlier])
        fill = np.isnan(prev[0]) & ~np.isnan(e[0])
        prev[:, fill] = e[:, fill]
    num = (now * prev).sum(axis=0)
    den = np.sqrt((now * now).sum(axis=0)) * np.sqrt((prev * prev).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = 1.0 - num / den
    row = db.execute("SELECT output FROM changes WHERE model = ? AND date = ? LIMIT 1", (model, date)).fetchone()
    with rasterio.open(row[0]) as d:
        got = d.read(1).astype(np.float64)
    with rasterio.open(row[0].replace(".change.tif", ".previous.tif")) as d:
        got_prev = d.read().astype(np.float64)
    if not np.array_equal(np.isnan(got), np.isnan(dist)) or np.nanmax(np.abs(got - dist), initial=0) > 1e-5:
        summary["mismatches"].append(f"{date}: distance map differs")
    if not np.array_equal(np.isnan(got_prev), np.isnan(prev)) or np.nanmax(np.abs(got_prev - prev), initial=0) > 1e-5:
        summary["mismatches"].append(f"{date}: previous embeddings differ")
    for region, geom in regions:
        inside = geometry_mask([geom], out_shape=shape, transform=transform, invert=True)
        sel = inside & ~np.isnan(dist)
        compared, changed = int(sel.sum()), int((sel & (dist > threshold)).sum())
        r = db.execute("SELECT compared, changed, mean_distance FROM changes WHERE model = ? AND date = ? AND region = ?",
                       (model, date, region)).fetchone()
        mean_ok = (r[2] is None) if compared == 0 else abs(r[2] - dist[sel].mean()) < 1e-5
        if (r[0], r[1]) != (compared, changed) or not mean_ok:
            summary["mismatches"].append(
                f"{date} {region}: state {r[0]} compared / {r[1]} changed / mean {r[2]}, expected {compared} / {changed}")
        summary["patches_compared"] += compared
        summary["patches_changed"] += changed
    summary["dates"] += 1
print(json.dumps(summary))
