"""Export an OlmoEarth encoder to ONNX for eoinfer, with its STAC MLM manifest and a parity check.

Builds any OlmoEarth version and size offline with `olmoearth-pretrain-minimal` (random,
seeded weights, or `--weights` with a checkpoint state dict the user downloaded on their
own machine), wraps the encoder so it maps normalised Sentinel-2 L2A (and optionally
Sentinel-1) time series to a dense embedding map pooled the way rslearn's OlmoEarth wrapper
pools (mean over time steps and band groups, then over modalities), exports it with the
torch dynamo exporter (opset 18, dynamic batch, H = W and T), maps attention to ONNX
Runtime's `com.microsoft::MultiHeadAttention` (same numbers, no B x heads x N^2 score
matrix), and refuses to write a model whose ONNX Runtime output differs from PyTorch's by
more than 1e-4 on shapes other than the traced one, or whose STAC MLM manifest is not valid
against STAC 1.1 and every extension it declares (tests/reference/validate_stac.py, offline).

Inputs of the ONNX model:
  s2          float32 [B, H, W, T, 12]  normalised, bands B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12,B01,B09
  timestamps  int32   [B, T, 3]         (day 1-31, month 0-11, year)
  s1          float32 [B, H, W, T, 2]   normalised vv, vh in dB (only with --s1)
Output: `features` float32 [B, D, H/p, W/p], or with a head (random seeded weights, or
`--head-weights`):
  --head segmentation    `logits` float32 [B, N, H, W]: conv 3x3 -> ReLU -> conv 1x1, bilinear x p
                         (softmax over the channel axis gives class probabilities)
  --head regression      `values` float32 [B, 1, H, W]: rslearn's UNetDecoder ->
                         PerPixelRegressionHead (identity, no sigmoid), one value per pixel
  --head classification  `logits` float32 [B, N]: rslearn's PoolingDecoder -> the logits that
                         rslearn's ClassificationHead turns into probabilities with a softmax
                         over the class axis, one label per input window
The regression and classification heads are rslearn's own classes (rslearn==0.1.19, installed
with --no-deps, see requirements.txt), called as rslearn calls them (FeatureMaps in,
ModelContext, ModelOutput / FeatureVector out) inside a thin wrapper that the exporter traces.

--dtype float16 | bfloat16 (encoder only, file suffix -fp16 / -bf16) traces the encoder with its
weights in that dtype between a cast of the float32 inputs and a cast of the output back to
float32, so the inputs and output above are unchanged (`eoinfer:compute_dtype` in the manifest).
It checks ONNX Runtime against PyTorch float32 and against PyTorch in the same dtype (max abs and
per patch cosine within HALF_TOLERANCE, recorded with its justification in `eoinfer:parity`).
ONNX Runtime's CPU provider runs a float16 graph (through inserted casts); it has no bfloat16
kernels for Add, Mul, Div, MatMul, Erf, ReduceMean, Expand or MultiHeadAttention (1.31.1), so a
bfloat16 graph is checked on a float32 emulation of its rounding (bf16_emulation) and its manifest
says it needs a runtime with bfloat16 kernels. Opset 18 has no bfloat16 Conv: the bfloat16 patch
embeddings run in float32 between casts.

usage: python models/olmoearth/export.py --version v1 --size nano [--s1] [--weights ckpt.pth]
       [--head segmentation|regression|classification] [--dtype float32|float16|bfloat16]
       [--golden] [--out-dir models/olmoearth]
   or: python models/olmoearth/export.py --rslearn-config ../shared/olmoearth-projects/lfmc/model.yaml [...]
       (an Ai2 task model from its rslearn configuration: runs models/olmoearth/rslearn_export.py
       with the same arguments under .venv-rslearn/bin/python, see RSLEARN_EXPORT.md)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run_rslearn_export(argv: list[str]) -> None:
    """`--rslearn-config`: the task model export lives in rslearn_export.py, which needs rslearn's
    full dependency set (.venv-rslearn), not this environment; replace this process with it,
    same arguments, before the heavy imports below."""
    if not any(a == "--rslearn-config" or a.startswith("--rslearn-config=") for a in argv[1:]):
        return
    here = Path(__file__).resolve().parent
    python = here.parent.parent / ".venv-rslearn" / "bin" / "python"
    if not os.access(python, os.X_OK):
        sys.exit(
            f"--rslearn-config needs the rslearn environment {python}, which is missing: create it with `make rslearn-env` "
            "(python3.11 -m venv .venv-rslearn && .venv-rslearn/bin/pip install -r models/olmoearth/rslearn-requirements.txt)"
        )
    script = here / "rslearn_export.py"
    os.execv(str(python), [str(python), str(script), *argv[1:]])


if __name__ == "__main__":
    _run_rslearn_export(sys.argv)

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript
import torch
from onnx.defs import OpSchema

from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize import Normalizer
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample

S2_BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
S2_COMMON = {
    "B01": ("coastal", 0.443), "B02": ("blue", 0.49), "B03": ("green", 0.56), "B04": ("red", 0.665),
    "B05": ("rededge071", 0.704), "B06": ("rededge075", 0.74), "B07": ("rededge078", 0.783),
    "B08": ("nir", 0.842), "B8A": ("nir08", 0.865), "B09": ("nir09", 0.945),
    "B11": ("swir16", 1.61), "B12": ("swir22", 2.19),
}
S1_BANDS = ["vv", "vh"]
EMBED_DIMS = {"nano": 128, "tiny": 192, "small": 384, "base": 768, "large": 1024}
ENCODER_MODALITIES = ["sentinel2_l2a", "sentinel1", "landsat"]
TRAINING_ONLY_PREFIXES = ("supervision_head.", "location_token_distillation_head.")
PARITY_TOLERANCE = 1e-4
# --dtype: the encoder computes in float16 or bfloat16 between a cast of the float32 inputs and a
# cast of its output back to float32, inside the graph (eoinfer feeds and reads float32 as for
# any other model). Parity is measured against PyTorch float32 (the float32 export's reference)
# and against PyTorch in the same dtype, per patch cosine and max abs; TOLERANCE_NOTE says where
# the bounds come from.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_SUFFIX = {"float32": "", "float16": "-fp16", "bfloat16": "-bf16"}
HALF_TOLERANCE = {
    "float16": {"max_abs": 2e-2, "min_cosine": 0.9999},
    "bfloat16": {"max_abs": 1.5e-1, "min_cosine": 0.999},
}
# Measured (torch 2.15, onnxruntime 1.31.1) on v1 Nano, Tiny, Base, v1 Nano + S1 and v1.2 Nano with
# seeded random weights (no trained checkpoint offline), on the real golden window and the random
# parity inputs; embeddings up to |3.3|. float16: PyTorch float16 vs float32 at most 4.2e-3 max abs
# and 1 - cosine 4.8e-7; ONNX Runtime within one or two float16 steps (2^-9 at |x| < 4) of PyTorch
# float16. bfloat16: at most 3.9e-2 and 3.5e-5; the emulated graph within one or two bfloat16
# steps (2^-6) of PyTorch bfloat16. The bounds leave about 4x on max abs and 30x (bfloat16) to
# 200x (float16) on 1 - cosine, headroom for trained weights; the bfloat16 max abs is float16's
# times its 8x coarser rounding.
TOLERANCE_NOTE = {
    "float16": "measured on v1 Nano/Tiny/Base, v1 Nano+S1 and v1.2 Nano (random weights), real window and random inputs: "
    "PyTorch float16 vs float32 <= 4.2e-3 max abs, 1 - cosine <= 4.8e-7; ONNX Runtime within 2 float16 steps (2^-9 at "
    "|x| < 4) of PyTorch float16; the bounds leave ~4x on max abs and ~200x on 1 - cosine for trained weights",
    "bfloat16": "measured on v1 Nano/Tiny/Base, v1 Nano+S1 and v1.2 Nano (random weights), real window and random inputs: "
    "PyTorch bfloat16 vs float32 <= 3.9e-2 max abs, 1 - cosine <= 3.5e-5; the emulated graph within 2 bfloat16 steps "
    "(2^-6 at |x| < 4) of PyTorch bfloat16; the bounds leave ~4x on max abs and ~30x on 1 - cosine for trained weights",
}
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# The manifest is a STAC 1.1 Item with these extensions (each has an offline schema copy in
# ../shared/stac-schemas, so it can be validated without a network).
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.5.0/schema.json"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
# MLM v1.5 has no embedding task (its enum: stac-extensions/mlm#76 asks for one); an encoder
# whose patch embeddings are compared by cosine similarity declares `similarity-search`, and
# `eoinfer:kind` = `embedding` tells eoinfer how to run it.
ENCODER_TASK = "similarity-search"
# The rslearn release whose decoder and head classes the regression and classification heads are.
RSLEARN_VERSION = "0.1.19"
HEAD_SUFFIX = {"segmentation": "-seg", "regression": "-reg", "classification": "-cls"}
HEAD_TASK = {"segmentation": "semantic-segmentation", "regression": "regression", "classification": "classification"}
REGRESSION_NODATA = -9999.0
GOLDEN_SCENE = REPO.parent / "shared/scenes/s2_s1_monthly_worldcereal_32631_100x100/worldcereal_preprocessed_inputs.nc"


# ONNX Runtime rejects Einsum over int64 and float32 operands, which the sin-cos position
# helpers produce; casting the integer operand to float32 first gives the same numbers.
_einsum = torch.einsum


def _einsum_float(equation, *operands):
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    floats = [o.dtype for o in operands if o.is_floating_point()]
    if floats:
        operands = tuple(o if o.is_floating_point() else o.to(floats[0]) for o in operands)
    return _einsum(equation, *operands)


torch.einsum = _einsum_float


def _mha_translation():
    """aten::scaled_dot_product_attention -> com.microsoft::MultiHeadAttention."""
    if not onnx.defs.has("MultiHeadAttention", "com.microsoft"):
        onnx.defs.register_schema(
            OpSchema(
                "MultiHeadAttention",
                "com.microsoft",
                1,
                inputs=[OpSchema.FormalParameter(n, "T") for n in ("query", "key", "value")],
                outputs=[OpSchema.FormalParameter("output", "T")],
                # As onnxruntime 1.31.1's schema (its CPU provider has float and float16 kernels only).
                type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors")],
                attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of heads")],
            )
        )
    from onnxscript import opset18 as op
    from onnxscript._internal.values import Op

    mha = Op(onnxscript.values.Opset("com.microsoft", 1), "MultiHeadAttention")

    def sdpa_to_mha(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is not None or is_causal or scale is not None:
            raise ValueError("only unmasked, non-causal, default-scale attention maps to MultiHeadAttention")
        heads, head_dim = query.shape[1], query.shape[3]  # static: [B, heads, N, head_dim]
        flat = op.Constant(value_ints=[0, 0, -1])
        q = op.Reshape(op.Transpose(query, perm=[0, 2, 1, 3]), flat)
        k = op.Reshape(op.Transpose(key, perm=[0, 2, 1, 3]), flat)
        v = op.Reshape(op.Transpose(value, perm=[0, 2, 1, 3]), flat)
        out = mha(q, k, v, num_heads=heads)
        out = op.Reshape(out, op.Constant(value_ints=[0, 0, heads, head_dim]))
        return op.Transpose(out, perm=[0, 2, 1, 3])

    return {torch.ops.aten.scaled_dot_product_attention.default: sdpa_to_mha}


class EmbeddingEncoder(torch.nn.Module):
    """OlmoEarth encoder -> dense embedding map [B, D, H/p, W/p]."""

    def __init__(self, encoder: torch.nn.Module, patch_size: int, with_s1: bool, s2_band_sets: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.patch_size = patch_size
        self.with_s1 = with_s1
        self.s2_band_sets = s2_band_sets

    def forward(self, s2: torch.Tensor, timestamps: torch.Tensor, s1: torch.Tensor | None = None) -> torch.Tensor:
        fields = {
            "timestamps": timestamps,
            "sentinel2_l2a": s2,
            # One mask value per band set (3 for Sentinel-2 in v1); 0 = seen by the encoder.
            "sentinel2_l2a_mask": torch.zeros_like(s2[..., : self.s2_band_sets], dtype=torch.int32),
        }
        if self.with_s1:
            fields["sentinel1"] = s1
            fields["sentinel1_mask"] = torch.zeros_like(s1[..., :1], dtype=torch.int32)
        out = self.encoder(MaskedOlmoEarthSample(**fields), patch_size=self.patch_size, input_res=10, fast_pass=True)
        tokens = out["tokens_and_masks"]
        pooled = [tokens.sentinel2_l2a.mean(dim=[3, 4])]  # [B, h, w, T, S, D] -> [B, h, w, D]
        if self.with_s1:
            pooled.append(tokens.sentinel1.mean(dim=[3, 4]))
        x = torch.stack(pooled, dim=0).mean(dim=0)
        return x.permute(0, 3, 1, 2)


class SegmentationHead(torch.nn.Module):
    """An rslearn-style segmentation decoder on the embedding map: conv 3x3 -> ReLU -> conv 1x1
    to class logits, upsampled (bilinear) by the patch size back to pixel resolution."""

    def __init__(self, dim: int, classes: int, patch_size: int, hidden: int = 128) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(dim, hidden, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(hidden, classes, 1)
        )
        self.patch_size = patch_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.layers(features)
        return torch.nn.functional.interpolate(x, scale_factor=float(self.patch_size), mode="bilinear", align_corners=False)


class EncoderWithHead(torch.nn.Module):
    """Encoder + head: time series -> the head's output (class logits [B, N, H, W], values
    [B, 1, H, W] or window logits [B, N])."""

    def __init__(self, encoder: EmbeddingEncoder, head: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, s2, timestamps, s1=None):
        feats = self.encoder(s2, timestamps, s1) if s1 is not None else self.encoder(s2, timestamps)
        return self.head(feats)


class DtypeBoundary(torch.nn.Module):
    """--dtype float16 / bfloat16: the model (its weights converted) computes in `dtype`; the
    float32 inputs are cast to it and the output back to float32 inside the graph."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, s2: torch.Tensor, timestamps: torch.Tensor, s1: torch.Tensor | None = None) -> torch.Tensor:
        if s1 is None:
            out = self.model(s2.to(self.dtype), timestamps)
        else:
            out = self.model(s2.to(self.dtype), timestamps, s1.to(self.dtype))
        return out.to(torch.float32)


def rslearn_modules() -> dict:
    """rslearn's decoder and head classes (and the types they exchange) from the pinned release."""
    try:
        installed = importlib.metadata.version("rslearn")
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"rslearn is not installed: `make export-env` installs rslearn=={RSLEARN_VERSION} (--no-deps)") from None
    if installed != RSLEARN_VERSION:
        raise SystemExit(f"rslearn {installed} is installed; the heads are built from rslearn=={RSLEARN_VERSION}")
    from rslearn.models.component import FeatureMaps
    from rslearn.models.pooling_decoder import PoolingDecoder
    from rslearn.models.unet import UNetDecoder
    from rslearn.train.model_context import ModelContext
    from rslearn.train.tasks.classification import ClassificationHead
    from rslearn.train.tasks.per_pixel_regression import PerPixelRegressionHead

    return {
        "FeatureMaps": FeatureMaps, "ModelContext": ModelContext, "UNetDecoder": UNetDecoder, "PoolingDecoder": PoolingDecoder,
        "PerPixelRegressionHead": PerPixelRegressionHead, "ClassificationHead": ClassificationHead,
    }


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class RslearnRegressionHead(torch.nn.Module):
    """rslearn UNetDecoder -> PerPixelRegressionHead on the embedding map, as rslearn's
    SingleTaskModel chains them: FeatureMaps([B, D, H/p, W/p]) -> decoder -> FeatureMaps([B, 1,
    H, W]) -> head -> ModelOutput.outputs [B, H, W] (identity: no sigmoid); returned as
    [B, 1, H, W]."""

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        rs = rslearn_modules()
        self._feature_maps, self._context = rs["FeatureMaps"], rs["ModelContext"]
        if patch_size & (patch_size - 1):
            raise SystemExit(f"the UNetDecoder upsamples by 2 per step: the patch size {patch_size} must be a power of 2")
        # One feature map at 1/p; conv 3x3 + ReLU per resolution, x2 nearest upsampling down to
        # pixel resolution, fewer channels as the maps grow, then a conv 3x3 to one value.
        self.decoder_args = {
            "in_channels": [[patch_size, dim]],
            "out_channels": 1,
            "conv_layers_per_resolution": 1,
            "kernel_size": 3,
            "num_channels": {f: c for f, c in ((4, 64), (2, 32), (1, 32)) if f < patch_size},
            "target_resolution_factor": 1,
        }
        self.head_args = {"loss_mode": "mse", "use_sigmoid": False}
        self.decoder = rs["UNetDecoder"](**{**self.decoder_args, "in_channels": [tuple(c) for c in self.decoder_args["in_channels"]]})
        self.head = rs["PerPixelRegressionHead"](**self.head_args)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        context = self._context(inputs=[], metadatas=[])
        decoded = self.decoder(self._feature_maps([features]), context)
        return self.head(decoded, context, targets=None).outputs[:, None]

    def source(self) -> dict:
        return {
            "package": f"rslearn=={RSLEARN_VERSION}",
            "decoder": _qualname(type(self.decoder)), "decoder_args": self.decoder_args,
            "head": _qualname(type(self.head)), "head_args": self.head_args,
            "output": "the head's inference output (ModelOutput.outputs, [B, H, W]) with a channel axis added: [B, 1, H, W]",
        }


class RslearnClassificationHead(torch.nn.Module):
    """rslearn PoolingDecoder -> ClassificationHead on the embedding map. forward returns the
    decoder's FeatureVector [B, N]: the logits that ClassificationHead turns into its inference
    output with softmax over the class axis (`probabilities` runs the head itself)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        rs = rslearn_modules()
        self._feature_maps, self._context = rs["FeatureMaps"], rs["ModelContext"]
        # conv 3x3 + ReLU, max over the window, fully connected + ReLU, linear to the classes.
        self.decoder_args = {
            "in_channels": dim, "out_channels": classes, "num_conv_layers": 1, "num_fc_layers": 1,
            "conv_channels": 128, "fc_channels": 128,
        }
        self.decoder = rs["PoolingDecoder"](**self.decoder_args)
        self.head = rs["ClassificationHead"]()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        context = self._context(inputs=[], metadatas=[])
        return self.decoder(self._feature_maps([features]), context).feature_vector

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """rslearn's own inference output: ClassificationHead on the decoder's FeatureVector."""
        context = self._context(inputs=[], metadatas=[])
        return self.head(self.decoder(self._feature_maps([features]), context), context, targets=None).outputs

    def source(self) -> dict:
        return {
            "package": f"rslearn=={RSLEARN_VERSION}",
            "decoder": _qualname(type(self.decoder)), "decoder_args": self.decoder_args,
            "head": _qualname(type(self.head)), "head_args": {},
            "output": "the decoder's FeatureVector: the pre-softmax logits the head receives; "
            "softmax over the class axis gives the head's inference output (class probabilities)",
        }


PALETTE = ["1b9e77", "d95f02", "7570b3", "e7298a", "66a61e", "e6ab02", "a6761d", "666666", "1f78b4", "b2df8a"]


def build_encoder(size: str, version: str, weights: Path | None, seed: int) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(seed)
    model = OlmoEarthPretrain_v1(model_size=size, model_version=version)
    if weights is not None:
        state = torch.load(weights, map_location="cpu")
        state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
        model.model.load_state_dict(state)
    model.encoder.restrict_input_modalities(ENCODER_MODALITIES)
    encoder = model.encoder.eval()
    # v1 tokenises Sentinel-2 in 3 band sets; v1.1 and later in one.
    band_sets = 3 if version == "v1" else 1
    return encoder, band_sets


def timestamps_for(dates: list[tuple[int, int, int]], batch: int) -> torch.Tensor:
    """(day, month 1-12, year) -> OlmoEarth's [B, T, 3] (day, month 0-11, year) int32."""
    t = torch.tensor([[d, m - 1, y] for d, m, y in dates], dtype=torch.int32)
    return t[None].repeat(batch, 1, 1)


def random_inputs(batch: int, size: int, steps: int, with_s1: bool, gen: torch.Generator):
    s2 = torch.randn(batch, size, size, steps, 12, generator=gen) * 0.3 + 0.5
    ts = timestamps_for([(15, 1 + (i % 12), 2021) for i in range(steps)], batch)
    s1 = torch.randn(batch, size, size, steps, 2, generator=gen) * 0.3 + 0.5 if with_s1 else None
    return s2, ts, s1


def feeds(s2, ts, s1) -> dict[str, np.ndarray]:
    f = {"s2": s2.numpy(), "timestamps": ts.numpy()}
    if s1 is not None:
        f["s1"] = s1.numpy()
    return f


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max abs difference and the smallest cosine similarity over patches (over windows for a
    [B, N] output, over whole maps for a one-channel output)."""
    if ref.ndim == 2 or ref.shape[1] == 1:
        a = ref.reshape(ref.shape[0], -1).astype(np.float64)
        b = got.reshape(got.shape[0], -1).astype(np.float64)
    else:
        a = ref.transpose(0, 2, 3, 1).reshape(-1, ref.shape[1]).astype(np.float64)
        b = got.transpose(0, 2, 3, 1).reshape(-1, got.shape[1]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return {"max_abs": float(np.abs(ref - got).max()), "min_cosine": float(cos.min())}


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value of the graph: the exporter's value_info, and for the values it
    leaves untyped (com.microsoft::MultiHeadAttention's output, the casts bf16_conv_in_float32
    adds) a Cast's target type, or MultiHeadAttention's and Conv's first input's type."""
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:
        for o in n.output:
            if o and not types.get(o):
                if n.op_type == "Cast":
                    types[o] = next(a.i for a in n.attribute if a.name == "to")
                elif n.op_type in ("MultiHeadAttention", "Conv"):
                    types[o] = types.get(n.input[0], 0)
    return types


BF16 = onnx.TensorProto.BFLOAT16
FLOAT = onnx.TensorProto.FLOAT


def bf16_conv_in_float32(model: onnx.ModelProto) -> list[str]:
    """Opset 18's Conv has no bfloat16 (Conv-22 added it, and ONNX Runtime's CPU provider has no
    bfloat16 Conv at any opset): each bfloat16 Conv runs in float32 between casts, its bfloat16
    inputs and weights widened exactly and its output rounded to bfloat16, which is what a
    bfloat16 convolution accumulating in float32 computes. Returns the nodes changed."""
    types = value_types(model)
    nodes, changed, widened = [], [], {}
    for n in model.graph.node:
        if n.op_type == "Conv" and types.get(n.input[0]) == BF16:
            for j, x in enumerate(n.input):
                if x and types.get(x) == BF16:
                    if x not in widened:
                        widened[x] = f"{x}__conv_float32"
                        nodes.append(onnx.helper.make_node("Cast", [x], [widened[x]], name=f"{x}__conv_to_float32", to=FLOAT))
                    n.input[j] = widened[x]
            out = n.output[0]
            n.output[0] = f"{out}__conv_float32"
            nodes.append(n)
            nodes.append(onnx.helper.make_node("Cast", [n.output[0]], [out], name=f"{out}__conv_to_bfloat16", to=BF16))
            changed.append(n.name)
        else:
            nodes.append(n)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    return changed


def bf16_emulation(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 copy of a bfloat16 graph for ONNX Runtime's CPU provider, which has no bfloat16
    kernels for most of its operators: the same nodes and weights (bfloat16 widened exactly),
    each operator evaluated in float32 on bfloat16 values and each bfloat16 result rounded to
    bfloat16 (Cast to bfloat16 and back), so every rounding point of the bfloat16 graph is kept;
    the arithmetic inside an operator is float32, as in bfloat16 kernels that accumulate in
    float32. Used for the parity check only, never written."""
    m = copy.deepcopy(model)
    g = m.graph
    types = value_types(m)
    for init in g.initializer:
        if init.data_type == BF16:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == BF16:
                a.t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
        if n.op_type == "CastLike":
            raise SystemExit("bf16_emulation: CastLike is not handled")
        native = n.op_type == "Cast" and next(a.i for a in n.attribute if a.name == "to") == BF16
        rounded = []
        for j, o in enumerate(n.output):
            if o and types.get(o) == BF16:
                n.output[j] = f"{o}__emulated_bfloat16" if native else f"{o}__emulated_float32"
                rounded.append((n.output[j], o))
        nodes.append(n)
        for src, o in rounded:
            if not native:
                nodes.append(onnx.helper.make_node("Cast", [src], [f"{o}__emulated_bfloat16"], to=BF16))
            nodes.append(onnx.helper.make_node("Cast", [f"{o}__emulated_bfloat16"], [o], to=FLOAT))
    g.ClearField("node")
    g.node.extend(nodes)
    g.ClearField("value_info")
    return m


def cpu_missing_kernels(model: onnx.ModelProto, elem_type: int) -> list[str]:
    """The operators of the graph with an `elem_type` input or output for which ONNX Runtime's
    CPU provider has no kernel: each distinct (operator, input types) is loaded alone as a
    one-node graph (shapes left open)."""
    types = value_types(model)
    opsets = {o.domain: o.version for o in model.opset_import}
    missing, seen = [], set()
    for n in model.graph.node:
        if not any(types.get(x) == elem_type for x in [*n.input, *n.output] if x):
            continue
        key = (n.domain, n.op_type, tuple(types.get(x, 0) for x in n.input))
        if key in seen:
            continue
        if not all(types.get(x) for x in [*n.input, *n.output] if x):
            raise SystemExit(f"cpu_missing_kernels: a value of node {n.name} ({n.op_type}) has no known type")
        seen.add(key)
        names = list(dict.fromkeys(x for x in n.input if x))
        graph = onnx.helper.make_graph(
            [copy.deepcopy(n)],
            "probe",
            [onnx.helper.make_tensor_value_info(x, types.get(x, 0), None) for x in names],
            [onnx.helper.make_tensor_value_info(o, types.get(o, 0), None) for o in n.output if o],
        )
        probe = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()], ir_version=model.ir_version)
        so = ort.SessionOptions()
        so.log_severity_level = 4
        try:
            ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            hit = re.search(r"implementation for (\S+\(\d+\))", str(e))
            label = (f"{n.domain}::" if n.domain else "") + (hit.group(1) if hit else n.op_type)
            if label not in missing:
                missing.append(label if hit else f"{label} ({str(e).splitlines()[0][:120]})")
    return missing


def read_golden_window(with_s1: bool, version: str, size: int = 64) -> dict:
    """A real 12-month window: WorldCereal's monthly S2 L2A composites (and S1) over EPSG:32631."""
    if not GOLDEN_SCENE.exists():
        raise SystemExit(f"golden scene {GOLDEN_SCENE} is missing")
    import tifffile

    def var(name: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "v.tif"
            subprocess.run(
                ["gdal_translate", "-q", "-ot", "Float32", "-co", "INTERLEAVE=BAND", "-srcwin", "0", "0", str(size), str(size),
                 f'NETCDF:"{GOLDEN_SCENE}":{name}', str(out)],
                check=True,
            )
            return tifffile.imread(out)  # [T, H, W]

    # Days since 1990-01-01 of the 12 monthly composites (NETCDF_DIM_t_VALUES).
    days = [11262, 11292, 11323, 11354, 11382, 11413, 11443, 11474, 11504, 11535, 11566, 11596]
    base = np.datetime64("1990-01-01")
    dates = []
    for d in days:
        day = (base + np.timedelta64(d, "D")).astype(object)
        dates.append((day.day, day.month, day.year))
    raw = np.full((size, size, 12, 12), np.nan, dtype=np.float32)  # H, W, T, C (DN; NaN = band absent)
    present = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
    for b in present:
        v = var(f"S2-L2A-{b}")
        v = np.where(v == 32769, np.nan, v)
        raw[..., S2_BANDS.index(b)] = np.moveaxis(v, 0, -1)
    norm = Normalizer(std_multiplier=2.0, model_type="v1" if version == "v1" else version)
    s2 = norm.normalize(Modality.SENTINEL2_L2A, raw.copy()).astype(np.float32)
    window = {"raw_s2": raw, "s2": s2, "dates": dates}
    if with_s1:
        s1_raw = np.zeros((size, size, 12, 2), dtype=np.float32)
        for i, b in enumerate(S1_BANDS):
            v = var(f"S1-SIGMA0-{b.upper()}")
            # WorldCereal stores backscatter as uint16: dB = 20 log10(v) - 83.
            s1_raw[..., i] = np.moveaxis(20.0 * np.log10(v) - 83.0, 0, -1)
        window["raw_s1"] = s1_raw
        window["s1"] = norm.normalize(Modality.SENTINEL1, s1_raw.copy()).astype(np.float32)
    return window


def norm_stats(modality: str, bands: list[str]) -> list[dict]:
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize import load_computed_config

    cfg = load_computed_config()[modality]
    out = []
    for b in bands:
        m, s = cfg[b]["mean"], cfg[b]["std"]
        out.append({"type": "min-max", "minimum": m - 2 * s, "maximum": m + 2 * s})
    return out


def class_list(class_names: list[str], what: str) -> list[dict]:
    return [
        {"value": i, "name": n, "description": f"{n} (class {i} of the {what} head)", "color_hint": PALETTE[i % len(PALETTE)]}
        for i, n in enumerate(class_names)
    ]


def head_output(args, class_names: list[str]) -> dict:
    """`mlm:output[0]` of a model with a head."""
    if args.head == "segmentation":
        return {
            "name": "logits",
            "tasks": ["semantic-segmentation"],
            "result": {"shape": [-1, len(class_names), -1, -1], "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
            "classification:classes": class_list(class_names, "segmentation"),
            "post_processing_function": {"format": "eoinfer", "expression": "softmax(channel)"},
        }
    if args.head == "regression":
        return {
            "name": "values",
            "description": f"{args.value_name} in {args.value_unit} per pixel (rslearn PerPixelRegressionHead output, no sigmoid, no scaling)",
            "tasks": ["regression"],
            "result": {"shape": [-1, 1, -1, -1], "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
            "post_processing_function": None,
        }
    return {
        "name": "logits",
        "description": (
            f"pre-softmax class logits, one row per input window of {args.window_size} x {args.window_size} pixels; "
            "softmax over the class axis gives rslearn ClassificationHead's probabilities"
        ),
        "tasks": ["classification"],
        "result": {"shape": [-1, len(class_names)], "dim_order": ["batch", "class"], "data_type": "float32"},
        "classification:classes": class_list(class_names, "classification"),
        "post_processing_function": {"format": "eoinfer", "expression": "softmax(class)"},
    }


OLMOEARTH_LICENSE = "LicenseRef-OlmoEarth-Artifact-License"
OLMOEARTH_LICENSE_LINK = {
    "rel": "license",
    "href": "https://github.com/allenai/olmoearth_projects/blob/main/LICENSE",
    "title": "OlmoEarth Artifact License",
}


def licence_fields(random: bool) -> tuple[dict, list[dict]]:
    """STAC `license`, `eoinfer:attribution` and links of an encoder export: a random-weight
    export holds only the Apache-2.0 architecture code of olmoearth-pretrain-minimal; an export
    of OlmoEarth weights falls under the OlmoEarth Artifact License."""
    if random:
        return (
            {
                "license": "Apache-2.0",
                "eoinfer:attribution": "Architecture of OlmoEarth (Allen Institute for AI, Ai2) from the olmoearth-pretrain-minimal "
                "0.1.5 package (Apache-2.0), with seeded random weights: no OlmoEarth weights are in this model.",
            },
            [],
        )
    return (
        {
            "license": OLMOEARTH_LICENSE,
            "eoinfer:attribution": "OlmoEarth weights by the Allen Institute for AI (Ai2), under the OlmoEarth Artifact License: cite Ai2; "
            "its use restrictions (no military or defence uses, no surveillance or policing, no extractive uses such as mining, "
            "drilling or deforestation) pass on to every derivative; include a link to or a copy of the licence with any distribution.",
        },
        [OLMOEARTH_LICENSE_LINK],
    )


def build_manifest(onnx_path: Path, onnx_bytes: Path, args, dim: int, parity: list[dict], export_s: float, class_names: list[str], head_source: dict | None) -> dict:
    """The STAC MLM manifest of the model that will be written to `onnx_path` (its bytes are
    in `onnx_bytes` until then)."""
    sha = hashlib.sha256(onnx_bytes.read_bytes()).hexdigest()
    bands = [{"name": b, "eo:common_name": S2_COMMON[b][0], "eo:center_wavelength": S2_COMMON[b][1]} for b in S2_BANDS]
    inputs = [
        {
            "name": "s2",
            "bands": S2_BANDS,
            "input": {"shape": [-1, -1, -1, -1, 12], "dim_order": ["batch", "height", "width", "time", "bands"], "data_type": "float32"},
            "value_scaling": norm_stats("sentinel2_l2a", S2_BANDS),
            "resize_type": None,
            "pre_processing_function": None,
        },
        {
            "name": "timestamps",
            "bands": [],
            "input": {"shape": [-1, -1, 3], "dim_order": ["batch", "time", "date"], "data_type": "int32"},
            "description": "acquisition date per time step as (day 1-31, month 0-11, year)",
        },
    ]
    if args.s1:
        bands += [{"name": "vv", "description": "Sentinel-1 VV backscatter, dB"}, {"name": "vh", "description": "Sentinel-1 VH backscatter, dB"}]
        inputs.append(
            {
                "name": "s1",
                "bands": S1_BANDS,
                "input": {"shape": [-1, -1, -1, -1, 2], "dim_order": ["batch", "height", "width", "time", "bands"], "data_type": "float32"},
                "value_scaling": norm_stats("sentinel1", S1_BANDS),
            }
        )
    random = args.weights is None
    head_note = {
        None: "",
        "segmentation": "",
        "regression": f" Head: rslearn {RSLEARN_VERSION} UNetDecoder + PerPixelRegressionHead -> {args.value_name} ({args.value_unit}) per pixel.",
        "classification": f" Head: rslearn {RSLEARN_VERSION} PoolingDecoder + ClassificationHead logits -> one label per {args.window_size} x {args.window_size} window.",
    }[args.head]
    if args.head and args.head != "segmentation":
        head_note += (" Head RANDOM WEIGHTS (seed %d)." % (args.seed + 1)) if args.head_weights is None else f" Head weights from {Path(args.head_weights).name}."
    doc = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA, EO_SCHEMA, FILE_SCHEMA] + ([CLASSIFICATION_SCHEMA] if args.head in ("segmentation", "classification") else []),
        "id": onnx_path.stem,
        "geometry": None,
        "properties": {
            "datetime": None,
            "start_datetime": "2016-01-01T00:00:00Z",
            "end_datetime": "2025-12-31T00:00:00Z",
            "description": (
                f"OlmoEarth {args.version} {args.size} encoder (Ai2, Apache-2.0) exported by models/olmoearth/export.py: "
                "Sentinel-2 L2A" + (" + Sentinel-1" if args.s1 else "") + " time series -> embedding map pooled over time steps "
                "and band groups. " + ("RANDOM WEIGHTS (seed %d): for testing the pipeline, not for analysis." % args.seed if random else f"Weights from {Path(args.weights).name}.")
                + head_note
            ),
            "mlm:name": f"OlmoEarth {args.version} {args.size}",
            "mlm:architecture": "ViT (OlmoEarth / FlexiViT encoder)",
            "mlm:tasks": [HEAD_TASK[args.head]] if args.head else [ENCODER_TASK],
            "mlm:framework": "ONNX",
            "mlm:accelerator": "amd64",
            "mlm:accelerator_constrained": False,
            "mlm:pretrained": not random,
            "mlm:pretrained_source": None if random else "OlmoEarth checkpoint (Ai2)",
            **licence_fields(random)[0],
            # MLM v1.5 reads the bands its inputs name from the Item properties; STAC 1.1 allows
            # them there because the model asset carries them too.
            "bands": bands,
            "gsd": 10.0,
            "mlm:input": inputs,
            "mlm:output": [
                {
                    "name": "features",
                    "description": "patch embeddings (task-agnostic features), compared by cosine similarity or used by downstream models",
                    "tasks": [ENCODER_TASK],
                    "result": {"shape": [-1, dim, -1, -1], "dim_order": ["batch", "embedding", "height", "width"], "data_type": "float32"},
                    "post_processing_function": None,
                }
            ]
            if not args.head
            else [head_output(args, class_names)],
            "eoinfer:kind": "embedding",
            "eoinfer:head": args.head,
            "eoinfer:head_random_weights": bool(args.head) and args.head_weights is None,
            **({"eoinfer:head_seed": args.seed + 1} if args.head and args.head_weights is None and head_source else {}),
            **({"eoinfer:head_source": head_source} if head_source else {}),
            **(
                {
                    "eoinfer:regression": {
                        "name": args.value_name,
                        "unit": args.value_unit,
                        "nodata": REGRESSION_NODATA,
                        "range": [args.value_min, args.value_max],
                    }
                }
                if args.head == "regression"
                else {}
            ),
            **({"eoinfer:window_size": args.window_size} if args.head == "classification" else {}),
            "eoinfer:model_family": "olmoearth",
            "eoinfer:model_version": args.version,
            "eoinfer:model_size": args.size,
            "eoinfer:random_weights": random,
            "eoinfer:seed": args.seed if random else None,
            "eoinfer:patch_size": args.patch_size,
            "eoinfer:embedding_dim": dim,
            "eoinfer:max_time_steps": 12,
            "eoinfer:square_tiles": True,
            "eoinfer:tile_size": args.window_size if args.head == "classification" else 64,
            "eoinfer:gsd": 10.0,
            "eoinfer:product_level": "L2A",
            "eoinfer:dn_scale": 1.0,
            "eoinfer:dn_nodata": 0,
            "eoinfer:missing_bands": "nearest-wavelength" if args.version == "v1" else "zero-after-normalisation",
            "eoinfer:attention": "com.microsoft::MultiHeadAttention" if not args.plain_attention else "onnx",
            "eoinfer:parity": {"tolerance": PARITY_TOLERANCE, "shapes": parity},
            "eoinfer:export_seconds": round(export_s, 1),
            "eoinfer:exporter": f"torch {torch.__version__} dynamo, opset 18; onnxruntime {ort.__version__}",
        },
        "links": licence_fields(random)[1],
        "assets": {
            "model": {
                "href": onnx_path.name,
                "type": "application/octet-stream; application=onnx",
                "roles": ["mlm:model", "mlm:weights", "data"],
                "mlm:artifact_type": "onnx",
                "file:size": onnx_bytes.stat().st_size,
                "file:checksum": "1220" + sha,
                "bands": bands,
            }
        },
    }
    return doc


def commit_model(tmp_path: Path, onnx_path: Path, manifest_path: Path, doc: dict) -> None:
    """Renames the checked graph into place and writes its manifest, unless the manifest is not
    valid STAC 1.1 / MLM v1.5 (then neither is written)."""
    errors = manifest_errors(doc)
    if errors:
        tmp_path.unlink()
        raise SystemExit(f"refusing to write {manifest_path} (and {onnx_path}): the manifest is not valid STAC 1.1 / MLM v1.5:\n" + json.dumps(errors, indent=2))
    os.replace(tmp_path, onnx_path)
    write_manifest(manifest_path, doc)


def manifest_errors(doc: dict) -> list[dict]:
    """Errors of the manifest against STAC 1.1 core and every extension it declares, from the
    offline schema copies (tests/reference/validate_stac.py)."""
    sys.path.insert(0, str(REPO / "tests" / "reference"))
    from validate_stac import Validator

    return Validator().errors(doc)


def write_manifest(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", choices=["v1", "v1.1", "v1.2"], required=True)
    p.add_argument("--size", choices=list(EMBED_DIMS), required=True)
    p.add_argument("--weights", help="checkpoint state dict (.pth) with the real weights")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (without --weights)")
    p.add_argument("--s1", action="store_true", help="also take Sentinel-1 vv, vh")
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--out-dir", default=str(HERE))
    p.add_argument("--golden", action="store_true", help="also write golden test data from the real WorldCereal window")
    p.add_argument("--plain-attention", action="store_true", help="keep attention as plain ONNX ops (holds the full score matrix)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--head",
        choices=list(HEAD_SUFFIX),
        help="export a head with the encoder: segmentation (class logits per pixel), regression (rslearn UNetDecoder + "
        "PerPixelRegressionHead: one value per pixel), classification (rslearn PoolingDecoder + ClassificationHead: "
        "class logits per window)",
    )
    p.add_argument("--class-names", default="class0,class1,class2", help="comma-separated class names of the segmentation or classification head")
    p.add_argument(
        "--head-weights",
        help="state dict (.pth) of the head, seeded random (seed + 1) without: segmentation layers.0/2 conv weights; "
        "regression and classification the rslearn decoder's weights under `decoder.` (the rslearn heads have none)",
    )
    p.add_argument("--value-name", default="canopy_height", help="regression: name of the value")
    p.add_argument("--value-unit", default="m", help="regression: unit of the value")
    p.add_argument("--value-min", type=float, default=0.0, help="regression: low end of the expected value range")
    p.add_argument("--value-max", type=float, default=50.0, help="regression: high end of the expected value range")
    p.add_argument("--window-size", type=int, default=32, help="classification: edge of the window one label is for, in pixels")
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float32",
        help="precision the encoder computes in; inputs and output stay float32 (cast inside the graph). float16 and "
        "bfloat16 are checked against PyTorch float32 and PyTorch in the same dtype with the dtype's tolerance; "
        "ONNX Runtime's CPU provider has no bfloat16 kernels for most operators, so a bfloat16 model is checked on a "
        "float32 emulation of its rounding and needs a runtime with bfloat16 kernels to run",
    )
    args = p.parse_args()
    if args.dtype != "float32" and args.head:
        p.error(f"--dtype {args.dtype} is for the encoder alone: its tolerance is measured on embeddings, not on a head's logits or values")
    if args.head == "classification" and (args.window_size <= 0 or args.window_size % args.patch_size):
        p.error(f"--window-size {args.window_size} is not a positive multiple of the patch size {args.patch_size}")
    if args.head == "regression" and not args.value_min < args.value_max:
        p.error("--value-min must be below --value-max")

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"olmoearth-{args.version.replace('.', '_')}-{args.size}" + ("-s1" if args.s1 else "") + HEAD_SUFFIX.get(args.head, "") + DTYPE_SUFFIX[args.dtype]
    onnx_path = out_dir / f"{name}.onnx"
    encoder, band_sets = build_encoder(args.size, args.version, Path(args.weights) if args.weights else None, args.seed)
    model = EmbeddingEncoder(encoder, args.patch_size, args.s1, band_sets).eval()
    dim = EMBED_DIMS[args.size]
    class_names = [c.strip() for c in args.class_names.split(",") if c.strip()]
    head_source = None
    if args.head:
        if args.head != "regression" and len(class_names) < 2:
            p.error("--class-names needs at least 2 classes")
        if args.head != "segmentation":
            rslearn_modules()  # imported (and its version checked) before the seed is set
        torch.manual_seed(args.seed + 1)
        if args.head == "segmentation":
            head = SegmentationHead(dim, len(class_names), args.patch_size)
        elif args.head == "regression":
            head = RslearnRegressionHead(dim, args.patch_size)
        else:
            head = RslearnClassificationHead(dim, len(class_names))
        head_source = head.source() if args.head != "segmentation" else None
        if args.head_weights:
            head.load_state_dict(torch.load(args.head_weights, map_location="cpu"))
        model = EncoderWithHead(model, head.eval()).eval()

    half = None if args.dtype == "float32" else DtypeBoundary(copy.deepcopy(model).to(DTYPES[args.dtype]), DTYPES[args.dtype]).eval()
    # Trace with B >= 2, T >= 2 and H/p >= 2 so no axis is specialised to 1.
    gen = torch.Generator().manual_seed(1234)
    s2, ts, s1 = random_inputs(2, 4 * args.patch_size, 3, args.s1, gen)
    batch = torch.export.Dim("batch", min=1, max=1024)
    side = args.patch_size * torch.export.Dim("patches", min=1, max=256)
    steps = torch.export.Dim("time", min=1, max=12)
    shapes = {"s2": {0: batch, 1: side, 2: side, 3: steps}, "timestamps": {0: batch, 1: steps}}
    example = (s2, ts)
    names = ["s2", "timestamps"]
    if args.s1:
        shapes["s1"] = {0: batch, 1: side, 2: side, 3: steps}
        example = (s2, ts, s1)
        names.append("s1")
    t0 = time.time()
    tmp_path = onnx_path.with_suffix(".onnx.partial")
    with torch.no_grad():
        program = torch.onnx.export(
            model if half is None else half,
            example,
            dynamo=True,
            opset_version=18,
            input_names=names,
            output_names=[head_output(args, class_names)["name"] if args.head else "features"],
            dynamic_shapes=shapes,
            custom_translation_table=None if args.plain_attention else _mha_translation(),
            verbose=False,
        )
    program.save(str(tmp_path), external_data=False)
    dtype_info = None
    if args.dtype == "bfloat16":
        graph = onnx.load(str(tmp_path))
        convs = bf16_conv_in_float32(graph)
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp_path))
        dtype_info = {"float32_convolutions": convs}
    export_s = time.time() - t0
    if half is not None:
        return export_half(args, model, half, tmp_path, onnx_path, name, out_dir, dim, export_s, class_names, dtype_info, gen)

    # Parity on shapes other than the traced one.
    sess = session(tmp_path, args.threads)
    parity = []
    for b, hw, t in parity_shapes(args.patch_size):
        x2, xt, x1 = random_inputs(b, hw, t, args.s1, gen)
        with torch.no_grad():
            ref = (model(x2, xt, x1) if args.s1 else model(x2, xt)).numpy()
        got = sess.run(None, feeds(x2, xt, x1))[0]
        stats = {"batch": b, "size": hw, "time_steps": t, **compare(ref, got)}
        expected = (b, 1, hw, hw) if args.head == "regression" else (b, len(class_names)) if args.head == "classification" else None
        if expected and got.shape != expected:
            tmp_path.unlink()
            raise SystemExit(f"refusing to write {onnx_path}: output shape {got.shape}, expected {expected}")
        if args.head == "classification":
            # The ONNX logits through a softmax against rslearn's ClassificationHead itself.
            with torch.no_grad():
                probs = model.head.probabilities(model.encoder(x2, xt, x1) if args.s1 else model.encoder(x2, xt)).numpy()
            softmax = np.exp(got - got.max(axis=1, keepdims=True))
            softmax /= softmax.sum(axis=1, keepdims=True)
            stats["probabilities_max_abs"] = float(np.abs(probs - softmax).max())
        print(json.dumps(stats))
        parity.append(stats)
    worst = max(max(s["max_abs"], s.get("probabilities_max_abs", 0.0)) for s in parity)
    if worst > PARITY_TOLERANCE:
        tmp_path.unlink()
        raise SystemExit(f"refusing to write {onnx_path}: ONNX Runtime differs from PyTorch by {worst:.2e} > {PARITY_TOLERANCE}")
    manifest_path = out_dir / f"{name}.json"
    doc = build_manifest(onnx_path, tmp_path, args, dim, parity, export_s, class_names, head_source)
    commit_model(tmp_path, onnx_path, manifest_path, doc)
    print(json.dumps({"model": str(onnx_path), "bytes": onnx_path.stat().st_size, "export_seconds": round(export_s, 1), "max_abs": worst}))

    if args.golden:
        w, x2, xt, x1, golden_size = golden_inputs(args)
        with torch.no_grad():
            ref = (model(x2, xt, x1) if args.s1 else model(x2, xt)).numpy()
        got = sess.run(None, feeds(x2, xt, x1))[0]
        stats = compare(ref, got)
        write_golden(args, out_dir / "golden" / name, w, x2, xt, x1, ref, golden_size, {"pytorch_vs_onnxruntime_python": stats})
        print(json.dumps({"golden": str(out_dir / "golden" / name), **stats}))


def export_half(args, model, half, tmp_path: Path, onnx_path: Path, name: str, out_dir: Path, dim: int, export_s: float, class_names, dtype_info, gen):
    """--dtype float16 / bfloat16: parity against PyTorch float32 and PyTorch in the dtype on the
    three shapes (and the golden window with --golden), within HALF_TOLERANCE, then the model,
    its manifest and golden data."""
    dt = args.dtype
    tol = HALF_TOLERANCE[dt]
    runtime = {"provider": "CPUExecutionProvider", "onnxruntime": ort.__version__}
    try:
        sess = session(tmp_path, args.threads)
        runtime["runs"] = True
        runtime["method"] = (
            "the written graph on ONNX Runtime's CPU provider (it computes float16 operators without a float16 CPU "
            "kernel in float32 between inserted casts)" if dt == "float16" else "the written graph on ONNX Runtime's CPU provider"
        )
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        if dt != "bfloat16" or "NOT_IMPLEMENTED" not in str(e):
            tmp_path.unlink()
            raise SystemExit(f"refusing to write {onnx_path}: ONNX Runtime cannot load the {dt} graph: {e}")
        graph = onnx.load(str(tmp_path))
        missing = cpu_missing_kernels(graph, BF16)
        runtime.update(
            {
                "runs": False,
                "error": str(e).splitlines()[0],
                "missing_bfloat16_kernels": missing,
                "method": "a float32 emulation of the written graph: the same nodes and weights, each operator evaluated in "
                "float32 on bfloat16 values and each bfloat16 result rounded to bfloat16 (Cast to bfloat16 and back), "
                "graph optimisations off so that no rounding is removed; it checks the graph, not bfloat16 kernels",
            }
        )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(bf16_emulation(graph).SerializeToString(), so, providers=["CPUExecutionProvider"])
        print(json.dumps({"bfloat16_on_cpu": "no kernels for " + ", ".join(missing), "parity_on": "float32 emulation of the bfloat16 rounding"}))

    def check(x2, xt, x1) -> tuple[dict, np.ndarray]:
        with torch.no_grad():
            ref = (model(x2, xt, x1) if args.s1 else model(x2, xt)).numpy()
            ref_dt = (half(x2, xt, x1) if args.s1 else half(x2, xt)).numpy()
        got = sess.run(None, feeds(x2, xt, x1))[0]
        return {**compare(ref, got), f"vs_pytorch_{dt}": compare(ref_dt, got), f"pytorch_{dt}_vs_float32": compare(ref, ref_dt)}, ref

    def beyond(stats: dict) -> list[str]:
        bad = []
        for label, c in (("PyTorch float32", stats), (f"PyTorch {dt}", stats[f"vs_pytorch_{dt}"])):
            if not (np.isfinite(c["max_abs"]) and c["max_abs"] <= tol["max_abs"] and c["min_cosine"] >= tol["min_cosine"]):
                bad.append(f"against {label}: max abs {c['max_abs']:.3e}, min cosine {c['min_cosine']:.6f}")
        return bad

    parity, failures = [], []
    for b, hw, t in parity_shapes(args.patch_size):
        stats, _ = check(*random_inputs(b, hw, t, args.s1, gen))
        stats = {"batch": b, "size": hw, "time_steps": t, **stats}
        print(json.dumps(stats))
        parity.append(stats)
        failures += [f"shape B={b} H=W={hw} T={t} " + f for f in beyond(stats)]
    golden = None
    if args.golden:
        w, x2, xt, x1, golden_size = golden_inputs(args)
        stats, ref = check(x2, xt, x1)
        golden = (w, x2, xt, x1, ref, golden_size, stats)
        print(json.dumps({"golden_window": True, **stats}))
        failures += ["golden window " + f for f in beyond(stats)]
    if failures:
        tmp_path.unlink()
        raise SystemExit(
            f"refusing to write {onnx_path}: the {dt} model is beyond its tolerance (max abs {tol['max_abs']}, min cosine "
            f"{tol['min_cosine']}):\n  " + "\n  ".join(failures)
        )

    manifest_path = out_dir / f"{name}.json"
    doc = build_manifest(onnx_path, tmp_path, args, dim, parity, export_s, class_names, None)
    props = doc["properties"]
    props["description"] += (
        f" Computes in {dt}: the float32 inputs are cast to {dt} and the output back to float32 inside the graph."
        + (
            " ONNX Runtime's CPU provider cannot run it (no bfloat16 kernels); it needs a runtime with bfloat16 kernels "
            "(a GPU provider; not run on a GPU by this export)." if not runtime["runs"] else ""
        )
    )
    if not runtime["runs"]:
        props["mlm:accelerator"] = "cuda"
        props["mlm:accelerator_constrained"] = True
    props["eoinfer:compute_dtype"] = dt
    if dtype_info:
        props["eoinfer:compute_dtype_exceptions"] = {
            "float32_convolutions": dtype_info["float32_convolutions"],
            "why": "opset 18's Conv has no bfloat16: the patch embedding convolutions widen their bfloat16 inputs and "
            "weights to float32 (exactly) and round the result to bfloat16",
        }
    props["eoinfer:parity"] = {
        "tolerance": tol,
        "tolerance_note": TOLERANCE_NOTE[dt],
        "reference": f"PyTorch float32 (max_abs, min_cosine per patch); vs_pytorch_{dt}: PyTorch computing in {dt}",
        "onnxruntime_cpu": runtime,
        "shapes": parity,
    }
    commit_model(tmp_path, onnx_path, manifest_path, doc)
    worst = max(s["max_abs"] for s in parity)
    print(json.dumps({"model": str(onnx_path), "bytes": onnx_path.stat().st_size, "export_seconds": round(export_s, 1), "max_abs": worst, "dtype": dt}))
    if golden:
        w, x2, xt, x1, ref, golden_size, stats = golden
        gdir = out_dir / "golden" / name
        figures = {
            "compute_dtype": dt,
            "tolerance": tol,
            "pytorch_vs_onnxruntime_python": {k: stats[k] for k in ("max_abs", "min_cosine")},
            f"pytorch_{dt}_vs_onnxruntime_python": stats[f"vs_pytorch_{dt}"],
            f"pytorch_{dt}_vs_float32": stats[f"pytorch_{dt}_vs_float32"],
            "onnxruntime_cpu": runtime,
        }
        write_golden(args, gdir, w, x2, xt, x1, ref, golden_size, figures)
        print(json.dumps({"golden": str(gdir), **stats}))


def parity_shapes(patch: int) -> list[tuple[int, int, int]]:
    """(batch, size, time steps) of the parity check: none of them the traced shape."""
    return [(1, 2 * patch, 1), (3, 6 * patch, 5), (2, 8 * patch, 12)]


def golden_inputs(args):
    """The real WorldCereal window (a classification head labels windows: its golden input is
    the window of that size)."""
    golden_size = args.window_size if args.head == "classification" else 64
    w = read_golden_window(args.s1, args.version, golden_size)
    x2 = torch.from_numpy(w["s2"])[None]
    xt = timestamps_for(w["dates"], 1)
    x1 = torch.from_numpy(w["s1"])[None] if args.s1 else None
    return w, x2, xt, x1, golden_size


def write_golden(args, gdir: Path, w: dict, x2, xt, x1, ref: np.ndarray, golden_size: int, figures: dict) -> None:
    gdir.mkdir(parents=True, exist_ok=True)
    arrays = {"s2": x2.numpy(), "timestamps": xt.numpy(), "features": ref}
    if args.s1:
        arrays["s1"] = x1.numpy()
    meta = {
        "source": f"../shared/scenes/s2_s1_monthly_worldcereal_32631_100x100/worldcereal_preprocessed_inputs.nc, window x 0..{golden_size}, y 0..{golden_size}",
        "dates": [list(d) for d in w["dates"]],
        "arrays": {k: {"file": f"{k}.bin", "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
        **figures,
        "note": "s2/s1 are the normalised model inputs (missing bands B8A, B01, B09 filled by the version's rule); features is PyTorch's output"
        + {
            None: "",
            "segmentation": "",
            "regression": f" (the output `values`: {args.value_name} in {args.value_unit} per pixel)",
            "classification": " (the output `logits`: pre-softmax class logits of the window)",
        }[args.head]
        + ("" if args.dtype == "float32" else f" in float32, the reference of the {args.dtype} model"),
    }
    for k, v in arrays.items():
        np.ascontiguousarray(v).tofile(gdir / f"{k}.bin")
    (gdir / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
