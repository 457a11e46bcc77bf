"""Benchmark (not a test): milliseconds per 128 x 128 px tile for OlmoEarth encoders, eoinfer
end to end versus a PyTorch sliding-window script over the same pixels, written the way
rslearn runs the model (batched, torch.no_grad, same thread count).

The scene is the real 5-date Sentinel-2 series in ../shared/scenes (Slovenia, 100 x 101 px),
tiled by a VRT to 512 x 512 px, for T = 1 and T = 12 (the 5 dates repeated with later dates).
Models: the manifests given (default: the committed v1 Nano and, when `make test-export` has
run, v1 Tiny from .cache/olmoearth-export). Contenders alternate (A B A B ...), median of 3.

usage: .venv-export/bin/python models/olmoearth/bench.py [--threads 2] [--batch 8] [--repeats 3]
       [--steps 1,12] [manifest ...]

Measured on this 2-core machine (eoinfer's time includes process start, reading, writing the
COG and GeoParquet; PyTorch's only the model loop on pixels already in memory):
| model | T | eoinfer end to end (ms/tile) | PyTorch (ms/tile) | speed-up |
| v1 nano | 1 | 118.2 | 88.0 | 0.74x |
| v1 nano | 12 | 8375.5 | 10152.4 | 1.21x |
| v1 tiny | 1 | 623.0 | 676.5 | 1.09x |
| v1 tiny | 12 | 18256.8 | 18597.9 | 1.02x |  (--size 256 --repeats 1)
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

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export  # noqa: E402  (the same wrapper and model construction as the export)

from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize import Normalizer  # noqa: E402
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERIES = REPO.parent / "shared/scenes/s2_l1c_timeseries_eolearn_slovenia_101x100"
DATES = ["20150711", "20150731", "20150820", "20150830", "20150909"]
SIZE, TILE = 512, 128


def mosaic(dir_: Path, steps: int) -> list[tuple[int, int, int]]:
    """`steps` dated VRTs, each tiling one real date's 13-band file over SIZE x SIZE px."""
    dir_.mkdir(parents=True, exist_ok=True)
    dates = []
    for t in range(steps):
        src = SERIES / f"S2_L1C_{DATES[t % len(DATES)]}_13band.tif"
        y, m, d = 2015 + t // 12, 1 + t % 12, 15
        dates.append((d, m, y))
        bands = []
        for b in range(1, 14):
            srcs = "".join(
                f'<SimpleSource><SourceFilename>{src}</SourceFilename><SourceBand>{b}</SourceBand>'
                f'<SrcRect xOff="0" yOff="0" xSize="100" ySize="100"/><DstRect xOff="{x}" yOff="{yy}" xSize="100" ySize="100"/></SimpleSource>'
                for yy in range(0, SIZE, 100)
                for x in range(0, SIZE, 100)
            )
            name = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"][b - 1]
            bands.append(f'<VRTRasterBand dataType="Float32" band="{b}"><Description>{name}</Description>{srcs}</VRTRasterBand>')
        xml = (
            f'<VRTDataset rasterXSize="{SIZE}" rasterYSize="{SIZE}"><SRS>EPSG:32633</SRS>'
            f"<GeoTransform>465180, 10, 0, 5080250, 0, -10</GeoTransform>{''.join(bands)}</VRTDataset>"
        )
        (dir_ / f"series_{y:04d}{m:02d}{d:02d}.vrt").write_text(xml)
    return dates


def pixels(dir_: Path, version: str) -> np.ndarray:
    """The same pixels eoinfer reads, normalised: [T, H, W, 12]."""
    out = []
    for vrt in sorted(dir_.glob("series_*.vrt")):
        tif = vrt.with_suffix(".tif")
        subprocess.run(["gdal_translate", "-q", "-co", "INTERLEAVE=BAND", str(vrt), str(tif)], check=True)
        a = tifffile.imread(tif)  # [13, H, W], reflectance
        names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
        x = np.stack([a[names.index(b)] * 10000.0 for b in export.S2_BANDS], axis=-1).astype(np.float32)
        out.append(x)
    raw = np.stack(out, axis=2)  # H, W, T, C
    norm = Normalizer(std_multiplier=2.0, model_type="v1" if version == "v1" else version)
    return norm.normalize(Modality.SENTINEL2_L2A, raw).astype(np.float32)


def starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along an edge of n px: stride tile - overlap, the last tile shifted inward."""
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, tile - overlap))
    return s + [n - tile]


def torch_run(model, x: np.ndarray, dates, batch: int, tile: int | None = None, overlap: int = 0) -> float:
    """Sliding window (default: TILE px, no overlap), batched, no_grad: seconds."""
    TILE = tile or globals()["TILE"]
    h, w = x.shape[:2]
    windows = [(r, c) for r in starts(h, TILE, overlap) for c in starts(w, TILE, overlap)]
    ts = export.timestamps_for([(d, m, y) for d, m, y in dates], 1)
    out = np.zeros((model.encoder.embedding_size if hasattr(model.encoder, "embedding_size") else 1,), np.float32)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            chunk = windows[i : i + batch]
            xb = torch.from_numpy(np.stack([x[r : r + TILE, c : c + TILE] for r, c in chunk]))
            feats = model(xb, ts.repeat(len(chunk), 1, 1))
            out = feats.numpy()
    del out
    return time.perf_counter() - t0


def eoinfer_run(manifest: Path, scene: Path, threads: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [str(REPO / "target/release/eoinfer"), "predict", "--model", str(manifest), "--scene", str(scene), "--out", out,
             "--tile-size", str(TILE), "--overlap", "0", "--batch-size", str(batch), "--threads", str(threads)],
            check=True, capture_output=True,
        )
        return time.perf_counter() - t0


def main() -> None:
    global SIZE
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", default="1,12", help="time steps to measure, comma-separated")
    p.add_argument("--size", type=int, default=512, help="scene edge in pixels (a multiple of 128)")
    p.add_argument("manifests", nargs="*")
    args = p.parse_args()
    SIZE = args.size
    manifests = [Path(m) for m in args.manifests] or [
        m for m in [HERE / "olmoearth-v1-nano.json", REPO / ".cache/olmoearth-export/olmoearth-v1-tiny.json"] if m.exists()
    ]
    torch.set_num_threads(args.threads)
    tiles = (SIZE // TILE) ** 2
    print(f"# {tiles} tiles of {TILE} x {TILE} px per run, batch {args.batch}, {args.threads} threads; ms per tile, median of {args.repeats}")
    print("| model | T | eoinfer end to end | PyTorch sliding window | speed-up |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for manifest in manifests:
            doc = json.loads(manifest.read_text())
            props = doc["properties"]
            version, size = props["eoinfer:model_version"], props["eoinfer:model_size"]
            encoder, band_sets = export.build_encoder(size, version, None, props.get("eoinfer:seed") or 0)
            model = export.EmbeddingEncoder(encoder, props["eoinfer:patch_size"], False, band_sets).eval()
            for steps in [int(t) for t in args.steps.split(",")]:
                scene = Path(d) / f"{manifest.stem}-T{steps}"
                dates = mosaic(scene, steps)
                x = pixels(scene, version)
                for f in scene.glob("*.tif"):
                    f.unlink()
                e, t = [], []
                for _ in range(args.repeats):
                    e.append(eoinfer_run(manifest, scene, args.threads, args.batch))
                    t.append(torch_run(model, x, dates, args.batch))
                me, mt = statistics.median(e) * 1000 / tiles, statistics.median(t) * 1000 / tiles
                print(f"| {version} {size} | {steps} | {me:.1f} | {mt:.1f} | {mt / me:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
