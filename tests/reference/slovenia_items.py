"""STAC Items for the Slovenia series (scenes/s2_l1c_timeseries_eolearn_slovenia_101x100), to load
into the test STAC API (tests/reference/stac_api.py).

    python3 tests/reference/slovenia_items.py [--per-band DIR] OUTDIR ASSET_BASE_URL [DATES...]

With --per-band DIR each band is also written as its own GeoTIFF into DIR
(S2_L1C_<date>_<band>.tif, by gdal_translate -b) and each Item has one asset per band, as
Sentinel-2 Items in public catalogues do (ASSET_BASE_URL then serves DIR).

Writes OUTDIR/collection.json (id `s2-l1c-slovenia`) and OUTDIR/items.ndjson: one Item per date
(YYYYMMDD; default: every S2_L1C_<date>_13band.tif in the scene folder), id `S2_L1C_<date>`, the
footprint in lon/lat, `datetime` from the file's DATETIME metadata, `eo:cloud_cover` from its
CLOUD_FRACTION_s2cloudless metadata (percent), and one asset `data` whose href is
ASSET_BASE_URL/S2_L1C_<date>_13band.tif (13 bands B01..B12). Geometry and metadata come from
GDAL's Python bindings when present, else from `gdalinfo -json`. The scene folder is
$EOINFER_SLOVENIA_DIR, else scenes/s2_l1c_timeseries_eolearn_slovenia_101x100 beside this
repository, else /work/shared/scenes/...; standard library only.
"""

import datetime as dt
import json
import os
import re
import subprocess
import sys

COLLECTION = "s2-l1c-slovenia"
SCENE = "s2_l1c_timeseries_eolearn_slovenia_101x100"
# Sentinel-2 MSI bands in the files' order: name, common name, centre wavelength (um), GSD (m).
BANDS = [
    ("B01", "coastal", 0.443, 60), ("B02", "blue", 0.490, 10), ("B03", "green", 0.560, 10),
    ("B04", "red", 0.665, 10), ("B05", "rededge071", 0.705, 20),
    ("B06", "rededge075", 0.740, 20), ("B07", "rededge078", 0.783, 20),
    ("B08", "nir", 0.842, 10), ("B8A", "nir08", 0.865, 20), ("B09", "nir09", 0.945, 60),
    ("B10", "cirrus", 1.375, 60), ("B11", "swir16", 1.610, 20), ("B12", "swir22", 2.190, 20),
]
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
]


def scene_dir():
    if os.environ.get("EOINFER_SLOVENIA_DIR"):
        return os.environ["EOINFER_SLOVENIA_DIR"]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for d in (os.path.join(repo, "scenes", SCENE), os.path.join("/work/shared/scenes", SCENE)):
        if os.path.isdir(d):
            return d
    sys.exit(f"slovenia_items: no {SCENE} folder (set EOINFER_SLOVENIA_DIR)")


def describe(path):
    """(footprint ring in lon/lat, metadata dict, band descriptions, size, geotransform, EPSG)."""
    try:
        from osgeo import gdal, osr
    except ImportError:
        info = json.loads(subprocess.run(["gdalinfo", "-json", path], check=True,
                                         stdout=subprocess.PIPE, text=True).stdout)
        ring = info["wgs84Extent"]["coordinates"][0]
        epsg = info.get("stac", {}).get("proj:epsg")
        return (ring, info["metadata"][""], [b.get("description", "") for b in info["bands"]],
                info["size"], info["geoTransform"], epsg)
    gdal.UseExceptions()
    ds = gdal.Open(path)
    gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
    src = osr.SpatialReference(wkt=ds.GetProjection())
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    tr = osr.CoordinateTransformation(src, dst)
    ring = []
    for px, py in ((0, 0), (0, h), (w, h), (w, 0), (0, 0)):  # counter-clockwise, as gdalinfo
        x, y = gt[0] + px * gt[1] + py * gt[2], gt[3] + px * gt[4] + py * gt[5]
        lon, lat, _ = tr.TransformPoint(x, y)
        ring.append([round(lon, 7), round(lat, 7)])
    src.AutoIdentifyEPSG()
    epsg = src.GetAuthorityCode(None)
    bands = [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)]
    return ring, ds.GetMetadata(), bands, [w, h], list(gt), int(epsg) if epsg else None


def per_band_assets(folder, date, base_url, outdir):
    """One single-band GeoTIFF per band in `outdir`, and an asset for each."""
    os.makedirs(outdir, exist_ok=True)
    src = os.path.join(folder, f"S2_L1C_{date}_13band.tif")
    assets = {}
    for i, (n, c, cw, _) in enumerate(BANDS, start=1):
        name = f"S2_L1C_{date}_{n}.tif"
        subprocess.run(["gdal_translate", "-q", "-b", str(i), src, os.path.join(outdir, name)],
                       check=True)
        assets[n] = {
            "href": f"{base_url.rstrip('/')}/{name}",
            "type": "image/tiff; application=geotiff",
            "title": f"{n} TOA reflectance (float)",
            "roles": ["data"],
            "bands": [{"name": n, "eo:common_name": c, "eo:center_wavelength": cw,
                       "data_type": "float32"}],
            "eo:bands": [{"name": n, "common_name": c, "center_wavelength": cw}],
        }
    return assets


def item(folder, date, base_url, now, per_band=None):
    name = f"S2_L1C_{date}_13band.tif"
    ring, md, bands, (w, h), gt, epsg = describe(os.path.join(folder, name))
    want = [b[0] for b in BANDS]
    if bands != want:
        sys.exit(f"slovenia_items: {name} has bands {bands}, not {want}")
    when = md["DATETIME"]  # 2015-07-11T10:00:08 (UTC)
    if not re.search(r"(Z|[+-]\d\d:\d\d)$", when):
        when += "Z"
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    props = {"datetime": when, "updated": now, "platform": "sentinel-2", "instruments": ["msi"],
             "constellation": "sentinel-2", "gsd": 10}
    if "CLOUD_FRACTION_s2cloudless" in md:
        props["eo:cloud_cover"] = round(float(md["CLOUD_FRACTION_s2cloudless"]) * 100, 2)
    if epsg:
        props["proj:code"] = f"EPSG:{epsg}"
    props["proj:shape"] = [h, w]
    props["proj:transform"] = [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]]
    eo_bands = [{"name": n, "common_name": c, "center_wavelength": cw} for n, c, cw, _ in BANDS]
    doc = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": EXTENSIONS,
        "id": f"S2_L1C_{date}",
        "collection": COLLECTION,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": props,
        "links": [],
        "assets": {
            "data": {
                "href": f"{base_url.rstrip('/')}/{name}",
                "type": "image/tiff; application=geotiff",
                "title": "Sentinel-2 L1C TOA reflectance, 13 bands (float)",
                "roles": ["data"],
                # STAC 1.1 `bands` and the older eo extension's `eo:bands`, same order.
                "bands": [{"name": n, "eo:common_name": c, "eo:center_wavelength": cw,
                           "data_type": "float32"} for n, c, cw, _ in BANDS],
                "eo:bands": eo_bands,
            }
        },
    }
    if per_band:
        doc["assets"] = per_band_assets(folder, date, base_url, per_band)
    return doc


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    per_band = None
    if argv[1] == "--per-band":
        per_band, argv = argv[2], [argv[0]] + argv[3:]
    outdir, base_url, dates = argv[1], argv[2], argv[3:]
    folder = scene_dir()
    if not dates:
        dates = sorted(m.group(1) for f in os.listdir(folder)
                       if (m := re.fullmatch(r"S2_L1C_(\d{8})_13band\.tif", f)))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    items = [item(folder, d, base_url, now, per_band) for d in dates]
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "items.ndjson"), "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, separators=(",", ":")) + "\n")
    bboxes = [it["bbox"] for it in items] or [[-180, -90, 180, 90]]
    times = sorted(it["properties"]["datetime"] for it in items)
    collection = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "stac_extensions": EXTENSIONS,
        "id": COLLECTION,
        "title": "Sentinel-2 L1C, Slovenia (eo-learn example, 100 x 101 px)",
        "description": "Sentinel-2 L1C TOA reflectance, 13 bands, a 1 km patch in Slovenia "
                       "(eo-learn's example time series), for eoinfer's monitor tests.",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                                  max(b[2] for b in bboxes), max(b[3] for b in bboxes)]]},
            "temporal": {"interval": [[times[0] if times else None, None]]},
        },
        "summaries": {"platform": ["sentinel-2"], "instruments": ["msi"],
                      "eo:bands": [{"name": n, "common_name": c} for n, c, _, _ in BANDS]},
        "item_assets": {"data": {"type": "image/tiff; application=geotiff", "roles": ["data"]}},
        "links": [],
    }
    with open(os.path.join(outdir, "collection.json"), "w", encoding="utf-8") as f:
        json.dump(collection, f, indent=2)
        f.write("\n")
    print(f"wrote {len(items)} items to {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
