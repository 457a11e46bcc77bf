"""Rebuilds committed OlmoEarth manifests with models/olmoearth/export.py's own `build_manifest`.

usage: olmoearth_manifests.py [--write] MANIFEST...

For each manifest, export.py's `build_manifest` runs for the committed ONNX file beside it
with the arguments the manifest records (version, size, --s1, --head and its classes, seed,
patch size, attention) and what only an export can measure taken from the manifest (parity
figures, export time, torch and onnxruntime versions, the OlmoEarth package's normalisation
statistics). PyTorch, ONNX and the OlmoEarth package are stubbed: building a manifest needs
none of them. Prints {MANIFEST: "same" | "differs"} and exits 1 if any differs, so a change
to export.py's manifest shows up as committed manifests that no longer match; with --write,
writes the rebuilt manifests instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
EXPORT = REPO / "models" / "olmoearth" / "export.py"


class _Stub(types.ModuleType):
    """A module whose every attribute is a mock (what export.py uses of torch & co. at import)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = mock.MagicMock(name=f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


def _stub(name: str, **attrs) -> _Stub:
    m = _Stub(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def load_export(torch_version: str, ort_version: str):
    _stub("torch", __version__=torch_version, nn=_Stub("torch.nn"))
    sys.modules["torch"].nn.Module = object
    _stub("onnx")
    _stub("onnx.defs")
    _stub("onnxruntime", __version__=ort_version)
    _stub("onnxscript")
    for name in [
        "olmoearth_pretrain_minimal",
        "olmoearth_pretrain_minimal.olmoearth_pretrain_v1",
        "olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data",
        "olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize",
        "olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils",
        "olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants",
        "olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes",
    ]:
        _stub(name)
    spec = importlib.util.spec_from_file_location("olmoearth_export", EXPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rebuild(path: Path) -> dict:
    doc = json.loads(path.read_text())
    p = doc["properties"]
    exporter = p["eoinfer:exporter"]  # "torch X dynamo, opset 18; onnxruntime Y"
    torch_version = exporter.split()[1]
    ort_version = exporter.rsplit(" ", 1)[1]
    export = load_export(torch_version, ort_version)
    inputs = {i["name"]: i for i in p["mlm:input"]}
    modality_input = {"sentinel2_l2a": "s2", "sentinel1": "s1"}
    export.norm_stats = lambda modality, bands: inputs[modality_input[modality]]["value_scaling"]
    head = p.get("eoinfer:head")
    classes = p["mlm:output"][0].get("classification:classes", []) if head else []
    args = argparse.Namespace(
        version=p["eoinfer:model_version"],
        size=p["eoinfer:model_size"],
        s1="s1" in inputs,
        head=head,
        seed=p["eoinfer:seed"] if p["eoinfer:random_weights"] else 0,
        weights=None if p["eoinfer:random_weights"] else "weights.pth",
        head_weights=None if p.get("eoinfer:head_random_weights", True) else "head.pth",
        patch_size=p["eoinfer:patch_size"],
        plain_attention=p["eoinfer:attention"] == "onnx",
        value_name=p.get("eoinfer:regression", {}).get("name"),
        value_unit=p.get("eoinfer:regression", {}).get("unit"),
        value_min=p.get("eoinfer:regression", {}).get("range", [None, None])[0],
        value_max=p.get("eoinfer:regression", {}).get("range", [None, None])[1],
        window_size=p.get("eoinfer:window_size"),
    )
    onnx_path = path.parent / doc["assets"]["model"]["href"]
    return export.build_manifest(
        onnx_path,
        onnx_path,
        args,
        p["eoinfer:embedding_dim"],
        p["eoinfer:parity"]["shapes"],
        p["eoinfer:export_seconds"],
        [c["name"] for c in classes],
        p.get("eoinfer:head_source"),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("manifests", nargs="+", type=Path)
    a = ap.parse_args()
    report = {}
    for path in a.manifests:
        # The text export.py's write_manifest writes.
        built = json.dumps(rebuild(path), indent=2) + "\n"
        if a.write:
            path.write_text(built)
            report[str(path)] = "written"
        else:
            report[str(path)] = "same" if built == path.read_text() else "differs"
    print(json.dumps(report, indent=2))
    return 1 if "differs" in report.values() else 0


if __name__ == "__main__":
    sys.exit(main())
