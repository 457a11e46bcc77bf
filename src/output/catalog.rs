//! `<out>/catalog.parquet`: every run Item the folder's `catalog.json` links, in the
//! stac-geoparquet layout (version 1.0.0), so that DuckDB, geopandas or the `stac-geoparquet`
//! package answer "which runs covered this field in June, with which model?" with one query.
//!
//! The layout is the one `stac_geoparquet.arrow` writes: one row per Item; the columns
//! `type`, `stac_version`, `stac_extensions`, `id`, `geometry` (ISO WKB, GeoArrow `geoarrow.wkb`
//! with the CRS, GeoParquet 1.1.0 metadata with a bbox covering), `bbox` (a struct of xmin, ymin,
//! xmax, ymax), `links`, `assets` (a struct keyed by asset name), then every property as a
//! column of its own. Types are inferred from the JSON as pyarrow infers them: objects are
//! structs (the union of their keys, in the order first seen), arrays lists, integers int64
//! (float64 where some are fractional), other strings utf8; the STAC timestamps (`datetime`,
//! `start_datetime`, `end_datetime`, `created`, ...) are timestamp[us, +00:00] (UTC). A value missing
//! from an Item is null. The column order follows the Items, so the same Items give the same
//! file.

use crate::error::OutputError;
use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The properties stac-geoparquet stores as timestamps.
const TIMESTAMPS: [&str; 8] = [
    "datetime",
    "start_datetime",
    "end_datetime",
    "created",
    "updated",
    "expires",
    "published",
    "unpublished",
];

/// A type inferred from JSON values.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Null,
    Bool,
    Int,
    Float,
    Str,
    List(Box<Ty>),
    Obj(Vec<(String, Ty)>),
}

fn ty_of(v: &Value) -> Ty {
    match v {
        Value::Null => Ty::Null,
        Value::Bool(_) => Ty::Bool,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                Ty::Int
            } else {
                Ty::Float
            }
        }
        Value::String(_) => Ty::Str,
        Value::Array(a) => Ty::List(Box::new(a.iter().map(ty_of).fold(Ty::Null, merge))),
        Value::Object(m) => Ty::Obj(m.iter().map(|(k, v)| (k.clone(), ty_of(v))).collect()),
    }
}

/// The type of both: null gives way, integers widen to floats, objects unite their keys
/// (first seen first), anything else that disagrees becomes a string.
fn merge(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        (Ty::Null, x) | (x, Ty::Null) => x,
        (Ty::Int, Ty::Float) | (Ty::Float, Ty::Int) => Ty::Float,
        (Ty::List(x), Ty::List(y)) => Ty::List(Box::new(merge(*x, *y))),
        (Ty::Obj(mut x), Ty::Obj(y)) => {
            for (k, t) in y {
                if let Some(e) = x.iter_mut().find(|(n, _)| *n == k) {
                    e.1 = merge(std::mem::replace(&mut e.1, Ty::Null), t);
                } else {
                    x.push((k, t));
                }
            }
            Ty::Obj(x)
        }
        (x, y) if x == y => x,
        _ => Ty::Str,
    }
}

/// The Arrow type of `t`; `None` for an object without keys (Parquet has no empty struct;
/// stac-geoparquet leaves such a column out).
fn arrow_type(t: &Ty) -> Option<DataType> {
    Some(match t {
        Ty::Null => DataType::Null,
        Ty::Bool => DataType::Boolean,
        Ty::Int => DataType::Int64,
        Ty::Float => DataType::Float64,
        Ty::Str => DataType::Utf8,
        Ty::List(e) => DataType::List(Arc::new(Field::new_list_field(
            arrow_type(e).unwrap_or(DataType::Null),
            true,
        ))),
        Ty::Obj(fields) => {
            let f: Vec<Field> = fields
                .iter()
                .filter_map(|(k, t)| arrow_type(t).map(|d| Field::new(k, d, true)))
                .collect();
            if f.is_empty() {
                return None;
            }
            DataType::Struct(Fields::from(f))
        }
    })
}

/// An Item as its stac-geoparquet row (without the geometry): bbox as a struct, the
/// properties as top-level keys.
fn row_of(item: &Value) -> Value {
    let mut row = Map::new();
    for k in ["type", "stac_version", "stac_extensions", "id"] {
        if let Some(v) = item.get(k) {
            row.insert(k.into(), v.clone());
        }
    }
    if let Some(b) = item.get("bbox").and_then(Value::as_array) {
        let v = |i: usize| b.get(i).cloned().unwrap_or(Value::Null);
        row.insert(
            "bbox".into(),
            json!({"xmin": v(0), "ymin": v(1), "xmax": v(2), "ymax": v(3)}),
        );
    }
    for k in ["links", "assets", "collection"] {
        if let Some(v) = item.get(k) {
            row.insert(k.into(), v.clone());
        }
    }
    if let Some(p) = item.get("properties").and_then(Value::as_object) {
        for (k, v) in p {
            row.insert(k.clone(), v.clone());
        }
    }
    Value::Object(row)
}

fn perr(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The PROJJSON of WGS 84 (the CRS of STAC geometries).
fn wgs84_projjson(path: &Path) -> Result<Value, OutputError> {
    let srs = gdal::spatial_ref::SpatialRef::from_epsg(4326).map_err(|e| perr(path, e))?;
    let text = srs.to_projjson().map_err(|e| perr(path, e))?;
    serde_json::from_str(&text).map_err(|e| perr(path, e))
}

/// The Items as one record batch in the stac-geoparquet layout.
fn batch_of(items: &[Value], path: &Path) -> Result<RecordBatch, OutputError> {
    let rows: Vec<Value> = items.iter().map(row_of).collect();
    let ty = rows.iter().map(ty_of).fold(Ty::Null, merge);
    let Ty::Obj(columns) = ty else {
        return Err(perr(path, "no Items"));
    };
    let mut fields: Vec<Field> = Vec::new();
    for (name, t) in &columns {
        let Some(mut dt) = arrow_type(t) else {
            continue;
        };
        if TIMESTAMPS.contains(&name.as_str()) && matches!(t, Ty::Str | Ty::Null) {
            dt = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
        }
        fields.push(Field::new(name, dt, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| perr(path, e))?;
    decoder.serialize(&rows).map_err(|e| perr(path, e))?;
    let batch = decoder
        .flush()
        .map_err(|e| perr(path, e))?
        .ok_or_else(|| perr(path, "no Items"))?;
    // The geometry, as WKB, after `id`.
    let mut wkb: Vec<Option<Vec<u8>>> = Vec::with_capacity(items.len());
    for item in items {
        wkb.push(match item.get("geometry") {
            Some(g) if !g.is_null() => {
                let geom = gdal::vector::Geometry::from_geojson(&g.to_string())
                    .map_err(|e| perr(path, e))?;
                Some(geom.wkb().map_err(|e| perr(path, e))?)
            }
            _ => None,
        });
    }
    let crs = json!({"crs": wgs84_projjson(path)?}).to_string();
    let geometry = Field::new("geometry", DataType::Binary, true).with_metadata(HashMap::from([
        (
            "ARROW:extension:name".to_string(),
            "geoarrow.wkb".to_string(),
        ),
        ("ARROW:extension:metadata".to_string(), crs),
    ]));
    let at = schema
        .fields()
        .iter()
        .position(|f| f.name() == "id")
        .map_or(0, |i| i + 1);
    let mut out_fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut out_columns: Vec<ArrayRef> = batch.columns().to_vec();
    out_fields.insert(at, Arc::new(geometry));
    out_columns.insert(
        at,
        Arc::new(wkb.iter().map(|w| w.as_deref()).collect::<BinaryArray>()),
    );
    RecordBatch::try_new(Arc::new(Schema::new(out_fields)), out_columns).map_err(|e| perr(path, e))
}

/// Writes `items` to `path` (a temporary name: the caller renames it) in the
/// stac-geoparquet layout.
pub fn write_items(items: &[Value], path: &Path) -> Result<(), OutputError> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let batch = batch_of(items, path)?;
    let geo = json!({
        "version": "1.1.0",
        "columns": {"geometry": {
            "encoding": "WKB",
            "geometry_types": [],
            "crs": wgs84_projjson(path)?,
            "edges": "planar",
            "covering": {"bbox": {
                "xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"],
                "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"],
            }},
        }},
        "primary_column": "geometry",
    });
    let kv = [
        ("geo".to_string(), geo.to_string()),
        (
            "stac-geoparquet".to_string(),
            r#"{"version": "1.0.0"}"#.to_string(),
        ),
    ];
    // On the Arrow schema (pyarrow reads the file's metadata from it) and in the Parquet
    // footer (other readers).
    let schema = Arc::new(
        batch
            .schema()
            .as_ref()
            .clone()
            .with_metadata(kv.iter().cloned().collect()),
    );
    let batch = batch.with_schema(schema).map_err(|e| perr(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(
            kv.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
        ))
        .build();
    let file = std::fs::File::create(path).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut w =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| perr(path, e))?;
    w.write(&batch).map_err(|e| perr(path, e))?;
    let file = w.into_inner().map_err(|e| perr(path, e))?;
    file.sync_all().map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The Items `catalog` (the folder's `catalog.json`, in `dir`) links, in link order; links
/// whose file is gone or is not an Item are left out (each one named in a warning).
#[must_use]
pub fn linked_items(dir: &Path, catalog: &Value) -> Vec<Value> {
    let mut items = Vec::new();
    for l in catalog["links"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if l.get("rel").and_then(Value::as_str) != Some("item") {
            continue;
        }
        let Some(href) = l.get("href").and_then(Value::as_str) else {
            continue;
        };
        let path = dir.join(href.trim_start_matches("./"));
        match std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            Some(item) if item.get("type").and_then(Value::as_str) == Some("Feature") => {
                items.push(item);
            }
            _ => tracing::warn!(
                item = %path.display(),
                "catalog.json links an Item that is missing or unreadable: left out of catalog.parquet"
            ),
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_unite_as_pyarrow_infers_them() {
        let a = ty_of(&json!({"n": 1, "o": {"x": 1}, "l": [], "s": "a"}));
        let b = ty_of(&json!({"n": 1.5, "o": {"y": "b"}, "l": [{"k": 1}], "t": true}));
        let m = merge(a, b);
        assert_eq!(
            m,
            Ty::Obj(vec![
                ("n".into(), Ty::Float),
                (
                    "o".into(),
                    Ty::Obj(vec![("x".into(), Ty::Int), ("y".into(), Ty::Str)])
                ),
                (
                    "l".into(),
                    Ty::List(Box::new(Ty::Obj(vec![("k".into(), Ty::Int)])))
                ),
                ("s".into(), Ty::Str),
                ("t".into(), Ty::Bool),
            ])
        );
        assert_eq!(merge(Ty::Int, Ty::Str), Ty::Str);
        assert!(arrow_type(&Ty::Obj(vec![])).is_none());
    }

    #[test]
    fn rows_put_bbox_in_a_struct_and_properties_on_top() {
        let item = json!({"type": "Feature", "stac_version": "1.1.0", "id": "a",
            "geometry": null, "bbox": [1.0, 2.0, 3.0, 4.0], "links": [], "assets": {},
            "properties": {"datetime": "2020-01-01T00:00:00Z", "x": 1}});
        let row = row_of(&item);
        let keys: Vec<&String> = row.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "type",
                "stac_version",
                "id",
                "bbox",
                "links",
                "assets",
                "datetime",
                "x"
            ]
        );
        assert_eq!(row["bbox"]["ymax"], 4.0);
    }

    #[test]
    fn items_become_one_batch_with_timestamps_and_wkb() {
        let item = |id: &str, d: &str, extra: Value| {
            json!({"type": "Feature", "stac_version": "1.1.0", "stac_extensions": [], "id": id,
                "geometry": {"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]},
                "bbox": [0.0, 0.0, 1.0, 1.0], "links": [],
                "assets": extra,
                "properties": {"datetime": d}})
        };
        let items = vec![
            item(
                "a",
                "2020-01-01T00:00:00Z",
                json!({"x": {"href": "./x.tif"}}),
            ),
            item(
                "b",
                "2021-06-01T12:00:00Z",
                json!({"y": {"href": "./y.png"}}),
            ),
        ];
        let b = batch_of(&items, Path::new("t.parquet")).expect("batch");
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "type",
                "stac_version",
                "stac_extensions",
                "id",
                "geometry",
                "bbox",
                "links",
                "assets",
                "datetime"
            ]
        );
        assert_eq!(
            b.schema().field(8).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
        assert_eq!(b.num_rows(), 2);
    }
}
