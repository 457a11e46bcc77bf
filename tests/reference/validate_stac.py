"""Validates STAC documents offline: the core schema and every schema in `stac_extensions`.

usage: validate_stac.py [--schemas DIR] [--no-stac-model] PATH...

PATH is a JSON file or a folder (every *.json below it that is a STAC document; other JSON
files are listed as `not_stac`). Each document is checked against
  - its core schema, chosen by `stac_version` and `type` (Feature -> item, Catalog, Collection):
    v1.1.0 from pystac's bundled copies (pystac/validation/jsonschemas), v1.0.0 from DIR;
  - every URL in its `stac_extensions`, mapped to DIR/extensions/<name>/<version>/schema.json.
DIR defaults to $STAC_SCHEMAS or ../shared/stac-schemas beside the repository. Nothing is
fetched: a schema (or a `$ref` inside one) with no local copy is a failure, "schema not
available offline: URL", never a silent skip. Format assertions (date-time, iri) are not
checked, as in pystac's own validation. Documents declaring the MLM extension are also
loaded with `stac-model` (pystac Item + `MLModelProperties`) unless --no-stac-model.

Prints one JSON report:
  {"documents": {PATH: "ok" | [{"schema", "path", "message"}, ...]}, "failures": N,
   "unavailable_offline": [URL, ...], "stac_model": {PATH: "loaded" | "failed"},
   "not_stac": [PATH, ...]}
and exits 1 when any document fails, 0 otherwise.

Also usable as a module: `Validator(schemas_dir).errors(doc)` returns the list of errors of
one document (models/olmoearth/export.py uses it to refuse an invalid manifest).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema

REPO = Path(__file__).resolve().parents[2]
STACSPEC = "https://schemas.stacspec.org"
EXTENSIONS = "https://stac-extensions.github.io"
CORE_FILES = {"Feature": ("item-spec", "item.json"), "Catalog": ("catalog-spec", "catalog.json"), "Collection": ("collection-spec", "collection.json")}


def default_schemas_dir() -> Path:
    env = os.environ.get("STAC_SCHEMAS")
    return Path(env) if env else REPO.parent / "shared" / "stac-schemas"


def _norm(url: str) -> str:
    """A schema URL without its empty fragment (`.../schema.json#` -> `.../schema.json`)."""
    return url[:-1] if url.endswith("#") else url


def offline_schemas(schemas_dir: Path) -> dict[str, dict[str, Any]]:
    """URL -> schema for every offline copy. Each schema's `$id` is set to the URL of its
    folder (processing v1.1.0 carries `$id` v1.0.0, pystac's common.json `.../commonjson`),
    so relative `$ref`s resolve against the file's real place."""
    found: dict[str, dict[str, Any]] = {}
    if not schemas_dir.is_dir():
        raise SystemExit(f"schema folder {schemas_dir} missing (set STAC_SCHEMAS or --schemas)")
    for f in sorted(schemas_dir.glob("stac-spec/*/*/json-schema/*.json")):
        version, spec = f.parts[-4], f.parts[-3]
        found[f"{STACSPEC}/{version}/{spec}/json-schema/{f.name}"] = json.loads(f.read_text())
    for f in sorted(schemas_dir.glob("extensions/*/*/schema.json")):
        name, version = f.parts[-3], f.parts[-2]
        found[f"{EXTENSIONS}/{name}/{version}/schema.json"] = json.loads(f.read_text())
    # STAC 1.1.0 core and the GeoJSON schemas: pystac's bundled copies, under the URLs
    # pystac itself maps them to.
    from pystac.validation.local_validator import get_local_schema_cache

    for url, schema in get_local_schema_cache().items():
        found.setdefault(url, schema)
    out = {}
    for url, schema in found.items():
        schema = copy.deepcopy(schema)
        schema["$id"] = url
        out[url] = schema
    return out


def _short(message: str, limit: int = 300) -> str:
    """jsonschema messages start with the whole offending value; keep them readable."""
    return message if len(message) <= limit else message[:limit] + " ..."


def _leaves(error: jsonschema.exceptions.ValidationError):
    for sub in error.context or []:
        if sub.context:
            yield from _leaves(sub)
        else:
            yield sub


class Validator:
    def __init__(self, schemas_dir: Path | None = None) -> None:
        self.schemas = offline_schemas(schemas_dir or default_schemas_dir())
        self.unavailable: set[str] = set()

        def refuse(uri: str):
            # Called for any URI that has no offline copy: never fetch it, remember it.
            self.unavailable.add(uri)
            raise referencing.exceptions.NoSuchResource(ref=uri)

        draft7 = referencing.jsonschema.DRAFT7
        self.registry = referencing.Registry(retrieve=refuse).with_resources(
            (url, draft7.create_resource(schema)) for url, schema in self.schemas.items()
        )

    def core_url(self, doc: dict[str, Any]) -> str | None:
        kind = CORE_FILES.get(doc.get("type"))
        if kind is None:
            return None
        return f"{STACSPEC}/v{doc.get('stac_version')}/{kind[0]}/json-schema/{kind[1]}"

    def _check(self, doc: dict[str, Any], url: str) -> list[dict[str, str]]:
        schema = self.schemas.get(url)
        if schema is None:
            self.unavailable.add(url)
            return [{"schema": url, "path": "$", "message": f"schema not available offline: {url}"}]
        validator = jsonschema.Draft7Validator(schema, registry=self.registry)
        try:
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            out = []
            for e in errors:
                message = _short(e.message)
                # For anyOf/oneOf, name the deepest reasons of the alternatives too.
                leaves = sorted(_leaves(e), key=lambda x: -len(x.absolute_path))[:3] if e.context else []
                if leaves:
                    message += " -- deepest reasons: " + "; ".join(f"{x.json_path}: {_short(x.message, 160)}" for x in leaves)
                out.append({"schema": url, "path": e.json_path, "message": message})
            return out
        except referencing.exceptions.Unresolvable as e:
            ref = getattr(e, "ref", str(e))
            self.unavailable.add(ref)
            return [{"schema": url, "path": "$", "message": f"schema not available offline: {ref} (referenced from {url})"}]

    def errors(self, doc: Any, stac_model: bool = False) -> list[dict[str, str]]:
        """Every error of one STAC document (empty when valid)."""
        if not isinstance(doc, dict) or "stac_version" not in doc:
            return [{"schema": "-", "path": "$", "message": "not a STAC document (no stac_version)"}]
        core = self.core_url(doc)
        if core is None:
            return [{"schema": "-", "path": "$.type", "message": f"unknown STAC type {doc.get('type')!r} (Feature, Catalog, Collection)"}]
        errs = self._check(doc, core)
        exts = doc.get("stac_extensions") or []
        if not isinstance(exts, list):
            exts = []
        for ext in exts:
            if isinstance(ext, str):
                errs += self._check(doc, _norm(ext))
        if stac_model and declares_mlm(doc):
            errs += stac_model_errors(doc)
        return errs


def declares_mlm(doc: dict[str, Any]) -> bool:
    exts = doc.get("stac_extensions")
    return isinstance(exts, list) and any(isinstance(e, str) and "/mlm/" in e for e in exts)


def stac_model_errors(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Loads an MLM Item with stac-model: a pystac Item, then its MLM properties (tasks,
    inputs, outputs, value scaling, classes, runtime) as `MLModelProperties`."""
    import importlib.metadata

    import pystac
    from stac_model.schema import MLModelProperties

    where = f"stac-model {importlib.metadata.version('stac-model')}"
    try:
        item = pystac.Item.from_dict(copy.deepcopy(doc), migrate=False)
        props = MLModelProperties.model_validate(item.properties)
    except Exception as e:  # noqa: BLE001 - every failure to load is reported
        return [{"schema": where, "path": "$.properties", "message": f"{type(e).__name__}: {e}"}]
    if not props.tasks:
        return [{"schema": where, "path": "$.properties.mlm:tasks", "message": "no task loaded"}]
    return []


def is_stac(doc: Any) -> bool:
    return isinstance(doc, dict) and "stac_version" in doc and doc.get("type") in CORE_FILES


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+")
    p.add_argument("--schemas", type=Path, default=None, help="the offline schema copies (default: $STAC_SCHEMAS or ../shared/stac-schemas)")
    p.add_argument("--no-stac-model", action="store_true", help="do not load MLM documents with stac-model")
    args = p.parse_args()

    v = Validator(args.schemas)
    files: list[Path] = []
    not_stac: list[str] = []
    report: dict[str, Any] = {}
    stac_model: dict[str, str] = {}
    for arg in args.paths:
        path = Path(arg)
        if path.is_dir():
            for f in sorted(path.rglob("*.json")):
                try:
                    doc = json.loads(f.read_text())
                except (OSError, ValueError):
                    doc = None
                if is_stac(doc) or (isinstance(doc, dict) and "stac_version" in doc):
                    files.append(f)
                else:
                    not_stac.append(str(f))
        else:
            files.append(path)
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            report[str(f)] = [{"schema": "-", "path": "$", "message": f"cannot read JSON: {e}"}]
            continue
        errs = v.errors(doc)
        if not args.no_stac_model and isinstance(doc, dict) and declares_mlm(doc):
            loaded = stac_model_errors(doc)
            stac_model[str(f)] = "failed" if loaded else "loaded"
            errs += loaded
        report[str(f)] = errs if errs else "ok"
    failures = sum(1 for r in report.values() if r != "ok")
    out = {"documents": report, "failures": failures, "unavailable_offline": sorted(v.unavailable), "stac_model": stac_model, "not_stac": not_stac}
    print(json.dumps(out, indent=2))
    return 1 if failures or not files else 0


if __name__ == "__main__":
    sys.exit(main())
