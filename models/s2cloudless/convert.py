#!/usr/bin/env python3
"""Convert the s2cloudless LightGBM cloud detector to ONNX.

The model is the LightGBM booster that the PyPI package `s2cloudless==1.7.3` (Sentinel Hub /
Sinergise, CC BY-SA 4.0) ships as `s2cloudless/models/pixel_s2_cloud_detector_lightGBM_v0.1.txt`.
The package itself is never imported (its `__init__` pulls in OpenCV and sentinelhub); only the
model text file is read, from the installed package (`pip install --no-deps s2cloudless==1.7.3`)
or straight from the wheel (`--wheel`).

Output graph (ONNX opset 13 + ai.onnx.ml 1):

    bands  float32 [N, 10]   TOA reflectance (L1C DN / 10000; baseline >= 04.00: (DN - 1000) / 10000)
                             in the order B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12
    -> ai.onnx.ml.TreeEnsembleClassifier (170 trees, post_transform LOGISTIC; from onnxmltools,
       zipmap=False) -> [N, 2] = [1 - p, p]
    -> Slice(axis 1, [1:2])
    cloud_probability  float32 [N, 1]   p = what S2PixelCloudDetector.get_cloud_probability_maps gives

The classifier's int64 `label` output (argmax, i.e. p > 0.5) is not exposed: s2cloudless never
uses it (its mask thresholds the spatially averaged p at 0.4).

Exact split decisions: LightGBM compares `double(x) <= threshold` with double thresholds, ONNX
stores thresholds as float32. 73,925 of the 130,730 thresholds round *up* to float32, which would
send an input equal to that float32 value to the other branch. Before conversion every threshold
t is therefore replaced by the largest float32 <= t; for every float32 input x,
`x <= t  <=>  x <= f32_floor(t)`, so the rewritten booster is identical to the original on
float32 inputs (checked below, including inputs placed exactly on and next to the thresholds).

Usage:
    python convert.py OUT.onnx [--wheel s2cloudless-1.7.3-py3-none-any.whl | --model-txt FILE]

Writes OUT.onnx (byte-identical on every run) and prints its size and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import zipfile

import numpy as np

S2CLOUDLESS_VERSION = "1.7.3"
MODEL_MEMBER = "s2cloudless/models/pixel_s2_cloud_detector_lightGBM_v0.1.txt"
MODEL_SHA256 = "0f92b6822cc0ad42982f55bab9b1688329e119451ad9a9e0a56384b9f37bc61d"
# s2cloudless.utils: S2_BANDS[MODEL_BAND_IDS], MODEL_BAND_IDS = [0, 1, 3, 4, 7, 8, 9, 10, 11, 12]
BANDS = ["B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"]
N_TREES = 170

ATTRIBUTION = (
    "s2cloudless pixel cloud detector (pixel_s2_cloud_detector_lightGBM_v0.1) by the Sinergise "
    "EO research team (Sentinel Hub), from the s2cloudless 1.7.3 Python package "
    "(https://github.com/sentinel-hub/sentinel2-cloud-detector), licensed under CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/). Converted to ONNX (changes: LightGBM "
    "text model -> ai.onnx.ml TreeEnsembleClassifier, split thresholds rounded down to float32, "
    "output reduced to the cloud probability); the converted model is under the same licence."
)


def read_model_text(args: argparse.Namespace) -> tuple[str, str]:
    """Returns (model text, where it came from)."""
    if args.model_txt:
        with open(args.model_txt, "rb") as f:
            raw, src = f.read(), args.model_txt
    elif args.wheel:
        with zipfile.ZipFile(args.wheel) as zf:
            raw, src = zf.read(MODEL_MEMBER), f"{args.wheel}!{MODEL_MEMBER}"
    else:
        # find_spec on a top-level package locates it without running its __init__.
        spec = importlib.util.find_spec("s2cloudless")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("s2cloudless is not installed: pip install --no-deps s2cloudless==1.7.3, "
                     "or pass --wheel / --model-txt")
        path = os.path.join(list(spec.submodule_search_locations)[0], "models", os.path.basename(MODEL_MEMBER))
        with open(path, "rb") as f:
            raw, src = f.read(), path
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MODEL_SHA256:
        sys.exit(f"{src}: sha256 {digest} is not the s2cloudless {S2CLOUDLESS_VERSION} model ({MODEL_SHA256})")
    return raw.decode("ascii"), src


def f32_floor(values: np.ndarray) -> np.ndarray:
    """Largest float32 <= value, for each float64 value."""
    f = values.astype(np.float32)
    up = f.astype(np.float64) > values
    f[up] = np.nextafter(f[up], np.float32(-np.inf))
    return f


def floor_thresholds(text: str) -> tuple[str, int, int, int]:
    """Rewrites every `threshold=` line of a LightGBM text model with float32-floored values.

    Also checks that all splits are plain numerical `<=` splits (decision_type 2: default_left,
    missing_type None), the only kind for which the rewrite is exact and which onnxmltools maps
    to BRANCH_LEQ with the same NaN handling.
    """
    out, n_total, n_changed, n_up = [], 0, 0, 0
    in_trees = False
    for line in text.split("\n"):
        if line.startswith("Tree="):
            in_trees = True
        elif line.startswith("end of trees"):
            in_trees = False
        if not in_trees and line.startswith("tree_sizes="):
            continue  # byte sizes of the tree blocks; LightGBM parses sequentially without it
        if in_trees and line.startswith("decision_type="):
            kinds = set(line.split("=", 1)[1].split())
            if kinds != {"2"}:
                sys.exit(f"unexpected decision_type values {sorted(kinds)}")
        if in_trees and line.startswith("threshold="):
            vals = np.array([float(v) for v in line.split("=", 1)[1].split()], dtype=np.float64)
            fl = f32_floor(vals)
            n_total += vals.size
            n_changed += int(np.count_nonzero(fl.astype(np.float64) != vals))
            n_up += int(np.count_nonzero(vals.astype(np.float32).astype(np.float64) > vals))
            # repr of the float64 of an exact float32 round-trips through LightGBM's parser.
            line = "threshold=" + " ".join(repr(float(v)) for v in fl)
        out.append(line)
    return "\n".join(out), n_total, n_changed, n_up


def build_onnx(booster):
    import onnx
    from onnx import TensorProto, helper
    from onnxmltools.convert import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    conv = convert_lightgbm(
        booster,
        name="s2cloudless",
        initial_types=[("bands", FloatTensorType([None, len(BANDS)]))],
        zipmap=False,
    )
    tec = [n for n in conv.graph.node if n.op_type == "TreeEnsembleClassifier"]
    assert len(tec) == 1 and len(conv.graph.node) == 5, [n.op_type for n in conv.graph.node]
    tec = tec[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in tec.attribute}
    assert attrs["post_transform"] == b"LOGISTIC" and list(attrs["classlabels_int64s"]) == [0, 1]
    assert len(set(attrs["nodes_treeids"])) == N_TREES
    # the onnxmltools graph is TEC -> Identity -> Mul(x, 1.0) for the probabilities and
    # TEC -> Identity -> Cast for the label; keep the TEC node only.
    node = helper.make_node(
        "TreeEnsembleClassifier", ["bands"], ["label", "probabilities"],
        name="s2cloudless_lightgbm", domain="ai.onnx.ml",
    )
    node.attribute.extend(a for a in tec.attribute)
    starts = helper.make_tensor("slice_starts", TensorProto.INT64, [1], [1])
    ends = helper.make_tensor("slice_ends", TensorProto.INT64, [1], [2])
    axes = helper.make_tensor("slice_axes", TensorProto.INT64, [1], [1])
    slice_node = helper.make_node(
        "Slice", ["probabilities", "slice_starts", "slice_ends", "slice_axes"], ["cloud_probability"],
        name="take_cloud_column",
    )
    graph = helper.make_graph(
        [node, slice_node],
        "s2cloudless",
        [helper.make_tensor_value_info("bands", TensorProto.FLOAT, ["N", len(BANDS)])],
        [helper.make_tensor_value_info("cloud_probability", TensorProto.FLOAT, ["N", 1])],
        initializer=[starts, ends, axes],
        doc_string="bands: float32 [N,10] TOA reflectance (DN/10000) in the order "
        + ",".join(BANDS) + "; cloud_probability: float32 [N,1] in [0,1].",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)],
        producer_name="eoinfer models/s2cloudless/convert.py (onnxmltools "
        + __import__("onnxmltools").__version__ + ")",
        producer_version="1",
        doc_string=ATTRIBUTION,
    )
    model.ir_version = 7
    meta = {
        "name": "s2cloudless",
        "source": f"s2cloudless=={S2CLOUDLESS_VERSION} (PyPI) {MODEL_MEMBER}",
        "source_sha256": MODEL_SHA256,
        "license": "CC-BY-SA-4.0",
        "attribution": ATTRIBUTION,
        "bands": ",".join(BANDS),
        "input_scale": "TOA reflectance = DN / 10000 (L1C; from baseline 04.00 subtract the 1000 offset first)",
        "output": "cloud_probability[:, 0] = s2cloudless get_cloud_probability_maps",
        "s2cloudless_defaults": "threshold=0.4 average_over=1 dilation_size=1",
    }
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model, full_check=True)
    return model


def self_check(model_bytes: bytes, original, rewritten) -> None:
    """ORT vs the original booster on float32 inputs, including inputs on the split thresholds."""
    import onnxruntime as ort

    d = original.dump_model()
    per_feature: list[list[float]] = [[] for _ in BANDS]

    def walk(n):
        if "split_index" in n:
            per_feature[n["split_feature"]].append(n["threshold"])
            walk(n["left_child"])
            walk(n["right_child"])

    for t in d["tree_info"]:
        walk(t["tree_structure"])
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.uniform(0.0, 0.6, size=(n, len(BANDS))).astype(np.float32)
    # Half the rows: every feature sits on a float32 neighbour of one of its own thresholds
    # (nearest, floor, floor + 1 ulp), where a float32-rounded threshold would go wrong.
    for j, ths in enumerate(per_feature):
        th = np.array(ths, dtype=np.float64)
        pick = th[rng.integers(0, th.size, n // 2)]
        fl = f32_floor(pick)
        cand = np.stack([pick.astype(np.float32), fl, np.nextafter(fl, np.float32(np.inf))])
        x[: n // 2, j] = cand[rng.integers(0, 3, n // 2), np.arange(n // 2)]
    x[-4:] = [[0.0] * 10, [1.0] * 10, [np.nan] * 10, [0.3] * 10]

    p_orig = original.predict(x)
    p_rew = rewritten.predict(x)
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    p_onnx = sess.run(None, {"bands": x})[0]
    assert p_onnx.shape == (n, 1) and p_onnx.dtype == np.float32
    same = np.array_equal(p_orig, p_rew)
    diff = np.abs(p_onnx[:, 0].astype(np.float64) - p_orig)
    diff_f32 = np.abs(p_onnx[:, 0] - p_orig.astype(np.float32))
    print(f"self-check on {n} float32 rows ({n // 2} on split thresholds, NaN row included):")
    print(f"  rewritten booster == original booster: {same}")
    print(f"  |onnx - lightgbm| max {diff.max():.3e}, mean {diff.mean():.3e}; "
          f"vs lightgbm cast to float32 max {diff_f32.max():.3e}")
    if not same or not np.isfinite(p_onnx).all() or diff.max() > 1e-5:
        sys.exit("self-check failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output .onnx path")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wheel", help="s2cloudless-1.7.3-py3-none-any.whl to read the model from")
    src.add_argument("--model-txt", help="pixel_s2_cloud_detector_lightGBM_v0.1.txt to read")
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime self-check")
    args = ap.parse_args()

    import lightgbm

    text, src_path = read_model_text(args)
    print(f"model: {src_path} (sha256 {MODEL_SHA256})")
    original = lightgbm.Booster(model_str=text)
    assert original.num_trees() == N_TREES and original.num_feature() == len(BANDS)
    floored, n_th, n_changed, n_up = floor_thresholds(text)
    rewritten = lightgbm.Booster(model_str=floored)
    print(f"thresholds: {n_th} ({n_changed} not float32-exact; {n_up} of them would round up "
          "to float32), all set to the largest float32 <= the LightGBM threshold")

    model = build_onnx(rewritten)
    data = model.SerializeToString(deterministic=True)
    if not args.no_check:
        self_check(data, original, rewritten)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.out + ".partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
