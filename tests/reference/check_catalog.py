"""Reads an output folder's catalog.parquet back with stac-geoparquet and checks it against the
Items that catalog.json links; optionally queries the parquet file with DuckDB.

usage: check_catalog.py OUT_DIR [--bbox xmin,ymin,xmax,ymax] [--start ISO] [--end ISO]
                                [--model MODEL_ID]

(a) OUT_DIR/catalog.parquet is read with pyarrow and turned into Item dicts with
    stac_geoparquet.arrow.stac_table_to_items (the library's own reader: WKB geometry back to
    GeoJSON, bbox struct back to a list, top-level property columns back into "properties",
    timestamps back to strings, null assets dropped).
(b) Every Item linked from OUT_DIR/catalog.json (links with rel "item", hrefs relative to OUT_DIR)
    is loaded as JSON.
(c) Both sides must have the same set of ids, and per id the same document after this minimal
    normalisation, which only covers what stac-geoparquet (0.8.3) itself cannot round-trip:
      1. Key order is ignored (objects compare as mappings): the reader rebuilds an Item as
         type, stac_version, stac_extensions, id, geometry, bbox, links, assets, properties, and
         properties/struct fields in the column order, which is the union of keys over all Items.
      2. A key whose parquet-side value is null and which the catalog-side object at the same
         path does not have is dropped. Each JSON object becomes one Arrow struct whose fields
         are the union of the keys of all Items (top-level property columns, fields of
         eoinfer:model, of link objects, of asset objects, of objects in arrays ...), so an Item
         without a key reads back with that key = null. A key that the catalog side has with an
         explicit null (e.g. "datetime": null with start/end_datetime) must still be null.
      3. The timestamp properties (datetime, start_datetime, end_datetime, created, updated,
         expires, published, unpublished; directly under "properties" only) are compared as
         instants: they are stored as timestamp[us, tz=UTC] and come back formatted
         "%Y-%m-%dT%H:%M:%S.ffffffZ" ("2017-02-16T00:00:00Z" -> "2017-02-16T00:00:00.000000Z";
         "+01:00" offsets come back converted to UTC). Sub-microsecond digits are not kept.
      4. Numbers compare by value: an integer and a float of the same value are equal (a column
         that holds integers in one Item and floats in another is inferred as double, so 30 comes
         back as 30.0). Booleans are never equal to numbers.
      5. A key whose catalog-side value is {} and which is absent on the parquet side is ignored
         (Parquet cannot store a struct with no fields; stac-geoparquet drops such columns).
    Everything else must be equal: geometry coordinates (exact through WKB), bbox, list order,
    strings, assets, links.
(d) With any of --bbox/--start/--end/--model, DuckDB queries catalog.parquet directly:
      bbox:  the Item's bbox struct intersects the box (closed intervals, WGS84 lon/lat, no
             antimeridian handling): bbox.xmin <= xmax AND bbox.xmax >= xmin AND
             bbox.ymin <= ymax AND bbox.ymax >= ymin;
      time:  the Item's interval [COALESCE(start_datetime, datetime),
             COALESCE(end_datetime, datetime)] overlaps [start, end] (closed; either end may be
             left open); ISO 8601 input, "Z"/offsets honoured, a value without offset is UTC, a
             bare date is midnight UTC;
      model: "eoinfer:model".id = MODEL_ID.
    The ids selected are reported sorted.
(e) Prints one JSON object
      {"items": N, "equal": bool, "differences": {...}, "query": [ids] | null,
       "schema": "<pyarrow schema text>", "metadata": {...}}
    and exits 1 when not equal. "differences" is {} when equal; otherwise it may hold
    "read_error", "catalog_errors", "duplicate_ids_in_parquet", "duplicate_ids_in_catalog",
    "missing_in_parquet", "extra_in_parquet" and "items" ({id: [{"path", "catalog",
    "parquet"}]}). "metadata" holds the decoded file-level "geo" and "stac-geoparquet" key-value
    metadata, the other key names, and the geometry field's Arrow metadata.
"""
import argparse
import datetime as dt
import json
import os
import sys
from urllib.parse import unquote, urlparse

import duckdb
import pyarrow.parquet as pq
from stac_geoparquet.arrow import stac_table_to_items

TIMESTAMP_PROPERTIES = {
    "datetime",
    "start_datetime",
    "end_datetime",
    "created",
    "updated",
    "expires",
    "published",
    "unpublished",
}
MISSING = object()


def parse_instant(s: str) -> dt.datetime:
    """ISO 8601 to an aware UTC datetime (no offset: UTC; bare date: midnight)."""
    t = dt.datetime.fromisoformat(s.strip().replace("z", "Z"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc)


def canonical_instant(v):
    if isinstance(v, str):
        try:
            return parse_instant(v)
        except ValueError:
            return v
    return v


def compare(cat, par, path, out, in_properties=False):
    """Append the differences between the catalog-side and parquet-side values to out."""
    if isinstance(cat, dict) and isinstance(par, dict):
        for k in sorted(set(cat) | set(par)):
            c = cat.get(k, MISSING)
            p = par.get(k, MISSING)
            sub = f"{path}/{k}"
            if c is MISSING and p is None:
                continue  # normalisation 2: null from the union of keys
            if p is MISSING and c == {}:
                continue  # normalisation 5: empty struct column dropped
            if c is MISSING or p is MISSING:
                out.append({"path": sub, "catalog": None if c is MISSING else c,
                            "parquet": None if p is MISSING else p,
                            "note": "missing in catalog" if c is MISSING else "missing in parquet"})
                continue
            if in_properties and k in TIMESTAMP_PROPERTIES:
                c2, p2 = canonical_instant(c), canonical_instant(p)  # normalisation 3
                if not (type(c2) is type(p2) and c2 == p2):
                    out.append({"path": sub, "catalog": c, "parquet": p})
                continue
            compare(c, p, sub, out, in_properties=(path == "" and k == "properties"))
        return
    if isinstance(cat, list) and isinstance(par, list):
        if len(cat) != len(par):
            out.append({"path": path, "catalog": cat, "parquet": par,
                        "note": f"length {len(cat)} vs {len(par)}"})
            return
        for i, (c, p) in enumerate(zip(cat, par)):
            compare(c, p, f"{path}/{i}", out)
        return
    if isinstance(cat, bool) or isinstance(par, bool):
        if cat is par:
            return
    elif isinstance(cat, (int, float)) and isinstance(par, (int, float)):
        if cat == par:  # normalisation 4
            return
    elif type(cat) is type(par) and cat == par:
        return
    out.append({"path": path, "catalog": cat, "parquet": par})


def load_catalog_items(out_dir):
    errors = []
    items = {}
    dups = []
    with open(os.path.join(out_dir, "catalog.json"), encoding="utf-8") as f:
        catalog = json.load(f)
    for link in catalog.get("links", []):
        if link.get("rel") != "item":
            continue
        href = link["href"]
        u = urlparse(href)
        if u.scheme == "file":
            path = unquote(u.path)
        elif u.scheme and len(u.scheme) > 1:
            errors.append(f"unsupported href {href}")
            continue
        else:
            path = os.path.normpath(os.path.join(out_dir, unquote(href)))
        try:
            with open(path, encoding="utf-8") as f:
                item = json.load(f)
        except (OSError, ValueError) as e:
            errors.append(f"{href}: {e}")
            continue
        if item.get("id") in items:
            dups.append(item.get("id"))
        items[item.get("id")] = item
    return items, dups, errors


def run_query(parquet, names, bbox, start, end, model):
    where, params = [], []
    if bbox is not None:
        xmin, ymin, xmax, ymax = bbox
        where.append("bbox.xmin <= ? AND bbox.xmax >= ? AND bbox.ymin <= ? AND bbox.ymax >= ?")
        params += [xmax, xmin, ymax, ymin]
    if start is not None or end is not None:
        lo = "COALESCE(start_datetime, datetime)" if "start_datetime" in names else "datetime"
        hi = "COALESCE(end_datetime, datetime)" if "end_datetime" in names else "datetime"
        if start is not None:
            where.append(f"{hi} >= CAST(? AS TIMESTAMPTZ)")
            params.append(start.isoformat())
        if end is not None:
            where.append(f"{lo} <= CAST(? AS TIMESTAMPTZ)")
            params.append(end.isoformat())
    if model is not None:
        where.append('"eoinfer:model".id = ?')
        params.append(model)
    sql = f"SELECT id FROM read_parquet(?) WHERE {' AND '.join(where)} ORDER BY id"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return [r[0] for r in con.execute(sql, [parquet] + params).fetchall()]


def file_metadata(parquet):
    schema = pq.read_schema(parquet)
    kv = schema.metadata or {}
    meta = {"keys": sorted(k.decode() for k in kv)}
    for key in (b"geo", b"stac-geoparquet"):
        if key in kv:
            try:
                meta[key.decode()] = json.loads(kv[key])
            except ValueError:
                meta[key.decode()] = kv[key].decode(errors="replace")
    if "geometry" in schema.names:
        fm = schema.field("geometry").metadata or {}
        meta["geometry_field"] = {k.decode(): v.decode(errors="replace") for k, v in fm.items()}
    text = schema.to_string(show_field_metadata=False, show_schema_metadata=False)
    return schema, text, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--bbox", help="xmin,ymin,xmax,ymax in WGS84 lon/lat")
    ap.add_argument("--start", help="ISO 8601 instant or date")
    ap.add_argument("--end", help="ISO 8601 instant or date")
    ap.add_argument("--model", help="eoinfer:model id")
    a = ap.parse_args()
    bbox = None
    if a.bbox is not None:
        bbox = [float(v) for v in a.bbox.split(",")]
        if len(bbox) != 4:
            ap.error("--bbox needs xmin,ymin,xmax,ymax")
    start = parse_instant(a.start) if a.start else None
    end = parse_instant(a.end) if a.end else None

    parquet = os.path.join(a.out_dir, "catalog.parquet")
    schema, schema_text, meta = file_metadata(parquet)
    differences = {}

    par_items = {}
    n = 0
    try:
        dups = []
        for item in stac_table_to_items(pq.read_table(parquet)):
            n += 1
            if item.get("id") in par_items:
                dups.append(item.get("id"))
            par_items[item.get("id")] = item
        if dups:
            differences["duplicate_ids_in_parquet"] = sorted(dups)
    except Exception as e:  # a layout stac-geoparquet cannot read is a difference, not a crash
        differences["read_error"] = f"{type(e).__name__}: {e}"

    cat_items, cat_dups, cat_errors = load_catalog_items(a.out_dir)
    if cat_errors:
        differences["catalog_errors"] = cat_errors
    if cat_dups:
        differences["duplicate_ids_in_catalog"] = sorted(cat_dups)
    if "read_error" not in differences:
        missing = sorted(set(cat_items) - set(par_items))
        extra = sorted(set(par_items) - set(cat_items))
        if missing:
            differences["missing_in_parquet"] = missing
        if extra:
            differences["extra_in_parquet"] = extra
        per_item = {}
        for item_id in sorted(set(cat_items) & set(par_items)):
            out = []
            compare(cat_items[item_id], par_items[item_id], "", out)
            if out:
                per_item[item_id] = out
        if per_item:
            differences["items"] = per_item

    query = None
    if bbox is not None or start is not None or end is not None or a.model is not None:
        query = run_query(parquet, schema.names, bbox, start, end, a.model)

    equal = not differences
    print(json.dumps({"items": n, "equal": equal, "differences": differences, "query": query,
                      "schema": schema_text, "metadata": meta}, default=str))
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
