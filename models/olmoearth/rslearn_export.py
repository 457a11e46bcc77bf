"""Export an Ai2 OlmoEarth task model (encoder + decoder + head) to ONE ONNX graph, built by
rslearn's own classes from its published rslearn configuration (`model.yaml`), offline.

The `model:` section of the LightningCLI configuration is instantiated with jsonargparse the
way `rslearn model predict` (rslearn.lightning_cli.RslearnLightningCLI) does it: the
LightningModule from `model`, its `task` linked from `data.init_args.task` on instantiation,
`${VAR}` placeholders replaced from the environment. Nothing is downloaded:

  * every `rslearn.models.olmoearth_pretrain.model.OlmoEarth` gets `random_initialization:
    true`, and olmoearth-pretrain-minimal's `load_model_from_id` (which fetches config.json
    from Hugging Face even without weights) is replaced by a builder of the same architecture
    from the package's own size table (`OlmoEarthPretrain_v1(model_size, model_version)`),
    restricted to the encoder input modalities the package registers for the model id;
  * the weights are seeded random (`--seed`), or the Lightning checkpoint's `state_dict`
    (`--checkpoint model.ckpt`, loaded strictly into the LightningModule);
  * class paths that moved between the rslearn the configuration was written for and the
    installed one are mapped (CLASS_PATH_MOVES) and each mapping is printed.

The input spec comes from the `data:` section (and the `dataset.json` beside `model.yaml`):
one input per raster modality that is not a target, bands in the configured order, time steps
= the layers listed (times the query's `max_matches` when `load_all_item_groups`), tile size =
`predict_config.patch_size`, else `default_config.patch_size`, else a `Pad` transform's size.

ONNX model (opset 18, torch dynamo exporter, dynamic batch; dynamic H = W (multiples of the
encoder patch size) and T (1-12) where the architecture allows):
  inputs   s2  float32 [B, H, W, T, 12]  sentinel2_l2a, normalised (OlmoEarthNormalize), bands
                                         in the configuration's order
           s1  float32 [B, H, W, T, 2]   sentinel1 vv, vh in dB, normalised (only if configured)
  (no timestamps input: these configurations use rslearn's legacy timestamps, which fix the
  months to 0..T-1 whatever the acquisition dates, so the graph builds them itself.)
  output   SegmentationHead       `probabilities` [B, N, H, W] (softmax over classes)
           PerPixelRegressionHead `values`        [B, 1, H, W]
           ClassificationHead     `probabilities` [B, N]       (one label per window)

Besides the graph, `<out>.json` is its STAC MLM manifest (the layout of export.py's manifests,
validated offline by export.py's `manifest_errors` before either file is written), generated
from the configuration files: inputs and normalisation (model.yaml), the one declared output =
the graph's first output, classes with names and colours (model.yaml's task,
olmoearth_run.yaml's classification field), the regression's name and range (olmoearth_run.yaml,
README.upstream.md), tile size and overlap (model.yaml), the temporal contract
`eoinfer:temporal` (dataset.json's data sources and model.yaml's layer lists), the task model's
provenance and Ai2's licence and attribution. Facts in no file come from PROJECT_FACTS and are
listed in `eoinfer:not_from_files`.

`--variant nano` swaps the OlmoEarth encoder for v1 Nano and resizes every decoder input width
that carried the Base width (768 -> 128, 1536 -> 256), on the parsed configuration: a CI-sized
stand-in with the project's own decoder and head, NOT Ai2's model. `--golden` also writes test
data from the real WorldCereal window in export.py's format (<out dir>/golden/<out stem>/).

The traced graph is a thin, tensor-only restatement of what rslearn's OlmoEarth /
SimpleTimeSeries `forward` does with a ModelContext (rslearn builds per-sample Python lists,
which a dynamic batch cannot trace); it calls rslearn's own encoder module, and rslearn's own
decoder and head modules exactly as SingleTaskModel / MultiTaskModel chain them. Parity is
checked against rslearn's unmodified model `forward(ModelContext)` (autocast off: rslearn
defaults the OlmoEarth forward to bfloat16 autocast, which an fp32 graph does not reproduce;
that gap is reported separately as `bf16_autocast_vs_fp32`).

usage: .venv-rslearn/bin/python models/olmoearth/rslearn_export.py \
         --rslearn-config ../shared/olmoearth-projects/lfmc/model.yaml [--checkpoint model.ckpt]
         [--seed 0] [--out /tmp/lfmc.onnx] [--size 32] [--time-steps 12]
         [--save-random-checkpoint /tmp/lfmc-random.ckpt] [--report report.json]
         [--variant nano] [--golden] [--delete] [--skip-bf16] [--plain-attention]
   (or models/olmoearth/export.py --rslearn-config ..., which re-executes this script here)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing may reach a hub
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# The project's OlmoEarth encoder exporter: its einsum fix (installed on import) and its
# attention mapping to com.microsoft::MultiHeadAttention are reused as they are.
import export as oe_export  # noqa: E402

import lightning.pytorch as L  # noqa: E402
from jsonargparse import ArgumentParser  # noqa: E402
from olmoearth_pretrain_minimal import ModelID, OlmoEarthPretrain_v1  # noqa: E402
from olmoearth_pretrain_minimal import model_loader as oe_loader  # noqa: E402
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality  # noqa: E402
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (  # noqa: E402
    MaskedOlmoEarthSample,
    MaskValue,
)

import rslearn  # noqa: E402,F401
import rslearn.models.olmoearth_pretrain.model as rs_olmoearth  # noqa: E402
from rslearn.models.component import FeatureMaps, FeatureVector  # noqa: E402
from rslearn.models.multitask import MultiTaskModel  # noqa: E402
from rslearn.models.simple_time_series import SimpleTimeSeries  # noqa: E402
from rslearn.models.singletask import SingleTaskModel  # noqa: E402
from rslearn.template_params import substitute_env_vars_in_string  # noqa: E402
from rslearn.train.model_context import ModelContext, RasterImage  # noqa: E402
from rslearn.train.tasks.classification import ClassificationHead  # noqa: E402
from rslearn.train.tasks.per_pixel_regression import PerPixelRegressionHead  # noqa: E402
from rslearn.train.tasks.segmentation import SegmentationHead  # noqa: E402
from rslearn.train.tasks.task import Task  # noqa: E402
from rslearn.utils.jsonargparse import init_jsonargparse  # noqa: E402

OLMOEARTH_CLASS = "rslearn.models.olmoearth_pretrain.model.OlmoEarth"
# Class paths of older rslearn releases -> where the pinned rslearn has them. Each entry is
# applied (and printed) only when the old path no longer imports.
CLASS_PATH_MOVES: dict[str, str] = {
    "rslearn.models.olmoearth_pretrain.model.OlmoEarthPretrain": OLMOEARTH_CLASS,
    "rslearn.models.helios.Helios": OLMOEARTH_CLASS,
    "rslearn.train.tasks.segmentation.SegmentationPoolingDecoder": "rslearn.models.pooling_decoder.SegmentationPoolingDecoder",
}
# ONNX input name per rslearn modality (eoinfer's names, as in export.py).
INPUT_NAMES = {"sentinel2_l2a": "s2", "sentinel1": "s1", "landsat": "landsat"}
PARITY_TOLERANCE = 1e-4
MAX_TIME_STEPS = 12  # OlmoEarth's max_sequence_length (and the 12 months of its encoding)


# ---------------------------------------------------------------------------------------
# Configuration: class paths, offline OlmoEarth, instantiation


def _walk(obj, fn):
    if isinstance(obj, dict):
        fn(obj)
        for v in obj.values():
            _walk(v, fn)
    elif isinstance(obj, list):
        for v in obj:
            _walk(v, fn)


def _importable(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def map_class_paths(section: dict) -> list[str]:
    """Rewrite class paths that moved; returns 'old -> new' lines, raises on unknown ones."""
    mapped, missing = [], []

    def fix(d: dict) -> None:
        cp = d.get("class_path")
        if not isinstance(cp, str) or _importable(cp):
            return
        if cp in CLASS_PATH_MOVES and _importable(CLASS_PATH_MOVES[cp]):
            d["class_path"] = CLASS_PATH_MOVES[cp]
            mapped.append(f"{cp} -> {d['class_path']}")
        else:
            missing.append(cp)

    _walk(section, fix)
    if missing:
        raise SystemExit(f"class paths that rslearn {rslearn_version()} does not have and no mapping is known for: {sorted(set(missing))}")
    for line in mapped:
        print(f"mapped class path: {line}", file=sys.stderr)
    return mapped


def rslearn_version() -> str:
    return importlib.metadata.version("rslearn")


def _model_id_architecture(model_id: ModelID) -> tuple[str, str]:
    """OlmoEarth-v1-Base -> ('v1', 'base'); OlmoEarth-v1_2-Small -> ('v1.2', 'small')."""
    _, version, size = str(model_id).split("-")
    return version.replace("_", "."), size.lower()


def offline_load_model_from_id(model_id: ModelID, load_weights: bool = True) -> torch.nn.Module:
    """load_model_from_id without Hugging Face: the architecture from the package's size table."""
    if load_weights:
        raise SystemExit(f"{model_id}: loading pretrained weights needs Hugging Face; the export sets random_initialization")
    version, size = _model_id_architecture(ModelID(model_id))
    model = OlmoEarthPretrain_v1(model_size=size, model_version=version).model
    oe_loader._restrict_encoder_inputs(model, oe_loader._get_encoder_input_modalities(ModelID(model_id)))
    return model


rs_olmoearth.load_model_from_id = offline_load_model_from_id


def olmoearth_model_ids(section: dict) -> list[str]:
    ids = []
    _walk(section, lambda d: ids.append(d.get("init_args", {}).get("model_id")) if d.get("class_path") == OLMOEARTH_CLASS else None)
    return ids


def force_random_init(section: dict) -> list[str]:
    notes = []

    def fix(d: dict) -> None:
        if d.get("class_path") == OLMOEARTH_CLASS:
            args = d.setdefault("init_args", {})
            if args.get("model_path") or args.get("checkpoint_path"):
                raise SystemExit("OlmoEarth from model_path / checkpoint_path is not supported offline: only model_id")
            if not args.get("random_initialization"):
                args["random_initialization"] = True
                notes.append(f"OlmoEarth({args.get('model_id')}): random_initialization=true (architecture from olmoearth-pretrain-minimal, no download)")

    _walk(section, fix)
    return notes


def build_module(cfg: dict, seed: int) -> tuple[L.LightningModule, list[str]]:
    """The LightningModule of the configuration, as RslearnLightningCLI instantiates it."""
    init_jsonargparse()
    model_cfg = cfg["model"]
    task_cfg = cfg["data"]["init_args"]["task"]
    notes = [f"class path mapped: {m}" for m in map_class_paths(model_cfg) + map_class_paths(task_cfg)]
    notes += force_random_init(model_cfg)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningModule, "model", required=True)
    parser.add_subclass_arguments(Task, "task", required=True)
    parser.link_arguments("task", "model.init_args.task", apply_on="instantiate")
    # A copy: the parsed sections are read again for the manifest.
    ns = parser.parse_object(copy.deepcopy({"model": model_cfg, "task": task_cfg}))
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init = parser.instantiate(ns) if hasattr(parser, "instantiate") else parser.instantiate_classes(ns)
    seen = set()
    for w in caught:
        if issubclass(w.category, (FutureWarning, DeprecationWarning)) and "rslearn" in str(w.filename):
            msg = str(w.message).split("\n")[0]
            if msg not in seen:
                seen.add(msg)
                notes.append(f"rslearn warns: {msg}")
    return init.model.eval(), notes


# ---------------------------------------------------------------------------------------
# Input spec from the data section


def _count_item_groups(dataset: dict | None, layer: str) -> int:
    base = layer.split(".")[0]
    if dataset is None or base not in dataset.get("layers", {}):
        raise SystemExit(f"layer {layer} loads all item groups: its dataset.json (beside model.yaml) is needed for max_matches")
    return int(dataset["layers"][base]["data_source"]["query_config"]["max_matches"])


def input_spec(cfg: dict, dataset: dict | None) -> dict:
    data = cfg["data"]["init_args"]
    modalities = {}
    for name, inp in data["inputs"].items():
        args = inp.get("init_args", inp)  # DataInput written with or without class_path
        if args.get("is_target") or args.get("data_type") != "raster":
            continue
        if name not in INPUT_NAMES:
            raise SystemExit(f"input {name} is not an OlmoEarth modality this exporter maps ({list(INPUT_NAMES)})")
        layers = args["layers"]
        steps = sum(_count_item_groups(dataset, l) for l in layers) if args.get("load_all_item_groups") else len(layers)
        canonical = [b for bs in Modality.get(name).band_sets for b in bs.bands]
        if list(args["bands"]) != canonical:
            raise SystemExit(f"{name}: bands {args['bands']} are not OlmoEarth's order {canonical}, which rslearn assumes")
        modalities[name] = {"input": INPUT_NAMES[name], "bands": list(args["bands"]), "time_steps": steps, "layers": list(layers)}
    # Order as rslearn's OlmoEarth visits them.
    modalities = {m: modalities[m] for m in rs_olmoearth.MODALITY_NAMES if m in modalities}

    def split(key):
        c = data.get(key) or {}
        return c.get("init_args", c)

    size, size_from = None, None
    for key in ("predict_config", "default_config"):
        if split(key).get("patch_size"):
            size, size_from = int(split(key)["patch_size"]), f"{key}.patch_size"
            break
    if size is None:
        for key in ("predict_config", "default_config"):
            for t in split(key).get("transforms") or []:
                if str(t.get("class_path", "")).endswith("transforms.pad.Pad"):
                    size, size_from = int(t["init_args"]["size"]), f"{key} Pad size"
                    break
            if size:
                break
    return {"modalities": modalities, "size": size, "size_from": size_from}


# ---------------------------------------------------------------------------------------
# The exportable graph


def _unwrap(net: torch.nn.Module):
    """(encoder list, decoder list, task name) of a SingleTaskModel / MultiTaskModel."""
    if isinstance(net, MultiTaskModel):
        if net.trunk is not None:
            raise SystemExit("MultiTaskModel with a trunk is not supported")
        if len(net.decoders) != 1:
            raise SystemExit(f"MultiTaskModel with {len(net.decoders)} decoders: export one task at a time (not implemented)")
        (name, decoder), = net.decoders.items()
        return net.encoder, decoder, name
    if isinstance(net, SingleTaskModel):
        return net.encoder, net.decoder, None
    raise SystemExit(f"unsupported model class {type(net).__name__}")


def olmoearth_features(oe: rs_olmoearth.OlmoEarth, images: dict[str, torch.Tensor]) -> torch.Tensor:
    """rslearn OlmoEarth.forward with legacy timestamps, every modality present with the same
    T, nothing missing (fast_pass), token pooling: [B, H, W, T, C] per modality -> [B, D, h, w]."""
    if oe.normalize or oe.use_location_token_output or not oe.token_pooling or not oe.use_legacy_timestamps:
        raise SystemExit("OlmoEarth options normalize / use_location_token_output / token_pooling=false / "
                         "use_legacy_timestamps=false are not supported by this exporter")
    present = [m for m in rs_olmoearth.MODALITY_NAMES if m in images]
    ref = images[present[0]]
    fields = {}
    for m in present:
        x = images[m]
        fields[m] = x
        band_sets = len(Modality.get(m).band_sets)
        fields[f"{m}_mask"] = torch.full_like(x[..., :band_sets], MaskValue.ONLINE_ENCODER.value, dtype=torch.int32)
    # Legacy timestamps: day 1, month = time index, year 2024.
    month = torch.cumsum(torch.ones_like(ref[:, 0, 0, :, 0], dtype=torch.int32), dim=1) - 1  # [B, T]
    fields["timestamps"] = torch.stack([torch.ones_like(month), month, torch.full_like(month, 2024)], dim=-1)
    out = oe.model(MaskedOlmoEarthSample(**fields), fast_pass=True, patch_size=oe.patch_size, **oe.forward_kwargs)
    tokens = out["tokens_and_masks"]
    pooled = [getattr(tokens, m).mean(dim=[3, 4]).permute(0, 3, 1, 2) for m in present]  # BHWTSC -> BCHW
    return torch.stack(pooled, dim=0).mean(dim=0)


def simple_time_series_features(sts: SimpleTimeSeries, images: dict[str, torch.Tensor]) -> torch.Tensor:
    """rslearn SimpleTimeSeries.forward (ops max / mean) over an OlmoEarth encoder."""
    if sts._deprecated_image_keys_dict is not None or sts.op not in ("max", "mean"):
        raise SystemExit("SimpleTimeSeries: only image_key(s) lists and the max / mean ops are supported")
    if not isinstance(sts.encoder, rs_olmoearth.OlmoEarth):
        raise SystemExit("SimpleTimeSeries: only an OlmoEarth encoder is supported")
    first = images[sts.image_keys[0]]
    steps = sts._deprecated_image_channels // first.shape[-1] if sts._deprecated_image_channels else sts.num_timesteps_per_forward_pass
    n_images = first.shape[3] // steps
    batch = first.shape[0]
    split = {}
    for key in sts.image_keys:
        x = images[key]
        b, h, w, t, c = x.shape
        # "b c (n k) h w -> (b n) c k h w" in rslearn's CTHW terms.
        split[key] = x.reshape(b, h, w, n_images, steps, c).permute(0, 3, 1, 2, 4, 5).reshape(b * n_images, h, w, steps, c)
    feats = olmoearth_features(sts.encoder, split)
    feats = feats.reshape(batch, n_images, feats.shape[1], feats.shape[2], feats.shape[3])
    groups = sts.groups or [list(range(n_images))]
    out = []
    for group in groups:
        g = torch.stack([feats[:, i] for i in group], dim=0)
        out.append(torch.amax(g, dim=0) if sts.op == "max" else torch.mean(g, dim=0))
    return torch.cat(out, dim=1)


class RslearnGraph(torch.nn.Module):
    """Tensor in, tensor out: the configuration's encoder, decoder and head."""

    def __init__(self, net: torch.nn.Module, modalities: list[str]) -> None:
        super().__init__()
        self.net = net
        self.modalities = modalities
        self.encoder, self.decoder, self.task = _unwrap(net)

    def forward(self, s2: torch.Tensor | None = None, s1: torch.Tensor | None = None, landsat: torch.Tensor | None = None) -> torch.Tensor:
        given = {"s2": s2, "s1": s1, "landsat": landsat}
        images = {m: given[INPUT_NAMES[m]] for m in self.modalities}
        # Components that look at the input (SegmentationPoolingDecoder: its H, W) see sample 0.
        context = ModelContext(inputs=[{m: RasterImage(x[0].permute(3, 2, 0, 1)) for m, x in images.items()}], metadatas=[])
        first = self.encoder[0]
        if isinstance(first, rs_olmoearth.OlmoEarth):
            feats = FeatureMaps([olmoearth_features(first, images)])
        elif isinstance(first, SimpleTimeSeries):
            feats = FeatureMaps([simple_time_series_features(first, images)])
        else:
            raise SystemExit(f"unsupported first encoder component {type(first).__name__}")
        for module in list(self.encoder[1:]) + list(self.decoder[:-1]):
            feats = module(feats, context)
        out = self.decoder[-1](feats, context, None).outputs
        if isinstance(self.decoder[-1], PerPixelRegressionHead):
            return out[:, None]  # [B, H, W] -> [B, 1, H, W]
        # The head's input too: the logits its softmax turns into probabilities.
        return out, _head_input(feats)


def _head_input(feats) -> torch.Tensor:
    return feats.feature_vector if isinstance(feats, FeatureVector) else feats.feature_maps[0]


def rslearn_reference(net: torch.nn.Module, modalities: list[str], inputs: list[torch.Tensor], task: str | None) -> list[torch.Tensor]:
    """rslearn's own model forward on a ModelContext (one CTHW RasterImage per sample and
    modality), outputs stacked over the batch as the ONNX graph returns them (plus the
    logits the head received, caught with a hook, for the softmax heads)."""
    batch = inputs[0].shape[0]
    head = net.decoder[-1] if task is None else net.decoders[task][-1]
    caught = []
    hook = head.register_forward_pre_hook(lambda mod, args: caught.append(_head_input(args[0])))
    context = ModelContext(
        inputs=[{m: RasterImage(x[b].permute(3, 2, 0, 1).contiguous()) for m, x in zip(modalities, inputs)} for b in range(batch)],
        metadatas=[None] * batch,
    )
    try:
        outputs = net(context).outputs
    finally:
        hook.remove()
    if task is not None:  # MultiTaskModel: one dict per sample
        outputs = torch.stack([o[task] for o in outputs], dim=0)
    if isinstance(head, PerPixelRegressionHead):
        return [outputs[:, None]]
    return [outputs, caught[0]]


def set_autocast(net: torch.nn.Module, dtype) -> None:
    for m in net.modules():
        if isinstance(m, rs_olmoearth.OlmoEarth):
            m.autocast_dtype = dtype


def head_kind(decoder) -> tuple[str, str]:
    head = decoder[-1]
    if isinstance(head, SegmentationHead):
        return "class map (softmax probabilities per pixel)", ["probabilities", "logits"]
    if isinstance(head, PerPixelRegressionHead):
        return "per-pixel regression" + (" (sigmoid)" if head.use_sigmoid else ""), ["values"]
    if isinstance(head, ClassificationHead):
        return "window classification (softmax probabilities per window)", ["probabilities", "logits"]
    raise SystemExit(f"unsupported head {type(head).__name__}")


# ---------------------------------------------------------------------------------------
# Variants: the configuration with a smaller encoder (a stand-in, not Ai2's model)

VARIANT_MODEL_IDS = {"nano": "OLMOEARTH_V1_NANO"}


def model_id_size(model_id) -> tuple[str, str]:
    """'OLMOEARTH_V1_BASE' (the enum name a YAML gives) or 'OlmoEarth-v1-Base' -> ('v1', 'base')."""
    mid = ModelID[model_id] if isinstance(model_id, str) and model_id in ModelID.__members__ else ModelID(model_id)
    return _model_id_architecture(mid)


def apply_variant(cfg: dict, variant: str | None) -> list[str]:
    """The configuration with every OlmoEarth's model_id replaced by the variant's, and every
    decoder `in_channels` that carries the encoder's width (a multiple of it: 768, 2 x 768 for
    SimpleTimeSeries' concatenated groups, UNet's [[factor, 768]]) resized to the variant's
    width. Works on the parsed configuration (the YAML files stay as published)."""
    if variant is None:
        return []
    new_id = VARIANT_MODEL_IDS[variant]
    new_dim = oe_export.EMBED_DIMS[model_id_size(new_id)[1]]
    notes, old_dims = [], set()

    def encoder(d: dict) -> None:
        if d.get("class_path") == OLMOEARTH_CLASS:
            args = d.setdefault("init_args", {})
            old = args.get("model_id")
            version, size = model_id_size(old)
            if version != model_id_size(new_id)[0]:
                raise SystemExit(f"--variant {variant}: the encoder is OlmoEarth {version}, the variant {new_id}")
            old_dims.add(oe_export.EMBED_DIMS[size])
            args["model_id"] = new_id
            notes.append(f"variant {variant}: OlmoEarth model_id {old} -> {new_id}")

    _walk(cfg["model"], encoder)
    if len(old_dims) != 1:
        raise SystemExit(f"--variant {variant}: expected OlmoEarth encoders of one width, found {sorted(old_dims)}")
    old_dim = old_dims.pop()

    def resize(v):
        if isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % old_dim == 0:
            return v // old_dim * new_dim
        return v

    def decoder(d: dict) -> None:
        args = d.get("init_args")
        if d.get("class_path") in (None, OLMOEARTH_CLASS) or not isinstance(args, dict) or "in_channels" not in args:
            return
        old = args["in_channels"]
        if isinstance(old, list):  # UNetDecoder: [[downsample factor, channels], ...]
            new = [[f, resize(c)] for f, c in old]
        else:
            new = resize(old)
        if new != old:
            args["in_channels"] = new
            notes.append(f"variant {variant}: {d['class_path'].rsplit('.', 1)[-1]} in_channels {old} -> {new}")

    _walk(cfg["model"], decoder)
    return notes


# ---------------------------------------------------------------------------------------
# The STAC MLM manifest, generated from the configuration files

OE_PROJECTS_REPO = "allenai/olmoearth_projects"
OE_PROJECTS_COMMIT = "f8974cb52f217f9633c45e676741baa034103970"
LICENSE_ID = oe_export.OLMOEARTH_LICENSE
LICENSE_LINK = oe_export.OLMOEARTH_LICENSE_LINK
HEAD_KINDS = {SegmentationHead: "segmentation", PerPixelRegressionHead: "regression", ClassificationHead: "classification"}
MLM_TASKS = {"segmentation": "semantic-segmentation", "regression": "regression", "classification": "classification"}
# Facts a manifest needs that none of a project's files states, per project; each one used is
# listed in the manifest's `eoinfer:not_from_files` with its reason.
PROJECT_FACTS: dict[str, dict[str, tuple]] = {
    "lfmc": {
        "regression_unit": (
            "%",
            "README.upstream.md and the configuration files do not state the unit; live fuel moisture content is by "
            "definition a percentage of dry weight (Globe-LFMC 2.0, the training data README.upstream.md names), which "
            "olmoearth_run.yaml's value range 30-200 agrees with",
        ),
    },
}
INVALID_COLOR = "000000"  # classes the run configuration does not name (invalid / nodata)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def task_section(cfg: dict) -> tuple[dict, str | None]:
    """(the task's configuration, its name inside a MultiTask or None)."""
    task = cfg["data"]["init_args"]["task"]
    if task["class_path"].endswith(".MultiTask"):
        tasks = task["init_args"]["tasks"]
        if len(tasks) != 1:
            raise SystemExit(f"MultiTask with {len(tasks)} tasks: not supported")
        (name, sub), = tasks.items()
        return sub, name
    return task, None


def _hex(color: list) -> str:
    return "".join(f"{int(c):02x}" for c in color[:3])


def _readme_title(readme: str | None) -> str | None:
    m = re.search(r"^#+\s*(.+?)\s*$", readme or "", re.M)
    return m.group(1) if m else None


def manifest_classes(kind: str, task_args: dict, run_cfg: dict | None, n_out: int) -> list[dict]:
    """classification:classes from the task (model.yaml) and the run configuration's
    classification field (olmoearth_run.yaml: value, label, color)."""
    fields = ((run_cfg or {}).get("inference_results_config") or {}).get("classification_fields") or []
    allowed = {int(a["value"]): a for a in (fields[0].get("allowed_values") or [])} if fields else {}
    where = "olmoearth_run.yaml inference_results_config.classification_fields[0].allowed_values"
    classes = []
    if kind == "classification":
        names = list(task_args["classes"])
        by_label = {a["label"]: a for a in allowed.values()}
        for i, name in enumerate(names):
            a = by_label.get(name)
            if a is not None and int(a["value"]) == i:
                color, src = _hex(a["color"]), f"colour from {where}"
            else:
                color = oe_export.PALETTE[i % len(oe_export.PALETTE)]
                src = "colour from a fixed qualitative palette (ColorBrewer Dark2/Paired; the project's files give none)"
            classes.append({"value": i, "name": name, "description": f"{name} (class {i} of the task's `classes` in model.yaml; {src})", "color_hint": color})
    else:
        n = int(task_args["num_classes"])
        nodata = task_args.get("nodata_value")
        for i in range(n):
            a = allowed.get(i)
            if a is not None:
                alpha = f", alpha {a['color'][3]} dropped" if len(a["color"]) > 3 else ""
                classes.append({"value": i, "name": a["label"], "description": f"{a['label']} (class {i}; name and colour from {where}{alpha})", "color_hint": _hex(a["color"])})
            elif i == 0 and task_args.get("zero_is_invalid"):
                classes.append({"value": 0, "name": "invalid", "description": (
                    "invalid: the task sets zero_is_invalid (class 0 marks label pixels without a valid class and is never a "
                    f"training target, so the model should not predict it); not named in olmoearth_run.yaml, colour {INVALID_COLOR} chosen here"),
                    "color_hint": INVALID_COLOR})
            elif nodata is not None and i == int(nodata):
                classes.append({"value": i, "name": "nodata", "description": (
                    f"nodata: the task's nodata_value {i} (label pixels without a class, never a training target); not named in "
                    f"olmoearth_run.yaml, colour {INVALID_COLOR} chosen here"), "color_hint": INVALID_COLOR})
            else:
                classes.append({"value": i, "name": f"class_{i}", "description": (
                    f"class {i} of the task's num_classes {n}: not named in olmoearth_run.yaml; colour from a fixed qualitative palette"),
                    "color_hint": oe_export.PALETTE[i % len(oe_export.PALETTE)]})
    if len(classes) != n_out:
        raise SystemExit(f"the configuration names {len(classes)} classes, the model outputs {n_out}")
    return classes


def regression_facts(project: str, run_cfg: dict | None, readme: str | None, not_from_files: dict) -> dict:
    fields = ((run_cfg or {}).get("inference_results_config") or {}).get("regression_fields") or []
    if not fields:
        raise SystemExit("a regression model needs olmoearth_run.yaml inference_results_config.regression_fields (its value range)")
    field = fields[0]
    title = _readme_title(readme)
    abbreviation = re.search(r"\(([A-Za-z0-9]+)\)", title or "")
    name = abbreviation.group(1).lower() if abbreviation else field["property_name"]
    if re.search(r"\bper ?cent(age)?\b", readme or "", re.I):
        unit = "%"
    elif "regression_unit" in PROJECT_FACTS.get(project, {}):
        unit, why = PROJECT_FACTS[project]["regression_unit"]
        not_from_files["eoinfer:regression.unit"] = why
    else:
        raise SystemExit(f"{project}: the unit of the regressed value is in no file and not in PROJECT_FACTS")
    return {
        "name": name,
        "unit": unit,
        "nodata": oe_export.REGRESSION_NODATA,
        "range": [float(field["min_value"]), float(field["max_value"])],
        "long_name": title.split("(")[0].strip() if title and abbreviation else name,
    }


def _days(td) -> float | int | None:
    if td is None:
        return None
    d = td.total_seconds() / 86400.0
    return int(d) if d == int(d) else d


def temporal_contract(cfg: dict, dataset: dict | None, spec: dict) -> dict:
    """What the T time steps are: per dataset.json raster layer data_source (time_offset,
    duration, query_config) and model.yaml's layer lists."""
    from rslearn.config.dataset import DataSourceConfig
    from rslearn.config.dataset import SpaceMode, TimeMode

    if dataset is None:
        raise SystemExit("the temporal contract needs the dataset.json beside model.yaml")
    inputs = cfg["data"]["init_args"]["inputs"]
    per_modality = {}
    for modality, mspec in spec["modalities"].items():
        args = inputs[modality].get("init_args", inputs[modality])
        runs: list[list] = []  # consecutive layers from the same dataset layer: [base, count]
        for layer in mspec["layers"]:
            base = layer.split(".")[0]
            if runs and runs[-1][0] == base:
                runs[-1][1] += 1
            else:
                runs.append([base, 1])
        groups = []
        for base, count in runs:
            layer_cfg = dataset["layers"][base]
            raw = layer_cfg["data_source"]
            ds = DataSourceConfig.model_validate(raw)
            qc = ds.query_config
            steps = qc.max_matches if args.get("load_all_item_groups") else count
            offset = _days(ds.time_offset) or 0
            span = _days(ds.duration)
            mosaic = qc.space_mode == SpaceMode.PER_PERIOD_MOSAIC
            period = _days(qc.period_duration) if qc.period_duration is not None else (30 if mosaic else None)
            sort_by = raw.get("init_args", {}).get("sort_by")
            if qc.period_duration is not None or mosaic:
                order = "newest-first" if qc.per_period_mosaic_reverse_time_order else "oldest-first"
            elif qc.time_mode == TimeMode.BEFORE:
                order = "newest-first"
            elif qc.time_mode == TimeMode.AFTER:
                order = "oldest-first"
            else:  # TimeMode.WITHIN keeps the data source's order
                ascending = raw.get("init_args", {}).get("sort_ascending", True)
                order = f"by {sort_by} {'ascending' if ascending else 'descending'}" if sort_by else "data source order"
            alias = layer_cfg.get("alias")
            name = base[: -len(alias) - 1] if alias and base.endswith("_" + alias) else base
            groups.append({
                "name": name, "layer": base, "time_steps": steps, "offset": offset, "span": span,
                "mode": "per-period-mosaic" if mosaic else "scenes", "period": period, "order": order, "sort_by": sort_by,
            })
        per_modality[modality] = groups
    # Names and the mosaics' sort order may differ between modalities; the time steps may not.
    shapes = {m: [{k: v for k, v in g.items() if k not in ("layer", "name", "sort_by")} for g in gs] for m, gs in per_modality.items()}
    first = next(iter(shapes.values()))
    if any(g != first for g in shapes.values()):
        raise SystemExit(f"the modalities' time steps come from different temporal settings ({shapes}): not supported")
    groups = per_modality[next(iter(per_modality))]
    if len({(g["mode"], g["period"], g["order"]) for g in groups}) != 1:
        raise SystemExit(f"layer groups with different query modes: {groups}")
    g0 = groups[0]
    start = min(g["offset"] for g in groups)
    span = None if any(g["span"] is None for g in groups) else max(g["offset"] + g["span"] for g in groups) - start
    layers = sorted({g["layer"] for gs in per_modality.values() for g in gs})
    contract = {
        "time_steps": sum(g["time_steps"] for g in groups),
        "timestamps": "legacy",
        "mode": g0["mode"],
        "period_days": g0["period"],
        "span_days": span,
        "offset_days": start,
        "order": g0["order"],
    }
    if g0["mode"] == "per-period-mosaic":
        contract["anchor"] = "end"
    if len(groups) > 1:
        contract["groups"] = [
            {"name": g["name"], "time_steps": g["time_steps"], "offset_days": [g["offset"], None if g["span"] is None else g["offset"] + g["span"]]}
            for g in groups
        ]
    mods = ", ".join(f"{m} ({len(spec['modalities'][m]['layers'])} layer(s)"
                     + (", load_all_item_groups" if inputs[m].get("init_args", inputs[m]).get("load_all_item_groups") else "") + ")"
                     for m in spec["modalities"])
    contract["source"] = (
        f"dataset.json layers {', '.join(layers)}: data_source time_offset, duration, query_config (space_mode, period_duration, "
        f"max_matches, per_period_mosaic_reverse_time_order default) and init_args.sort_by; model.yaml data.init_args.inputs "
        f"{mods}. Days are relative to the start of the prediction window's time range (rslearn get_request_time_range: "
        "start + time_offset, then start + time_offset + duration; no duration = the window's own range, span_days null). "
        "per-period-mosaic: rslearn cuts periods of period_days backwards from the end of the span (anchor end) and keeps up to "
        "max_matches, most recent first (order newest-first, rslearn 0.1.19's default per_period_mosaic_reverse_time_order=true), "
        "each a mosaic of the least cloudy scenes first; scenes: max_matches whole scenes ordered as the data source sorts them. "
        "timestamps legacy: the model sees month = time step index whatever the dates"
        + ("; with groups, offset_days and span_days cover all groups, and the groups are concatenated in this order." if len(groups) > 1 else ".")
    )
    return contract


def build_task_manifest(ctx: dict) -> dict:
    """The STAC MLM manifest of an rslearn task model export (ctx: what main() knows)."""
    project, variant, random, seed = ctx["project"], ctx["variant"], ctx["checkpoint"] is None, ctx["seed"]
    kind, mods, steps = ctx["kind"], ctx["modalities"], ctx["time_steps"]
    task_cfg, task_name = task_section(ctx["cfg"])
    task_args = task_cfg.get("init_args") or {}
    not_from_files: dict[str, str] = {}
    bands = [{"name": b, "eo:common_name": oe_export.S2_COMMON[b][0], "eo:center_wavelength": oe_export.S2_COMMON[b][1]} for b in oe_export.S2_BANDS]
    t_dim = steps if not ctx["time_dynamic"] else -1
    inputs = []
    for modality, m in mods.items():
        name = m["input"]
        if name == "s2":
            if m["bands"] != oe_export.S2_BANDS:
                raise SystemExit(f"s2 bands {m['bands']} differ from export.py's {oe_export.S2_BANDS}")
            inputs.append({
                "name": "s2",
                "bands": oe_export.S2_BANDS,
                "input": {"shape": [-1, -1, -1, t_dim, 12], "dim_order": ["batch", "height", "width", "time", "bands"], "data_type": "float32"},
                "value_scaling": oe_export.norm_stats("sentinel2_l2a", oe_export.S2_BANDS),
                "resize_type": None,
                "pre_processing_function": None,
                "description": "Sentinel-2 L2A reflectance (DN), normalised by OlmoEarthNormalize (std_multiplier 2) = the min-max value_scaling",
            })
        elif name == "s1":
            if m["bands"] != oe_export.S1_BANDS:
                raise SystemExit(f"s1 bands {m['bands']} differ from export.py's {oe_export.S1_BANDS}")
            bands += [{"name": "vv", "description": "Sentinel-1 VV backscatter, dB"}, {"name": "vh", "description": "Sentinel-1 VH backscatter, dB"}]
            inputs.append({
                "name": "s1",
                "bands": oe_export.S1_BANDS,
                "input": {"shape": [-1, -1, -1, t_dim, 2], "dim_order": ["batch", "height", "width", "time", "bands"], "data_type": "float32"},
                "value_scaling": oe_export.norm_stats("sentinel1", oe_export.S1_BANDS),
                "resize_type": None,
                "pre_processing_function": None,
                "description": "Sentinel-1 vv, vh backscatter in dB (rslearn Sentinel1ToDecibels: 10 log10 of linear power), then "
                "normalised by OlmoEarthNormalize (std_multiplier 2) = the min-max value_scaling",
            })
        else:
            raise SystemExit(f"no manifest input for {modality}")
    readme = ctx["readme"]
    title = _readme_title(readme) or project
    n_out = ctx["output_shape"][1]
    if kind == "segmentation":
        output = {
            "name": "probabilities",
            "description": "class probabilities per pixel: the softmax rslearn's SegmentationHead applies (its inference output); "
            "the graph's second output `logits` is the head's input",
            "tasks": ["semantic-segmentation"],
            "result": {"shape": [-1, n_out, -1, -1], "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
            "classification:classes": manifest_classes(kind, task_args, ctx["run_cfg"], n_out),
            "post_processing_function": None,
        }
    elif kind == "classification":
        output = {
            "name": "probabilities",
            "description": f"class probabilities, one row per input window of {ctx['tile_size']} x {ctx['tile_size']} pixels: the softmax "
            "rslearn's ClassificationHead applies (its inference output); the graph's second output `logits` is the head's input",
            "tasks": ["classification"],
            "result": {"shape": [-1, n_out], "dim_order": ["batch", "class"], "data_type": "float32"},
            "classification:classes": manifest_classes(kind, task_args, ctx["run_cfg"], n_out),
            "post_processing_function": None,
        }
    else:
        regression = regression_facts(project, ctx["run_cfg"], readme, not_from_files)
        output = {
            "name": "values",
            "description": f"{regression['long_name']} ({regression['name']}) in {regression['unit']} per pixel: rslearn "
            f"PerPixelRegressionHead's output{' (sigmoid)' if ctx['use_sigmoid'] else ' (no sigmoid, no scaling)'}, [B, H, W] with a channel axis added",
            "tasks": ["regression"],
            "result": {"shape": [-1, 1, -1, -1], "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
            "post_processing_function": None,
        }
    wrapper = ctx["encoder_class"].rsplit(".", 1)[-1]
    encoder_words = "OlmoEarth v1 encoder" if ctx["encoder_class"] == OLMOEARTH_CLASS else f"{wrapper} over an OlmoEarth v1 encoder"
    what = {"segmentation": "class map", "classification": "one class per window", "regression": "per-pixel value"}[kind]
    description = (
        f"{title}: Ai2's OlmoEarth task model '{project}' ({OE_PROJECTS_REPO}), built by rslearn {rslearn_version()} from its model.yaml "
        f"and exported by models/olmoearth/rslearn_export.py as one ONNX graph ({encoder_words} + {', '.join(c.rsplit('.', 1)[-1] for c in ctx['decoders'])} "
        f"+ {ctx['head'].rsplit('.', 1)[-1]}): " + " + ".join("Sentinel-2 L2A" if i["name"] == "s2" else "Sentinel-1" for i in inputs)
        + f" time series ({steps} steps) -> {what}. "
        + (f"RANDOM WEIGHTS (seed {seed}): for testing the pipeline, not for analysis. " if random else f"Weights from the Lightning checkpoint {ctx['checkpoint']['file']}. ")
        + (f"NOT Ai2's model: a stand-in with a Nano encoder and {project}'s own decoder and head resized to it. " if variant == "nano" else "")
    ).strip()
    model_version, model_size = model_id_size(ctx["model_id"])
    attribution = (
        f"The architecture and configuration are Ai2's (Allen Institute for AI) task model '{project}' from {OE_PROJECTS_REPO} "
        f"(commit {OE_PROJECTS_COMMIT}, see ../shared/olmoearth-projects/README.md), under the OlmoEarth Artifact License: cite Ai2; "
        "its use restrictions (no military or defence uses, no surveillance or policing, no extractive uses such as mining, drilling "
        "or deforestation) pass on to every derivative, this model included; include a link to or a copy of the licence with any distribution."
    )
    if not_from_files:
        not_from_files["note"] = f"these facts are not in {project}'s files: they come from rslearn_export.py's PROJECT_FACTS table"
    sha = sha256_file(ctx["onnx_bytes"])
    doc = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [oe_export.MLM_SCHEMA, oe_export.EO_SCHEMA, oe_export.FILE_SCHEMA]
        + ([oe_export.CLASSIFICATION_SCHEMA] if kind in ("segmentation", "classification") else []),
        "id": ctx["onnx_path"].stem,
        "geometry": None,
        "properties": {
            "datetime": None,
            "start_datetime": "2016-01-01T00:00:00Z",
            "end_datetime": "2025-12-31T00:00:00Z",
            "description": description,
            "license": LICENSE_ID,
            "mlm:name": f"OlmoEarth task model {project}" + (f" {variant} stand-in" if variant else ""),  # MLM: no parentheses
            "mlm:architecture": f"ViT ({encoder_words}) + rslearn {' + '.join(c.rsplit('.', 1)[-1] for c in ctx['decoders'] + [ctx['head']])}",
            "mlm:tasks": [MLM_TASKS[kind]],
            "mlm:framework": "ONNX",
            "mlm:accelerator": "amd64",
            "mlm:accelerator_constrained": False,
            "mlm:pretrained": not random,
            "mlm:pretrained_source": None if random else f"Lightning checkpoint {ctx['checkpoint']['file']} (sha256 {ctx['checkpoint']['sha256']})",
            "bands": bands,
            "gsd": 10.0,
            "mlm:input": inputs,
            "mlm:output": [output],
            "eoinfer:kind": "embedding",
            "eoinfer:head": kind,
            **({"eoinfer:window_size": ctx["tile_size"]} if kind == "classification" else {}),
            **({"eoinfer:regression": {k: regression[k] for k in ("name", "unit", "nodata", "range")}} if kind == "regression" else {}),
            "eoinfer:model_family": "olmoearth",
            "eoinfer:model_version": model_version,
            "eoinfer:model_size": model_size,
            "eoinfer:random_weights": random,
            "eoinfer:seed": seed if random else None,
            "eoinfer:patch_size": ctx["patch_size"],
            "eoinfer:embedding_dim": ctx["embedding_dim"],
            "eoinfer:max_time_steps": steps,
            "eoinfer:square_tiles": True,
            "eoinfer:tile_size": ctx["tile_size"],
            "eoinfer:overlap": ctx["overlap"],
            "eoinfer:gsd": 10.0,
            "eoinfer:product_level": "L2A",
            "eoinfer:dn_scale": 1.0,
            "eoinfer:dn_nodata": 0,
            "eoinfer:missing_bands": "nearest-wavelength",
            "eoinfer:temporal": ctx["temporal"],
            "eoinfer:attention": "onnx" if ctx["plain_attention"] else "com.microsoft::MultiHeadAttention",
            "eoinfer:parity": {"tolerance": PARITY_TOLERANCE, "reference": "rslearn's own model forward (PyTorch, fp32)", "shapes": ctx["parity"]},
            "eoinfer:export_seconds": ctx["export_seconds"],
            "eoinfer:exporter": f"models/olmoearth/rslearn_export.py: rslearn {rslearn_version()}, torch {torch.__version__} dynamo, opset 18; onnxruntime {ort.__version__}",
            "eoinfer:task_model": {
                "project": project,
                "config": ctx["config_arg"],
                "config_sha256": sha256_file(ctx["config_path"]),
                "dataset_sha256": sha256_file(ctx["dataset_path"]) if ctx["dataset_path"].exists() else None,
                "rslearn": rslearn_version(),
                "task": task_cfg["class_path"],
                **({"task_name": task_name} if task_name else {}),
                "encoder": ctx["model_id"],
                "encoder_class": ctx["encoder_class"],
                "decoders": ctx["decoders"],
                "head": ctx["head"],
                "checkpoint": None if random else {"sha256": ctx["checkpoint"]["sha256"], "file": ctx["checkpoint"]["file"]},
                "variant": variant,
                **({"variant_changes": ctx["variant_notes"]} if variant else {}),
                "tile_size_from": ctx["tile_size_from"],
                "overlap_from": ctx["overlap_from"],
            },
            "eoinfer:attribution": attribution,
            **({"eoinfer:not_from_files": not_from_files} if not_from_files else {}),
        },
        "links": [LICENSE_LINK],
        "assets": {
            "model": {
                "href": ctx["onnx_path"].name,
                "type": "application/octet-stream; application=onnx",
                "roles": ["mlm:model", "mlm:weights", "data"],
                "mlm:artifact_type": "onnx",
                "file:size": ctx["onnx_bytes"].stat().st_size,
                "file:checksum": "1220" + sha,
                "bands": bands,
            }
        },
    }
    return doc


def overlap_pixels(cfg: dict, tile: int, patch: int) -> tuple[int, str]:
    """predict_config overlap_ratio x tile, rounded down to a multiple of the patch size."""
    data = cfg["data"]["init_args"]
    c = data.get("predict_config") or {}
    c = c.get("init_args", c)
    ratio = c.get("overlap_ratio")
    if not ratio:
        return 0, "predict_config has no overlap_ratio"
    return int(ratio * tile) // patch * patch, f"predict_config.overlap_ratio {ratio} x tile {tile}, rounded down to a multiple of the patch size {patch}"


# ---------------------------------------------------------------------------------------
# Golden data from the real WorldCereal window (export.py's format)


def golden_months(temporal: dict, steps: int) -> list[int]:
    """Which of the window's 12 monthly composites (Nov..Oct) feed the T time steps: all 12
    for T = 12, the first T otherwise (newest first when the contract's order says so, as
    eoinfer feeds them); with two groups (pre / post), the first group from the
    first months and the second from the last months."""
    groups = temporal.get("groups")
    if not groups:
        if steps > 12:
            raise SystemExit(f"T = {steps}: the golden window has 12 months")
        # In the model's order: rslearn's per-period mosaics come newest first.
        months = list(range(steps))
        return months[::-1] if temporal.get("order") == "newest-first" else months
    if len(groups) != 2:
        raise SystemExit("golden data for more than two time step groups is not implemented")
    first, last = groups[0]["time_steps"], groups[1]["time_steps"]
    return list(range(first)) + list(range(12 - last, 12))


def write_golden(out_path: Path, sess, net, graph, mods: dict, out_names: list[str], tile: int, patch: int, temporal: dict, steps: int) -> dict:
    size = max(tile, 8)
    size = -(-size // patch) * patch
    with_s1 = "sentinel1" in mods
    w = oe_export.read_golden_window(with_s1, "v1", size)
    months = golden_months(temporal, steps)
    x = {"s2": torch.from_numpy(np.ascontiguousarray(w["s2"][:, :, months]))[None]}
    if with_s1:
        x["s1"] = torch.from_numpy(np.ascontiguousarray(w["s1"][:, :, months]))[None]
    feeds = [x[mods[m]["input"]] for m in mods]
    with torch.no_grad():
        ref = rslearn_reference(net, list(mods), feeds, graph.task)[0].numpy()
    got = sess.run([out_names[0]], {k: v.numpy() for k, v in x.items()})[0]
    stats = oe_export.compare(ref, got)
    gdir = out_path.parent / "golden" / out_path.stem
    gdir.mkdir(parents=True, exist_ok=True)
    arrays = {"s2": x["s2"].numpy()}
    if with_s1:
        arrays["s1"] = x["s1"].numpy()
    arrays["features"] = ref
    dates = [list(w["dates"][i]) for i in months]
    meta = {
        "source": f"../shared/scenes/s2_s1_monthly_worldcereal_32631_100x100/worldcereal_preprocessed_inputs.nc, window x 0..{size}, y 0..{size}"
        + ("" if months == list(range(12)) else f", months {', '.join(str(i + 1) for i in months)} of 12"),
        "dates": dates,
        "arrays": {k: {"file": f"{k}.bin", "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
        "pytorch_vs_onnxruntime_python": stats,
        "note": "s2/s1 are the normalised model inputs (OlmoEarthNormalize std_multiplier 2; missing bands B8A, B01, B09 filled by "
        "v1's rule; S1 dB = 20 log10(v) - 83 from WorldCereal's uint16), time steps in the order of `dates`, the model's own "
        f"order ({temporal.get('order') or 'chronological'}); "
        f"features is rslearn's own PyTorch forward of the graph's first output `{out_names[0]}` "
        + {"probabilities": "(softmax class probabilities)", "values": "(the regressed value per pixel)"}.get(out_names[0], "")
        + (f"; time steps {temporal['groups'][0]['name']} = the first {temporal['groups'][0]['time_steps']} dates, "
           f"{temporal['groups'][1]['name']} = the last {temporal['groups'][1]['time_steps']}" if temporal.get("groups") else ""),
    }
    for k, v in arrays.items():
        np.ascontiguousarray(v).tofile(gdir / f"{k}.bin")
    (gdir / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {"golden": str(gdir), "size": size, "months": [i + 1 for i in months], **stats}


# ---------------------------------------------------------------------------------------
# Checkpoints


def save_lightning_checkpoint(module: L.LightningModule, path: Path) -> None:
    """A checkpoint in Lightning's layout (what ModelCheckpoint writes, without optimizer state)."""
    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": L.__version__,
            "state_dict": module.state_dict(),
            "loops": {},
            "callbacks": {},
            "optimizer_states": [],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {},
        },
        path,
    )


def load_lightning_checkpoint(module: L.LightningModule, path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # real Lightning checkpoints may pickle hyper-parameters
        print(f"weights_only load failed ({type(e).__name__}); loading {path} with weights_only=False (trusted file)", file=sys.stderr)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt["state_dict"] if "state_dict" in ckpt else ckpt
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f"{path}: state_dict does not match the configuration's model: missing {result.missing_keys[:10]} "
                         f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:10]} ({len(result.unexpected_keys)})")
    return {"path": str(path), "tensors": len(state), "pytorch-lightning_version": ckpt.get("pytorch-lightning_version")}


# ---------------------------------------------------------------------------------------


def random_inputs(modalities: dict, batch: int, size: int, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(batch, size, size, steps, len(spec["bands"]), generator=gen) * 0.3 + 0.5 for spec in modalities.values()]


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rslearn-config", required=True, help="rslearn model.yaml (LightningCLI configuration)")
    p.add_argument("--checkpoint", help="Lightning checkpoint (.ckpt) whose state_dict holds the fine-tuned weights")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (and of nothing else)")
    p.add_argument("--out", help="ONNX file to write (default /tmp/<config folder>[-<variant>].onnx); its STAC MLM manifest "
                   "goes beside it as <out>.json")
    p.add_argument("--variant", choices=sorted(VARIANT_MODEL_IDS), help="nano: the configuration with an OlmoEarth v1 Nano encoder "
                   "and its decoder input widths resized to it (a CI-sized stand-in, not Ai2's model)")
    p.add_argument("--golden", action="store_true", help="also write golden test data (<out dir>/golden/<out stem>/) from the real "
                   "WorldCereal window, in export.py's format")
    p.add_argument("--size", type=int, help="tile edge in pixels (default: from the data section)")
    p.add_argument("--time-steps", type=int, help="time steps (default: from the data section's layers)")
    p.add_argument("--batch", type=int, default=2, help="batch of the traced example")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plain-attention", action="store_true", help="keep attention as plain ONNX ops")
    p.add_argument("--save-random-checkpoint", help="also write a Lightning-style checkpoint of the module as built (before --checkpoint)")
    p.add_argument("--skip-bf16", action="store_true", help="skip the bf16-autocast vs fp32 comparison")
    p.add_argument("--report", help="append the result as one JSON line to this file")
    p.add_argument("--delete", action="store_true", help="delete the ONNX file after measuring it (the manifest stays)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg_path = Path(args.rslearn_config)
    name = cfg_path.parent.name
    cfg = yaml.safe_load(substitute_env_vars_in_string(cfg_path.read_text()))
    dataset_path = cfg_path.parent / "dataset.json"
    dataset = json.loads(dataset_path.read_text()) if dataset_path.exists() else None
    run_path = cfg_path.parent / "olmoearth_run.yaml"
    run_cfg = yaml.safe_load(run_path.read_text()) if run_path.exists() else None
    readme_path = cfg_path.parent / "README.upstream.md"
    readme = readme_path.read_text() if readme_path.exists() else None
    report: dict = {"config": name, "rslearn": rslearn_version(), "torch": torch.__version__, "onnxruntime": ort.__version__}
    variant_notes = apply_variant(cfg, args.variant)
    if args.variant:
        report["variant"] = args.variant

    spec = input_spec(cfg, dataset)
    temporal = temporal_contract(cfg, dataset, spec)  # before the (long) build and export: it may refuse
    mods = spec["modalities"]
    steps_by_mod = {m: s["time_steps"] for m, s in mods.items()}
    if len(set(steps_by_mod.values())) != 1:
        raise SystemExit(f"modalities with different time steps {steps_by_mod}: not supported")
    steps = args.time_steps or next(iter(steps_by_mod.values()))
    size = args.size or spec["size"]
    report["inputs"] = {s["input"]: {"modality": m, "bands": s["bands"], "time_steps": s["time_steps"]} for m, s in mods.items()}

    report["model_id"] = olmoearth_model_ids(cfg["model"])
    t0 = time.time()
    try:
        module, notes = build_module(cfg, args.seed)
    except SystemExit:
        raise
    except Exception as e:
        report.update(builds=False, build_error=f"{type(e).__name__}: {e}")
        print(json.dumps(report))
        if args.report:
            with open(args.report, "a") as f:
                f.write(json.dumps(report) + "\n")
        raise
    report["builds"] = True
    report["build_seconds"] = round(time.time() - t0, 1)
    report["notes"] = variant_notes + notes
    net = module.model
    if args.save_random_checkpoint:
        save_lightning_checkpoint(module, Path(args.save_random_checkpoint))
        report["saved_checkpoint"] = args.save_random_checkpoint
    if args.checkpoint:
        before = {k: v.clone() for k, v in module.state_dict().items()}
        report["checkpoint"] = load_lightning_checkpoint(module, Path(args.checkpoint))
        after = module.state_dict()
        report["checkpoint"]["tensors_changed_from_seed_init"] = sum(
            1 for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k]))
        del before
    net.eval()

    graph = RslearnGraph(net, list(mods)).eval()
    encoders = [m for m in net.modules() if isinstance(m, rs_olmoearth.OlmoEarth)]
    patch = encoders[0].patch_size
    kind, out_names = head_kind(graph.decoder)
    sts = next((m for m in net.modules() if isinstance(m, SimpleTimeSeries)), None)
    time_dynamic = sts is None
    report.update(
        patch_size=patch, size=size, size_from=spec["size_from"], time_steps=steps, output_kind=kind,
        encoder_params=sum(p.numel() for p in encoders[0].parameters()),
        params=sum(p.numel() for p in net.parameters()),
    )
    if size % patch:
        raise SystemExit(f"size {size} is not a multiple of the patch size {patch}")

    gen = torch.Generator().manual_seed(1234)
    names = [mods[m]["input"] for m in mods]
    set_autocast(net, None)
    # Trace with B >= 2 and h/p >= 2 so that no dynamic axis is specialised to 1.
    trace_size = size if size // patch >= 2 else 2 * patch
    example = tuple(random_inputs(mods, args.batch, trace_size, steps, gen))
    with torch.no_grad():
        ref = rslearn_reference(net, list(mods), list(example), graph.task)
        mine = graph(**dict(zip(names, example)))
    mine = list(mine) if isinstance(mine, tuple) else [mine]
    report["wrapper_vs_rslearn_max_abs"] = {n: float((r - m).abs().max()) for n, r, m in zip(out_names, ref, mine)}
    report["output_shape_at_trace"] = {n: list(r.shape) for n, r in zip(out_names, ref)}
    if not args.skip_bf16:
        # rslearn autocasts only the encoder; on CPU its bf16 output then meets the fp32
        # decoder (dtype error), so the whole forward runs under autocast here.
        set_autocast(net, torch.bfloat16)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            bf = rslearn_reference(net, list(mods), list(example), graph.task)
        set_autocast(net, None)
        report["bf16_autocast_vs_fp32_max_abs"] = {n: float((b.float() - r).abs().max()) for n, b, r in zip(out_names, bf, ref)}

    batch_dim = torch.export.Dim("batch", min=1, max=1024)
    side = patch * torch.export.Dim("patches", min=1, max=256)
    time_dim = torch.export.Dim("time", min=1, max=MAX_TIME_STEPS) if time_dynamic else None
    shapes = {}
    for n in names:
        axes = {0: batch_dim, 1: side, 2: side}
        if time_dynamic:
            axes[3] = time_dim
        shapes[n] = axes
    out_path = Path(args.out or f"/tmp/{name}{'-' + args.variant if args.variant else ''}.onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_suffix(".onnx.partial")
    t0 = time.time()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                graph, (), kwargs=dict(zip(names, example)), dynamo=True, opset_version=18, input_names=names, output_names=out_names,
                dynamic_shapes=shapes,
                custom_translation_table=None if args.plain_attention else oe_export._mha_translation(), verbose=False,
            )
        program.save(str(tmp_path), external_data=False)
    except Exception as e:
        report.update(exports=False, export_error=f"{type(e).__name__}: {str(e)[:2000]}")
        print(json.dumps(report))
        if args.report:
            with open(args.report, "a") as f:
                f.write(json.dumps(report) + "\n")
        raise
    report["exports"] = True
    report["export_seconds"] = round(time.time() - t0, 1)
    report["onnx_bytes"] = tmp_path.stat().st_size
    report["dynamic_axes"] = ["batch", "H=W (multiples of %d)" % patch] + (["T (1-12)"] if time_dynamic else [])

    sess = session(tmp_path, args.threads)
    report["onnx_inputs"] = {i.name: i.shape for i in sess.get_inputs()}
    report["onnx_output"] = {o.name: o.shape for o in sess.get_outputs()}
    if [o.name for o in sess.get_outputs()] != out_names:
        tmp_path.unlink()
        raise SystemExit(f"graph outputs {[o.name for o in sess.get_outputs()]}, expected {out_names} (the declared output first)")
    # Parity: the configuration's own shape (batch 1), and one more batch / size / T.
    cases = [(1, size, steps), (3, max(2 * patch, size // 2), max(1, steps - 3) if time_dynamic else steps)]
    parity = []
    for b, hw, t in cases:
        x = random_inputs(mods, b, hw, t, gen)
        t1 = time.time()
        with torch.no_grad():
            r = [t.numpy() for t in rslearn_reference(net, list(mods), x, graph.task)]
        torch_s = time.time() - t1
        t1 = time.time()
        got = sess.run(out_names, {n: v.numpy() for n, v in zip(names, x)})
        ort_s = time.time() - t1
        stats = {"batch": b, "size": hw, "time_steps": t, "shapes": {n: list(g.shape) for n, g in zip(out_names, got)}}
        for n, rr, g in zip(out_names, r, got):
            if g.shape != rr.shape:
                stats.setdefault("shape_mismatch", {})[n] = [list(rr.shape), list(g.shape)]
            else:
                stats[f"max_abs_{n}"] = float(np.abs(rr - g).max())
                stats[f"scale_{n}"] = float(np.abs(rr).max())  # max |PyTorch output|, to read the difference against
        stats["max_abs"] = max((v for k, v in stats.items() if k.startswith("max_abs_")), default=float("inf"))
        stats.update(torch_s=round(torch_s, 1), ort_s=round(ort_s, 1))
        print(json.dumps(stats), file=sys.stderr)
        parity.append(stats)
    report["parity"] = parity
    report["max_abs"] = max(s["max_abs"] for s in parity)
    report["parity_ok"] = report["max_abs"] <= PARITY_TOLERANCE and not any("shape_mismatch" in s for s in parity)

    def finish(error: str | None = None) -> None:
        print(json.dumps(report))
        if args.report:
            with open(args.report, "a") as f:
                f.write(json.dumps(report) + "\n")
        if error:
            sys.exit(error)

    if not report["parity_ok"]:
        tmp_path.unlink()
        finish(f"refusing to write {out_path}: ONNX Runtime differs from rslearn's PyTorch forward by {report['max_abs']:.2e} > {PARITY_TOLERANCE}")

    # The STAC MLM manifest, from the configuration files; refused (with the graph) unless valid.
    kind = next(k for cls, k in HEAD_KINDS.items() if isinstance(graph.decoder[-1], cls))
    model_id = olmoearth_model_ids(cfg["model"])[0]
    overlap, overlap_from = overlap_pixels(cfg, size, patch)
    if temporal["time_steps"] != steps:
        temporal["time_steps"] = steps
        temporal["source"] += f" time_steps overridden to {steps} by --time-steps."
    ckpt = None
    if args.checkpoint:
        ckpt = {"sha256": sha256_file(Path(args.checkpoint)), "file": Path(args.checkpoint).name}
    manifest_path = out_path.with_suffix(".json")
    ctx = {
        "project": name, "variant": args.variant, "variant_notes": variant_notes, "seed": args.seed, "checkpoint": ckpt,
        "cfg": cfg, "config_arg": args.rslearn_config, "config_path": cfg_path, "dataset_path": dataset_path,
        "run_cfg": run_cfg, "readme": readme, "kind": kind, "modalities": mods, "time_steps": steps,
        "time_dynamic": time_dynamic, "output_shape": parity[0]["shapes"][out_names[0]], "tile_size": size,
        "tile_size_from": spec["size_from"] if not args.size else "--size", "overlap": overlap, "overlap_from": overlap_from,
        "patch_size": patch, "embedding_dim": oe_export.EMBED_DIMS[model_id_size(model_id)[1]], "model_id": model_id,
        "decoders": [oe_export._qualname(type(m)) for m in list(graph.encoder[1:]) + list(graph.decoder[:-1])],
        "head": oe_export._qualname(type(graph.decoder[-1])),
        "encoder_class": oe_export._qualname(type(graph.encoder[0])),
        "use_sigmoid": bool(getattr(graph.decoder[-1], "use_sigmoid", False)),
        "temporal": temporal, "plain_attention": args.plain_attention, "export_seconds": report["export_seconds"],
        "parity": [{k: v for k, v in c.items() if k not in ("torch_s", "ort_s")} for c in parity],
        "onnx_path": out_path, "onnx_bytes": tmp_path,
    }
    doc = build_task_manifest(ctx)
    errors = oe_export.manifest_errors(doc)
    if errors:
        tmp_path.unlink()
        finish(f"refusing to write {manifest_path} (and {out_path}): the manifest is not valid STAC 1.1 / MLM v1.5:\n" + json.dumps(errors, indent=2))
    os.replace(tmp_path, out_path)
    oe_export.write_manifest(manifest_path, doc)
    report["manifest"] = str(manifest_path)
    report["temporal"] = temporal
    if args.golden:
        golden = write_golden(out_path, sess, net, graph, mods, out_names, size, patch, temporal, steps)
        print(json.dumps(golden), file=sys.stderr)
        report["golden"] = golden
        if golden["max_abs"] > PARITY_TOLERANCE:
            finish(f"golden window: ONNX Runtime differs from rslearn's PyTorch forward by {golden['max_abs']:.2e} > {PARITY_TOLERANCE}")
    if args.delete:
        out_path.unlink()
        report["onnx_deleted"] = True
    else:
        report["onnx"] = str(out_path)
    finish()


if __name__ == "__main__":
    main()
