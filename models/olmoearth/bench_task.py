"""Benchmark (not a test): milliseconds per km² for Ai2's OlmoEarth task models (issue 15) on
CPU, eoinfer end to end versus a PyTorch loop that calls the rslearn model's own forward
(`model(ModelContext)`, rslearn_export.py's `rslearn_reference`) on the same tiles, batched as
rslearn's predict batches them, torch.no_grad, the same thread count.

Input: the real WorldCereal 12-month series (../shared/scenes/s2_s1_monthly_worldcereal_*,
100 x 100 px at 10 m = 1 km²), its window tiled by VRTs to --size x --size px (default 200 = 4 km²): one S2 VRT per
month (bands B02..B12 from the NetCDF, as tests/common's `worldcereal_s2`) and one S1 VRT per
month over a 100 x 100 px dB GeoTIFF (dB = 20 log10(v) - 83, bands vv, vh, as `worldcereal_s1`).

Models: the manifests given (default: the committed Nano stand-ins task-lfmc-nano and
task-mangrove-nano). The PyTorch side builds the same rslearn LightningModule as the export
(rslearn_export.py's `apply_variant` + `build_module`: the manifest's config, variant and seed),
fp32 (the OlmoEarth bf16 autocast off, as for the parity reference), and runs it over
eoinfer's tiles (tile and overlap from the manifest; eoinfer's blended grid: stride tile -
overlap, the last tile shifted inward) on the normalised tensors already in memory (read by
export.py's `read_golden_window`, tiled like the VRTs, time steps in the model's order).
Its time is the loop only (stacking the tiles, the forward); eoinfer's is the whole process
(start, reading, normalising, inference, blending, writing the outputs, exit).

Batch: the configuration's `data.init_args.batch_size` (rslearn's DataModule uses it for
predict too): lfmc 32, mangrove 128, for both contenders (eoinfer --batch-size), unless
--batch is given. Contenders alternate (eoinfer, PyTorch, eoinfer, ...), median of --repeats.

usage: .venv-rslearn/bin/python models/olmoearth/bench_task.py [--threads 2] [--size 200]
       [--repeats 3] [--batch N] [--eoinfer /tmp/eoinfer-bench] [--ort-lib PATH] [manifest ...]

Measured (2026-11-29, 2 shared cores, --size 200 --repeats 3; BENCHMARKS.md "Ai2 task models on
CPU (issue 15)" has the runs and caveats):
| model | area km² | tiles | batch | eoinfer ms/km² | PyTorch ms/km² | PyTorch / eoinfer |
| task-lfmc-nano | 4 | 49 (32 px, overlap 4) | 32 | 8286 | 11325 | 1.37x |
| task-mangrove-nano | 4 | 10000 (2 px, overlap 0) | 128 | 5705 | 16890 | 2.96x |
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import rslearn_export as rx  # noqa: E402  (builds the rslearn module exactly as the export does)

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import rasterio.transform  # noqa: E402
import tifffile  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

oe = rx.oe_export
# export.py replaces torch.einsum by a dtype-casting wrapper for ONNX Runtime; the PyTorch
# contender runs rslearn's code with torch's own einsum.
torch.einsum = oe._einsum

NC = oe.GOLDEN_SCENE
SRC = 100  # the WorldCereal window, px
S2_NC_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
GEO = "<SRS>EPSG:32631</SRS><GeoTransform>664000, 10, 0, 5612120, 0, -10</GeoTransform>"


def tiled_sources(path: str, band: int, size: int) -> str:
    return "".join(
        f"<SimpleSource><SourceFilename>{path}</SourceFilename><SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{SRC}" ySize="{SRC}"/><DstRect xOff="{x}" yOff="{y}" xSize="{SRC}" ySize="{SRC}"/></SimpleSource>'
        for y in range(0, size, SRC)
        for x in range(0, size, SRC)
    )


def make_scene(scene: Path, src: Path, size: int, with_s1: bool, dates: list) -> None:
    """Monthly VRTs tiling the 100 x 100 px window over size x size px (S2, and S1 in dB)."""
    scene.mkdir(parents=True, exist_ok=True)
    src.mkdir(parents=True, exist_ok=True)
    for t, (day, month, year) in enumerate(dates):
        stamp = f"{year:04d}{month:02d}{day:02d}"
        bands = "".join(
            f'<VRTRasterBand dataType="UInt16" band="{i + 1}"><Description>{b}</Description><NoDataValue>32769</NoDataValue>'
            f"<Offset>0</Offset><Scale>0.0001</Scale>{tiled_sources(f'NETCDF:&quot;{NC}&quot;:S2-L2A-{b}', t + 1, size)}</VRTRasterBand>"
            for i, b in enumerate(S2_NC_BANDS)
        )
        (scene / f"worldcereal_{stamp}.vrt").write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">{GEO}{bands}</VRTDataset>\n')
        if not with_s1:
            continue
        db = src / f"s1_{stamp}.tif"
        with tempfile.TemporaryDirectory() as d:
            layers = []
            for b in ["VV", "VH"]:
                out = Path(d) / f"{b}.tif"
                subprocess.run(["gdal_translate", "-q", "-ot", "Float32", "-b", str(t + 1), "-srcwin", "0", "0", str(SRC), str(SRC),
                                f'NETCDF:"{NC}":S1-SIGMA0-{b}', str(out)], check=True)
                layers.append(20.0 * np.log10(tifffile.imread(out).astype(np.float64)) - 83.0)
        with rasterio.open(db, "w", driver="GTiff", width=SRC, height=SRC, count=2, dtype="float32", crs="EPSG:32631",
                           transform=rasterio.transform.from_origin(664000, 5612120, 10, 10)) as f:
            f.write(np.stack(layers).astype(np.float32))
            f.descriptions = ("vv", "vh")
        bands = "".join(
            f'<VRTRasterBand dataType="Float32" band="{i + 1}"><Description>{b}</Description>{tiled_sources(str(db), i + 1, size)}</VRTRasterBand>'
            for i, b in enumerate(["vv", "vh"])
        )
        (scene / f"worldcereal_s1_{stamp}.vrt").write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">{GEO}{bands}</VRTDataset>\n')


def positions(length: int, tile: int, overlap: int) -> list[int]:
    """eoinfer's blended grid along one axis (src/grid.rs `blended_positions`)."""
    out = [0]
    if length <= tile:
        return out
    pos, last = 0, length - tile
    while pos < last:
        pos = min(pos + tile - overlap, last)
        out.append(pos)
    return out


class Contender:
    """One manifest: its rslearn module, its tiles and inputs, its eoinfer arguments."""

    def __init__(self, manifest: Path, size: int, batch: int | None, workdir: Path) -> None:
        props = json.loads(manifest.read_text())["properties"]
        tm = props["eoinfer:task_model"]
        self.manifest = manifest
        self.name = manifest.stem
        cfg_path = Path(tm["config"])
        if not cfg_path.is_absolute():
            cfg_path = REPO / cfg_path
        cfg = yaml.safe_load(rx.substitute_env_vars_in_string(cfg_path.read_text()))
        dataset_path = cfg_path.parent / "dataset.json"
        dataset = json.loads(dataset_path.read_text()) if dataset_path.exists() else None
        rx.apply_variant(cfg, tm.get("variant"))
        spec = rx.input_spec(cfg, dataset)
        self.modalities = list(spec["modalities"])
        module, _ = rx.build_module(cfg, props["eoinfer:seed"] if props["eoinfer:random_weights"] else 0)
        if not props["eoinfer:random_weights"]:
            raise SystemExit(f"{manifest}: a checkpoint model; this benchmark builds seeded random weights only")
        self.net = module.model.eval()
        rx.set_autocast(self.net, None)  # fp32, as eoinfer's graph (rslearn's CPU bf16 autocast fails in the decoder)
        _, _, self.task = rx._unwrap(self.net)
        self.batch = batch or int(cfg["data"]["init_args"]["batch_size"])
        self.batch_from = "--batch" if batch else "model.yaml data.init_args.batch_size"
        self.tile, self.overlap = props["eoinfer:tile_size"], props["eoinfer:overlap"]
        temporal = props["eoinfer:temporal"]
        self.steps = temporal["time_steps"]
        # Monthly composites break a contract of shorter periods (lfmc: 14 days).
        self.relax = (temporal.get("period_days") or 30) < 28
        with_s1 = "sentinel1" in spec["modalities"]
        window = oe.read_golden_window(with_s1, "v1", SRC)
        months = rx.golden_months(temporal, self.steps)
        self.scene = workdir / self.name / "months"
        make_scene(self.scene, workdir / self.name / "src", size, with_s1, window["dates"])
        reps = -(-size // SRC)
        self.x = {}
        for m in self.modalities:
            a = window[rx.INPUT_NAMES[m]][:, :, months]
            self.x[m] = np.ascontiguousarray(np.tile(a, (reps, reps, 1, 1))[:size, :size])
        rows = positions(size, self.tile, self.overlap)
        self.tiles = [(r, c) for r in rows for c in rows]
        self.km2 = size * size * 100 / 1e6

    def torch_run(self) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(self.tiles), self.batch):
                chunk = self.tiles[i : i + self.batch]
                xb = [torch.from_numpy(np.stack([self.x[m][r : r + self.tile, c : c + self.tile] for r, c in chunk])) for m in self.modalities]
                out = rx.rslearn_reference(self.net, self.modalities, xb, self.task)
        del out
        return time.perf_counter() - t0

    def eoinfer_run(self, exe: str, ort_lib: str, threads: int) -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as out:
            cmd = [exe, "predict", "--model", str(self.manifest), "--scene", str(self.scene), "--out", out, "--ort-lib", ort_lib,
                   "--accept-out-of-range", "--threads", str(threads), "--batch-size", str(self.batch), "--json"]
            if self.relax:
                cmd.append("--relax-temporal-contract")
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if p.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
            return dt, tile_count(json.loads(p.stdout))


def tile_count(summary) -> int:
    """The number of tiles eoinfer reports (the first integer `tiles` in its summary), or -1."""
    stack = [summary]
    while stack:
        v = stack.pop(0)
        if isinstance(v, dict):
            t = v.get("tiles")
            if isinstance(t, int):
                return t
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return -1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=200, help="scene edge in pixels (10 m): 200 = 4 km², 400 = 16 km²")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, help="tiles per batch for both (default: each configuration's data.init_args.batch_size)")
    p.add_argument("--eoinfer", default="/tmp/eoinfer-bench" if Path("/tmp/eoinfer-bench").exists() else str(REPO / "target/release/eoinfer"))
    p.add_argument("--ort-lib", default=str(REPO / "third_party/onnxruntime/libonnxruntime.so.1.31.1"))
    p.add_argument("manifests", nargs="*")
    args = p.parse_args()
    manifests = [Path(m) for m in args.manifests] or [HERE / "task-lfmc-nano.json", HERE / "task-mangrove-nano.json"]
    torch.set_num_threads(args.threads)
    print(f"# eoinfer {args.eoinfer} (end to end, process start to exit) vs rslearn's forward in PyTorch {torch.__version__} "
          f"(the loop only); {args.threads} threads; {args.size} x {args.size} px; median of {args.repeats}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for manifest in manifests:
            onnx = manifest.with_suffix(".onnx")
            if not onnx.exists():
                print(f"# skipped {manifest}: {onnx} is missing", flush=True)
                continue
            c = Contender(manifest, args.size, args.batch, Path(d))
            e, t, n = [], [], None
            for i in range(args.repeats):
                dt, n = c.eoinfer_run(args.eoinfer, args.ort_lib, args.threads)
                e.append(dt)
                t.append(c.torch_run())
                print(f"# {c.name} repeat {i + 1}: eoinfer {e[-1]:.2f} s, PyTorch {t[-1]:.2f} s", file=sys.stderr, flush=True)
            if n not in (-1, len(c.tiles)):
                print(f"# WARNING {c.name}: eoinfer reports {n} tiles, the PyTorch loop runs {len(c.tiles)}", flush=True)
            me, mt = statistics.median(e) * 1000 / c.km2, statistics.median(t) * 1000 / c.km2
            rows.append(f"| {c.name} | {c.km2:g} | {len(c.tiles)} ({c.tile} px, overlap {c.overlap}) | {c.batch} | {me:.0f} | {mt:.0f} | {mt / me:.2f}x |")
            print(f"# {c.name}: T = {c.steps}, modalities {c.modalities}, batch {c.batch} ({c.batch_from})"
                  + (", eoinfer --relax-temporal-contract" if c.relax else "")
                  + f"; eoinfer {[round(v, 2) for v in e]} s, PyTorch {[round(v, 2) for v in t]} s", flush=True)
            del c
    print("| model | area km² | tiles | batch | eoinfer ms/km² | PyTorch ms/km² | PyTorch / eoinfer |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
