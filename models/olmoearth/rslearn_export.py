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
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
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
    ns = parser.parse_object({"model": model_cfg, "task": task_cfg})
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
    p.add_argument("--out", help="ONNX file to write (default /tmp/<config folder>.onnx)")
    p.add_argument("--size", type=int, help="tile edge in pixels (default: from the data section)")
    p.add_argument("--time-steps", type=int, help="time steps (default: from the data section's layers)")
    p.add_argument("--batch", type=int, default=2, help="batch of the traced example")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plain-attention", action="store_true", help="keep attention as plain ONNX ops")
    p.add_argument("--save-random-checkpoint", help="also write a Lightning-style checkpoint of the module as built (before --checkpoint)")
    p.add_argument("--skip-bf16", action="store_true", help="skip the bf16-autocast vs fp32 comparison")
    p.add_argument("--report", help="append the result as one JSON line to this file")
    p.add_argument("--delete", action="store_true", help="delete the ONNX file after measuring it")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg_path = Path(args.rslearn_config)
    name = cfg_path.parent.name
    cfg = yaml.safe_load(substitute_env_vars_in_string(cfg_path.read_text()))
    dataset_path = cfg_path.parent / "dataset.json"
    dataset = json.loads(dataset_path.read_text()) if dataset_path.exists() else None
    report: dict = {"config": name, "rslearn": rslearn_version(), "torch": torch.__version__, "onnxruntime": ort.__version__}

    spec = input_spec(cfg, dataset)
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
    report["notes"] = notes
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
    out_path = Path(args.out or f"/tmp/{name}.onnx")
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
    os.replace(tmp_path, out_path)

    sess = session(out_path, args.threads)
    report["onnx_inputs"] = {i.name: i.shape for i in sess.get_inputs()}
    report["onnx_output"] = {o.name: o.shape for o in sess.get_outputs()}
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
    if args.delete:
        out_path.unlink()
        report["onnx_deleted"] = True
    else:
        report["onnx"] = str(out_path)
    print(json.dumps(report))
    if args.report:
        with open(args.report, "a") as f:
            f.write(json.dumps(report) + "\n")
    if not report["parity_ok"]:
        sys.exit(f"ONNX Runtime differs from rslearn's PyTorch forward by {report['max_abs']:.2e} > {PARITY_TOLERANCE}")


if __name__ == "__main__":
    main()
