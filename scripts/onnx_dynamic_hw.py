#!/usr/bin/env python3
"""Make a convolutional segmentation model take tiles of any size.

Copies an ONNX model and its eoinfer manifest with the input's and output's height and width
turned into named (dynamic) dimensions, so `eoinfer predict --tile-size N` can run it on larger
tiles (more context per tile, fewer tile edges). The weights are untouched; the copy is checked
with ONNX Runtime: on a tile of the original size it must give the original model's output.

    .venv-reference/bin/python scripts/onnx_dynamic_hw.py models/ukis-csmask-6b-l1c.json

writes models/ukis-csmask-6b-l1c-dynamic.json and models/ukis-csmask/model_6b_l1c.dynamic.onnx.
Exit 2 with a message when the model is not one this applies to.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path, help="eoinfer model manifest (STAC MLM JSON)")
    ap.add_argument("--out", type=Path, help="manifest to write (default: <name>-dynamic.json beside it)")
    ap.add_argument("--check-size", type=int, default=512, help="also run once at this tile size")
    a = ap.parse_args()

    doc = json.loads(a.manifest.read_text())
    href = doc.get("assets", {}).get("model", {}).get("href")
    if not href:
        fail(f"{a.manifest} has no assets.model.href; pass an eoinfer model manifest")
    src = (a.manifest.parent / href).resolve()
    if not src.is_file():
        fail(f"{src} (the manifest's ONNX file) is missing; run scripts/fetch-assets.sh")
    out_manifest = a.out or a.manifest.with_name(a.manifest.stem + "-dynamic.json")
    dst = src.with_name(src.stem + ".dynamic.onnx")

    model = onnx.load(str(src))
    if len(model.graph.input) != 1:
        fail(f"{src} has {len(model.graph.input)} inputs; this applies to one-input models")
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != 4:
            fail(f"{src}: {vi.name} has {len(dims)} dimensions, not NCHW")
        dims[2].Clear()
        dims[2].dim_param = "height"
        dims[3].Clear()
        dims[3].dim_param = "width"
    # Shapes inferred for the traced size would contradict other sizes.
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    tmp = dst.with_name("." + dst.name + ".partial")
    onnx.save(model, str(tmp))

    base = doc["properties"]["mlm:input"][0]["input"]["shape"]
    bands, tile = int(base[1]), int(base[2])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, bands, tile, tile), dtype=np.float32)
    a_sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    b_sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    ya = a_sess.run(None, {a_sess.get_inputs()[0].name: x})[0]
    yb = b_sess.run(None, {b_sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(ya - yb).max())
    if diff > 1e-5:
        tmp.unlink()
        fail(f"the dynamic copy differs from {src} by {diff} at {tile} px; not written")
    n = a.check_size
    y = b_sess.run(None, {b_sess.get_inputs()[0].name: rng.standard_normal((1, bands, n, n), dtype=np.float32)})[0]
    if y.shape[2:] != (n, n):
        tmp.unlink()
        fail(f"at {n} px the model gives {y.shape}; its height and width cannot be made dynamic")
    tmp.replace(dst)

    sha = hashlib.sha256(dst.read_bytes()).hexdigest()
    doc["id"] = doc["id"] + "-dynamic"
    doc["assets"]["model"]["href"] = str(Path(href).with_name(dst.name))
    doc["assets"]["model"]["file:checksum"] = "1220" + sha
    for io in doc["properties"]["mlm:input"]:
        io["input"]["shape"][2:] = [-1, -1]
    for io in doc["properties"]["mlm:output"]:
        io["result"]["shape"][2:] = [-1, -1]
    doc["properties"]["eoinfer:dynamic_hw"] = {"source": str(href), "max_abs_diff_at_tile": diff}
    out_manifest.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"manifest": str(out_manifest), "onnx": str(dst), "max_abs_diff": diff, "checked_sizes": [tile, n]}))


if __name__ == "__main__":
    main()
