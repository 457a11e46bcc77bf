#!/usr/bin/env python3
"""PyTorch reference timing of the OlmoEarth encoder eoinfer runs through ONNX Runtime: the same
model construction as models/olmoearth/export.py (`build_encoder` + `EmbeddingEncoder`,
olmoearth-pretrain-minimal, random weights from the manifest's seed), on random inputs of
[B, tile, tile, T, 12] with fixed timestamps, under torch.no_grad, in fp32 and in bf16 autocast.

Prints one JSON object per line and (tile, dtype): {"dtype", "device", "batch", "tile", "steps",
"images_per_s", "ms_per_batch", "iters", ...}. Used by scripts/gpu-check.sh (step 8: Nano, Tiny and Base
at the tile size and batch of its eoinfer bench-model rows; step 5: Nano at 64 and 128 px); needs torch,
numpy, einops, olmoearth-pretrain-minimal (+ universal_pathlib, pathlib_abc); no network, no weights.

    python3 scripts/gpu_torch_bench.py --device cuda --size base --batch 512 --tiles 64 --dtypes fp32,bf16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1  # noqa: E402
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample  # noqa: E402

ENCODER_MODALITIES = ["sentinel2_l2a", "sentinel1", "landsat"]


class EmbeddingEncoder(torch.nn.Module):
    """Copy of models/olmoearth/export.py's EmbeddingEncoder (Sentinel-2 only): the encoder ->
    dense embedding map [B, D, H/p, W/p], tokens mean-pooled over time and band sets."""

    def __init__(self, encoder: torch.nn.Module, patch_size: int, s2_band_sets: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.patch_size = patch_size
        self.s2_band_sets = s2_band_sets

    def forward(self, s2: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        fields = {
            "timestamps": timestamps,
            "sentinel2_l2a": s2,
            "sentinel2_l2a_mask": torch.zeros_like(s2[..., : self.s2_band_sets], dtype=torch.int32),
        }
        out = self.encoder(MaskedOlmoEarthSample(**fields), patch_size=self.patch_size, input_res=10, fast_pass=True)
        tokens = out["tokens_and_masks"]
        return tokens.sentinel2_l2a.mean(dim=[3, 4]).permute(0, 3, 1, 2)


def build(size: str, version: str, seed: int, patch: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = OlmoEarthPretrain_v1(model_size=size, model_version=version)
    model.encoder.restrict_input_modalities(ENCODER_MODALITIES)
    return EmbeddingEncoder(model.encoder.eval(), patch, 3 if version == "v1" else 1).eval()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="nano")
    p.add_argument("--version", default="v1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--tiles", default="64", help="tile edges in pixels, comma-separated")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per dtype (after warm-up)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    model = build(args.size, args.version, args.seed, args.patch).to(dev)
    for tile in [int(t) for t in args.tiles.split(",")]:
        run(model, dev, args, tile)


def run(model: torch.nn.Module, dev: torch.device, args, tile: int) -> None:
    gen = torch.Generator().manual_seed(1)
    s2 = (torch.randn(args.batch, tile, tile, args.steps, 12, generator=gen) * 0.3 + 0.5).to(dev)
    ts = torch.tensor([[15, i % 12, 2021] for i in range(args.steps)], dtype=torch.int32)[None].repeat(args.batch, 1, 1).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    ref = None
    for dtype in args.dtypes.split(","):
        ctx = (
            torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
            if dtype == "bf16"
            else torch.autocast(device_type=dev.type, enabled=False)
        )
        with torch.no_grad(), ctx:
            for _ in range(3):  # warm-up: cuDNN/cuBLAS heuristics, allocator
                out = model(s2, ts)
            sync()
            # One timed batch to size the loop, then a loop of about --seconds.
            t0 = time.perf_counter()
            out = model(s2, ts)
            sync()
            one = time.perf_counter() - t0
            iters = max(3, min(1000, int(args.seconds / max(one, 1e-6))))
            t0 = time.perf_counter()
            for _ in range(iters):
                out = model(s2, ts)
            sync()
            dt = time.perf_counter() - t0
        o = out.float()
        agree = None
        if ref is None:
            ref = o
        else:
            cos = torch.nn.functional.cosine_similarity(o.flatten(2), ref.flatten(2), dim=1)
            agree = float(cos.min())
        print(
            json.dumps(
                {
                    "dtype": dtype,
                    "device": str(dev),
                    "model": f"olmoearth-{args.version}-{args.size}",
                    "batch": args.batch,
                    "tile": tile,
                    "steps": args.steps,
                    "iters": iters,
                    "ms_per_batch": 1000 * dt / iters,
                    "images_per_s": args.batch * iters / dt,
                    "out_shape": list(o.shape),
                    "min_cosine_vs_first_dtype": agree,
                    "torch": torch.__version__,
                    "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
