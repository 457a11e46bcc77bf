"""Writes a small ONNX segmentation model that carries its contract in ONNX custom metadata,
as the QGIS Deepness plugin and GeoDeep expect (model_type, class_names, resolution,
tiles_size, tiles_overlap, standardization_parameters), for `eoinfer model import-onnx`.

The model: input float32 [N, 3, 64, 64] (red, green, blue after /255 and standardisation),
output [N, 2, 64, 64] softmax of (green - red, red - green): class 1 "bare" where the
standardised red exceeds the standardised green, class 0 "vegetation" elsewhere.

Usage: python make_deepness_model.py OUT.onnx
"""

import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    out = sys.argv[1]
    # 1x1 convolution: out0 = g - r, out1 = r - g.
    w = np.zeros((2, 3, 1, 1), np.float32)
    w[0, 0, 0, 0], w[0, 1, 0, 0] = -1.0, 1.0
    w[1, 0, 0, 0], w[1, 1, 0, 0] = 1.0, -1.0
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["logits"], kernel_shape=[1, 1]),
        helper.make_node("Softmax", ["logits"], ["output"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "deepness_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2, 64, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({"0": "vegetation", "1": "bare"}),
        "resolution": json.dumps(1000.0),  # cm per pixel: 10 m
        "tiles_size": json.dumps(64),
        "tiles_overlap": json.dumps(25),  # percent
        "standardization_parameters": json.dumps({"mean": [0.3, 0.3, 0.3], "std": [0.2, 0.2, 0.2]}),
        "seg_thresh": json.dumps(0.5),
    }
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, out)


if __name__ == "__main__":
    main()
