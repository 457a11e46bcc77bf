//! STAC metadata of a run: one STAC Item per run (projection extension, an asset per output
//! with its roles, the model and its sha256, the input scenes and their dates, the software)
//! and `catalog.json` in the output folder linking every run's Item (and `catalog.parquet`,
//! the same Items in the stac-geoparquet layout), so STAC tools (pystac,
//! QGIS' STAC browser, stac-browser) can browse an output folder.

use crate::error::OutputError;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// One output file of a run.
#[derive(Debug, Clone)]
pub struct Asset {
    /// Asset key (`classes`, `probabilities`, `tiles`, ...).
    pub key: &'static str,
    /// The file (its name becomes the relative href).
    pub path: PathBuf,
    /// Media type.
    pub media_type: &'static str,
    /// STAC roles.
    pub roles: &'static [&'static str],
    /// Human title.
    pub title: String,
}

/// Media type of a Cloud-Optimized GeoTIFF.
pub const COG: &str = "image/tiff; application=geotiff; profile=cloud-optimized";
/// Media type of (Geo)Parquet.
pub const PARQUET: &str = "application/vnd.apache.parquet";
/// Media type of a JSON file.
pub const JSON: &str = "application/json";
/// Media type of a QGIS style.
pub const QML: &str = "application/xml";

/// What an Item describes.
#[derive(Debug, Clone)]
pub struct RunItem<'a> {
    /// Item id (the run's output name).
    pub id: &'a str,
    /// Acquisition date of the input (first of a series), `YYYY-MM-DD`, if known.
    pub start: Option<String>,
    /// Last acquisition date of a series.
    pub end: Option<String>,
    /// Output grid: width, height, geotransform, CRS (WKT) and EPSG code.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// GDAL geotransform.
    pub geo_transform: [f64; 6],
    /// CRS as WKT.
    pub srs_wkt: &'a str,
    /// EPSG code.
    pub epsg: Option<i32>,
    /// Outputs.
    pub assets: Vec<Asset>,
    /// The model manifest, its id and the ONNX sha256.
    pub model_manifest: &'a Path,
    /// Model id.
    pub model_id: &'a str,
    /// sha256 of the ONNX file.
    pub onnx_sha256: &'a str,
    /// Input scenes with their dates.
    pub inputs: Vec<(String, Option<String>)>,
    /// How the input was read: the sensor recognised and each band's conversion.
    pub input_reading: Value,
    /// The model's licence and the attribution it asks for (they apply to the outputs a
    /// share-alike licence covers).
    pub license: Option<&'a str>,
    /// See `license`.
    pub attribution: Option<&'a str>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The grid's footprint in WGS84 (lon, lat), corners and edge midpoints, closed ring.
fn footprint(item: &RunItem<'_>, path: &Path) -> Result<Vec<[f64; 2]>, OutputError> {
    let gt = item.geo_transform;
    let (w, h) = (item.width as f64, item.height as f64);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    // Walk the boundary with several points per edge so the ring follows the projection.
    let steps = 8;
    let ring: Vec<(f64, f64)> = (0..steps)
        .map(|i| (w * f64::from(i) / f64::from(steps), 0.0))
        .chain((0..steps).map(|i| (w, h * f64::from(i) / f64::from(steps))))
        .chain((0..steps).map(|i| (w - w * f64::from(i) / f64::from(steps), h)))
        .chain((0..steps).map(|i| (0.0, h - h * f64::from(i) / f64::from(steps))))
        .collect();
    for (px, py) in ring {
        xs.push(gt[0] + px * gt[1] + py * gt[2]);
        ys.push(gt[3] + px * gt[4] + py * gt[5]);
    }
    let mut src = SpatialRef::from_wkt(item.srs_wkt).map_err(|e| err(path, e))?;
    src.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut dst = SpatialRef::from_epsg(4326).map_err(|e| err(path, e))?;
    dst.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let t = CoordTransform::new(&src, &dst).map_err(|e| err(path, e))?;
    let mut z = vec![0.0; xs.len()];
    t.transform_coords(&mut xs, &mut ys, &mut z)
        .map_err(|e| err(path, e))?;
    let mut pts: Vec<[f64; 2]> = xs.iter().zip(&ys).map(|(&x, &y)| [x, y]).collect();
    pts.push(pts[0]);
    Ok(pts)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The Item as JSON. `path` is where it will be written (hrefs are relative to its folder).
pub fn item_json(item: &RunItem<'_>, path: &Path, created: &str) -> Result<Value, OutputError> {
    let ring = footprint(item, path)?;
    let (mut minx, mut miny, mut maxx, mut maxy) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in &ring {
        minx = minx.min(p[0]);
        maxx = maxx.max(p[0]);
        miny = miny.min(p[1]);
        maxy = maxy.max(p[1]);
    }
    let gt = item.geo_transform;
    let mut props = json!({
        "created": created,
        "proj:code": item.epsg.map(|e| format!("EPSG:{e}")),
        "proj:shape": [item.height, item.width],
        "proj:transform": [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3], 0.0, 0.0, 1.0],
        "processing:software": {"eoinfer": env!("CARGO_PKG_VERSION")},
        "eoinfer:model": {
            "id": item.model_id,
            "manifest": item.model_manifest.display().to_string(),
            "onnx_sha256": item.onnx_sha256,
        },
        "eoinfer:inputs": item.inputs.iter().map(|(s, d)| json!({"scene": s, "date": d})).collect::<Vec<_>>(),
        "eoinfer:input_reading": item.input_reading,
    });
    if item.epsg.is_none() {
        props["proj:wkt2"] = Value::String(item.srs_wkt.to_string());
    }
    if let Some(l) = item.license {
        props["eoinfer:model"]["license"] = Value::String(l.to_string());
    }
    if let Some(a) = item.attribution {
        props["eoinfer:model"]["attribution"] = Value::String(a.to_string());
    }
    match (&item.start, &item.end) {
        (Some(s), Some(e)) if s != e => {
            props["datetime"] = Value::Null;
            props["start_datetime"] = Value::String(format!("{s}T00:00:00Z"));
            props["end_datetime"] = Value::String(format!("{e}T23:59:59Z"));
        }
        (Some(s), _) => props["datetime"] = Value::String(format!("{s}T00:00:00Z")),
        (None, _) => props["datetime"] = Value::String(created.to_string()),
    }
    let mut assets = serde_json::Map::new();
    for a in &item.assets {
        assets.insert(
            a.key.to_string(),
            json!({"href": format!("./{}", file_name(&a.path)), "type": a.media_type, "roles": a.roles, "title": a.title}),
        );
    }
    let sha = item.onnx_sha256;
    assets.insert(
        "model".into(),
        json!({
            "href": std::path::absolute(item.model_manifest).unwrap_or_else(|_| item.model_manifest.to_path_buf()).display().to_string(),
            "type": JSON, "roles": ["metadata", "mlm:model"], "title": format!("model manifest {} (ONNX sha256 {sha})", item.model_id),
        }),
    );
    let doc = json!({
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
        ],
        "id": item.id,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [minx, miny, maxx, maxy],
        "properties": props,
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": JSON},
            {"rel": "parent", "href": "./catalog.json", "type": JSON},
            {"rel": "self", "href": format!("./{}", file_name(path)), "type": JSON}
        ],
        "assets": assets,
    });
    let problems = item_problems(&doc);
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(OutputError::InvalidDocument {
            path: path.to_path_buf(),
            problems: problems.join("; "),
        })
    }
}

/// The extensions a run Item may declare: those with an offline schema copy.
pub const ITEM_EXTENSIONS: [&str; 2] = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
];

fn is_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// Whether `v` is an RFC 3339 date-time as STAC wants it (`2017-02-16T00:00:00Z`).
fn is_datetime(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| {
        let b = s.as_bytes();
        b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && (s.ends_with('Z') || s[19..].contains(['+', '-']))
    })
}

/// The rules of the STAC 1.0 Item schema and the projection v2.0.0 and processing v1.2.0
/// extensions that a run Item could break, checked before it is written (eoinfer refuses to
/// write a document they reject; `tests/documents.rs` checks that the full offline schemas
/// reject the same broken Items).
#[must_use]
pub fn item_problems(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            out.push(what.to_string());
        }
    };
    need(doc["type"] == "Feature", "type must be \"Feature\"");
    need(
        is_str(doc.get("stac_version")),
        "stac_version must be a string",
    );
    need(is_str(doc.get("id")), "id must be a non-empty string");
    let exts = doc["stac_extensions"].as_array();
    need(
        exts.is_some_and(|e| {
            e.iter()
                .all(|x| x.as_str().is_some_and(|u| ITEM_EXTENSIONS.contains(&u)))
        }),
        "stac_extensions must list only the projection v2.0.0 and processing v1.2.0 schemas",
    );
    let g = &doc["geometry"];
    need(
        matches!(g["type"].as_str(), Some("Polygon" | "MultiPolygon"))
            && g["coordinates"].is_array(),
        "geometry must be a GeoJSON Polygon or MultiPolygon",
    );
    let bbox: Vec<f64> = doc["bbox"]
        .as_array()
        .map(|b| b.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    need(
        bbox.len() == 4
            && bbox.iter().all(|v| v.is_finite())
            && bbox[0] <= bbox[2]
            && bbox[1] <= bbox[3],
        "bbox must be 4 finite numbers, west <= east and south <= north",
    );
    let p = &doc["properties"];
    need(p.is_object(), "properties must be an object");
    if p["datetime"].is_null() {
        need(
            is_datetime(p.get("start_datetime")) && is_datetime(p.get("end_datetime")),
            "a null datetime needs start_datetime and end_datetime",
        );
    } else {
        need(
            is_datetime(p.get("datetime")),
            "datetime must be an RFC 3339 date-time or null",
        );
    }
    need(
        p["proj:code"].is_null() && is_str(p.get("proj:wkt2"))
            || p["proj:code"].as_str().is_some_and(|c| c.contains(':')),
        "proj:code must be AUTHORITY:CODE, or null with proj:wkt2",
    );
    need(
        p["proj:shape"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|v| v.as_u64().is_some_and(|n| n > 0))),
        "proj:shape must be two positive integers",
    );
    need(
        p["proj:transform"]
            .as_array()
            .is_some_and(|t| matches!(t.len(), 6 | 9) && t.iter().all(Value::is_number)),
        "proj:transform must be 6 or 9 numbers",
    );
    need(
        p["processing:software"]
            .as_object()
            .is_some_and(|s| !s.is_empty() && s.values().all(Value::is_string)),
        "processing:software must map software names to versions",
    );
    need(
        doc["links"].as_array().is_some_and(|l| {
            l.iter()
                .all(|x| is_str(x.get("rel")) && is_str(x.get("href")))
        }),
        "every link needs rel and href",
    );
    let assets = doc["assets"].as_object();
    need(assets.is_some(), "assets must be an object");
    for (k, a) in assets.into_iter().flatten() {
        need(is_str(a.get("href")), &format!("asset {k} needs an href"));
        need(
            a.get("roles")
                .is_none_or(|r| r.as_array().is_some_and(|r| r.iter().all(Value::is_string))),
            &format!("asset {k}: roles must be strings"),
        );
    }
    out
}

/// The catalog of an output folder with a link to `item_file` added (once).
#[must_use]
pub fn catalog_with(existing: Option<Value>, item_file: &str, title: &str) -> Value {
    let mut cat = existing
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("Catalog"))
        .unwrap_or_else(|| {
            json!({
                "type": "Catalog", "stac_version": "1.0.0", "id": "eoinfer-outputs",
                "description": "eoinfer runs in this folder: one STAC Item per run",
                "links": [{"rel": "root", "href": "./catalog.json", "type": JSON}],
            })
        });
    let href = format!("./{item_file}");
    let links = cat["links"].as_array_mut();
    if let Some(links) = links {
        links.retain(|l| l.get("href").and_then(Value::as_str) != Some(href.as_str()));
        links.push(
            json!({"rel": "item", "href": href, "type": "application/geo+json", "title": title}),
        );
    }
    cat
}

/// Adds the Item to `<dir>/catalog.json`: under the folder's lock (`.eoinfer/catalog.lock`),
/// so runs finishing at once in one folder keep each other's links, written under a
/// temporary name of this process, then renamed.
pub fn update_catalog(dir: &Path, item_file: &str, title: &str) -> Result<(), OutputError> {
    let path = dir.join("catalog.json");
    // One process at a time reads, changes and rewrites the folder's catalog.
    let lock = dir.join(".eoinfer").join("catalog.lock");
    let _held = crate::lock::Held::wait(&lock, crate::lock::Mode::Exclusive).map_err(|e| {
        OutputError::Io {
            path: lock.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let existing = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let cat = catalog_with(existing, item_file, title);
    let mut text = serde_json::to_string_pretty(&cat).unwrap_or_default();
    text.push('\n');
    crate::util::write_atomic_shared(&path, &text)
        .map_err(|source| OutputError::Io { path, source })?;
    // The same Items as a stac-geoparquet table, under a temporary name, renamed.
    let items = crate::output::catalog::linked_items(dir, &cat);
    if items.is_empty() {
        return Ok(());
    }
    let table = dir.join("catalog.parquet");
    let part = crate::util::process_partial_name(&table);
    let written = crate::output::catalog::write_items(&items, &part).and_then(|()| {
        std::fs::rename(&part, &table).map_err(|source| OutputError::Io {
            path: table.clone(),
            source,
        })
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_updating_the_catalog_at_once_keep_every_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::thread::scope(|s| {
            for t in 0..16 {
                s.spawn(move || {
                    for r in 0..5 {
                        update_catalog(d, &format!("t{t}-r{r}.item.json"), "run").expect("update");
                    }
                });
            }
        });
        let cat: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("catalog.json")).expect("read"))
                .expect("json");
        let items = cat["links"]
            .as_array()
            .expect("links")
            .iter()
            .filter(|l| l["rel"] == "item")
            .count();
        assert_eq!(items, 80);
    }

    #[test]
    fn the_catalog_links_each_item_once() {
        let c = catalog_with(None, "a.item.json", "a");
        let c = catalog_with(Some(c), "b.item.json", "b");
        let c = catalog_with(Some(c), "a.item.json", "a again");
        let items: Vec<&str> = c["links"]
            .as_array()
            .expect("links")
            .iter()
            .filter(|l| l["rel"] == "item")
            .filter_map(|l| l["href"].as_str())
            .collect();
        assert_eq!(items, ["./b.item.json", "./a.item.json"]);
        assert_eq!(c["type"], "Catalog");
    }
}
