//! The tiles table: one row per tile with its window, footprint polygon (WKB) in the scene
//! CRS and class statistics, written as GeoParquet 1.1 (the `geo` metadata carries the CRS
//! as PROJJSON) so geopandas, GDAL and DuckDB read it with its CRS.

use crate::error::OutputError;
use crate::grid::Window;
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// Reads one int32 column value from a record.
type Field = Box<dyn Fn(&TileRecord) -> i32>;

/// Statistics of one tile, over its window of the final class map.
#[derive(Debug, Clone, PartialEq)]
pub struct TileRecord {
    /// Row-major tile id.
    pub id: usize,
    /// Row of tiles.
    pub row: usize,
    /// Column of tiles.
    pub col: usize,
    /// The tile's window clipped to the scene.
    pub window: Window,
    /// Whether the model ran on the tile (false: no valid input pixel).
    pub inferred: bool,
    /// Pixels per class in the window.
    pub counts: Vec<u64>,
    /// Valid pixels in the window.
    pub valid: u64,
    /// A value map's sum, smallest and largest value over the valid pixels.
    pub stats: Option<[f64; 3]>,
}

/// Adds the classes of finished rows to the records whose windows they cross.
pub fn count_rows(records: &mut [TileRecord], rows: &crate::blend::FinishedRows, width: usize) {
    let (y0, y1) = (rows.y as i64, (rows.y + rows.rows) as i64);
    for r in records.iter_mut() {
        let w = r.window;
        let (a, b) = (w.y.max(y0), (w.y + w.height as i64).min(y1));
        let n_classes = r.counts.len();
        for yy in a..b {
            let at = (yy - y0) as usize * width + w.x as usize;
            let line = &rows.classes[at..at + w.width];
            for (i, &c) in line.iter().enumerate() {
                if usize::from(c) < n_classes {
                    r.counts[usize::from(c)] += 1;
                    r.valid += 1;
                    // The winning class's probability: sum, smallest, largest (0..=1).
                    if let Some(&q) = rows.confidence.get(at + i) {
                        let v = f64::from(q) / 255.0;
                        r.stats = Some(match r.stats {
                            None => [v, v, v],
                            Some(st) => [st[0] + v, st[1].min(v), st[2].max(v)],
                        });
                    }
                }
            }
        }
    }
}

/// Writes `vals` as the next (required) column of row group `rg` of the file at `path`.
pub(crate) fn write_column<T: parquet::data_type::DataType>(
    rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, std::fs::File>,
    vals: &[T::T],
    path: &Path,
) -> Result<(), OutputError> {
    let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut col = rg
        .next_column()
        .map_err(|e| perr(&e))?
        .ok_or_else(|| perr(&"missing column"))?;
    col.typed::<T>()
        .write_batch(vals, None, None)
        .map_err(|e| perr(&e))?;
    col.close().map_err(|e| perr(&e))
}

/// Column-safe form of a class name.
#[must_use]
pub fn column_name(class: &str) -> String {
    class
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Little-endian WKB of the window's footprint polygon in CRS coordinates.
#[must_use]
pub fn footprint_wkb(w: Window, gt: &[f64; 6]) -> (Vec<u8>, [f64; 4]) {
    let px = |x: f64, y: f64| (gt[0] + x * gt[1] + y * gt[2], gt[3] + x * gt[4] + y * gt[5]);
    let (x0, y0) = (w.x as f64, w.y as f64);
    let (x1, y1) = (x0 + w.width as f64, y0 + w.height as f64);
    // Counter-clockwise exterior ring (GeoParquet / OGC orientation).
    let ring = [px(x0, y1), px(x1, y1), px(x1, y0), px(x0, y0), px(x0, y1)];
    let mut b = Vec::with_capacity(9 + 4 + 16 * ring.len());
    b.push(1);
    b.extend_from_slice(&3_u32.to_le_bytes());
    b.extend_from_slice(&1_u32.to_le_bytes());
    b.extend_from_slice(&(ring.len() as u32).to_le_bytes());
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for (x, y) in ring {
        b.extend_from_slice(&x.to_le_bytes());
        b.extend_from_slice(&y.to_le_bytes());
        bbox = [
            bbox[0].min(x),
            bbox[1].min(y),
            bbox[2].max(x),
            bbox[3].max(y),
        ];
    }
    (b, bbox)
}

/// The footprint polygons (WKB) of `windows` on `gt` and their bounding box.
pub(crate) fn footprints(
    windows: impl Iterator<Item = Window>,
    gt: &[f64; 6],
) -> (Vec<ByteArray>, [f64; 4]) {
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    let wkbs = windows
        .map(|w| {
            let (wkb, b) = footprint_wkb(w, gt);
            bbox = [
                bbox[0].min(b[0]),
                bbox[1].min(b[1]),
                bbox[2].max(b[2]),
                bbox[3].max(b[3]),
            ];
            ByteArray::from(wkb)
        })
        .collect();
    (wkbs, bbox)
}

/// The schema lines of a label and its scores: `class`, `class_name`, `score_<class>` each.
pub(crate) fn class_schema(classes: &[crate::model::ClassInfo]) -> String {
    let mut s = String::from(" required int32 class;\n required binary class_name (UTF8);\n");
    for c in classes {
        let _ = writeln!(s, " required double score_{};", column_name(&c.name));
    }
    s
}

/// Writes the columns [`class_schema`] declares: each row's label, its name and its score per
/// class (one `(label, scores)` per row).
pub(crate) fn write_class_columns(
    rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, std::fs::File>,
    rows: &[(usize, &[f32])],
    classes: &[crate::model::ClassInfo],
    path: &Path,
) -> Result<(), OutputError> {
    let labels: Vec<i32> = rows.iter().map(|r| r.0 as i32).collect();
    write_column::<Int32Type>(rg, &labels, path)?;
    let names: Vec<ByteArray> = rows
        .iter()
        .map(|r| {
            ByteArray::from(
                classes
                    .get(r.0)
                    .map_or_else(|| format!("class {}", r.0), |c| c.name.clone())
                    .as_str(),
            )
        })
        .collect();
    write_column::<ByteArrayType>(rg, &names, path)?;
    for c in 0..classes.len() {
        let scores: Vec<f64> = rows
            .iter()
            .map(|r| f64::from(r.1.get(c).copied().unwrap_or(f32::NAN)))
            .collect();
        write_column::<DoubleType>(rg, &scores, path)?;
    }
    Ok(())
}

/// A GeoParquet 1.1 writer of `schema` at `path`: SNAPPY, the `geo` metadata of one WKB
/// polygon column `geometry` with the CRS as PROJJSON and, when there are rows, `bbox`.
pub(crate) fn geoparquet_writer(
    path: &Path,
    schema: &str,
    projjson: &str,
    bbox: Option<[f64; 4]>,
) -> Result<SerializedFileWriter<std::fs::File>, OutputError> {
    geoparquet_writer_of(path, schema, projjson, bbox, &["Polygon"])
}

/// [`geoparquet_writer`] for a geometry column of the given GeoParquet geometry types.
pub(crate) fn geoparquet_writer_of(
    path: &Path,
    schema: &str,
    projjson: &str,
    bbox: Option<[f64; 4]>,
    geometry_types: &[&str],
) -> Result<SerializedFileWriter<std::fs::File>, OutputError> {
    let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let schema = Arc::new(parse_message_type(schema).map_err(|e| perr(&e))?);
    let crs: serde_json::Value = serde_json::from_str(projjson).unwrap_or(serde_json::Value::Null);
    let mut geo_col =
        serde_json::json!({"encoding": "WKB", "geometry_types": geometry_types, "crs": crs});
    if let Some(b) = bbox {
        geo_col["bbox"] = serde_json::json!(b);
    }
    let geo = serde_json::json!({"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": geo_col}});
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "geo".to_string(),
            geo.to_string(),
        )]))
        .build();
    let file = std::fs::File::create(path).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(|e| perr(&e))
}

/// Writes the tiles table to `path`.
pub fn write_tiles(
    path: &Path,
    records: &[TileRecord],
    class_names: &[String],
    confidence: bool,
    gt: &[f64; 6],
    projjson: &str,
) -> Result<(), OutputError> {
    let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let cols: Vec<String> = class_names.iter().map(|c| column_name(c)).collect();
    let mut schema = String::from(
        "message tiles {\n required int32 tile_id;\n required int32 tile_row;\n required int32 tile_col;\n \
         required int32 x_off;\n required int32 y_off;\n required int32 width;\n required int32 height;\n \
         required boolean inferred;\n required int64 valid_pixels;\n required double valid_fraction;\n",
    );
    for c in &cols {
        schema.push_str(" required int64 count_");
        schema.push_str(c);
        schema.push_str(";\n");
    }
    for c in &cols {
        schema.push_str(" required double fraction_");
        schema.push_str(c);
        schema.push_str(";\n");
    }
    if confidence {
        schema.push_str(" required double confidence_mean;\n required double confidence_min;\n");
    }
    schema.push_str(" required binary geometry;\n}\n");
    let (wkbs, bbox) = footprints(records.iter().map(|r| r.window), gt);
    let mut writer = geoparquet_writer(
        path,
        &schema,
        projjson,
        (!records.is_empty()).then_some(bbox),
    )?;
    let mut rg = writer.next_row_group().map_err(|e| perr(&e))?;

    let i32s: Vec<Field> = vec![
        Box::new(|r| r.id as i32),
        Box::new(|r| r.row as i32),
        Box::new(|r| r.col as i32),
        Box::new(|r| r.window.x as i32),
        Box::new(|r| r.window.y as i32),
        Box::new(|r| r.window.width as i32),
        Box::new(|r| r.window.height as i32),
    ];
    for f in &i32s {
        let vals: Vec<i32> = records.iter().map(f).collect();
        let mut col = rg
            .next_column()
            .map_err(|e| perr(&e))?
            .ok_or_else(|| perr(&"missing column"))?;
        col.typed::<Int32Type>()
            .write_batch(&vals, None, None)
            .map_err(|e| perr(&e))?;
        col.close().map_err(|e| perr(&e))?;
    }
    {
        let vals: Vec<bool> = records.iter().map(|r| r.inferred).collect();
        let mut col = rg
            .next_column()
            .map_err(|e| perr(&e))?
            .ok_or_else(|| perr(&"missing column"))?;
        col.typed::<BoolType>()
            .write_batch(&vals, None, None)
            .map_err(|e| perr(&e))?;
        col.close().map_err(|e| perr(&e))?;
    }
    let write_i64 =
        |rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, std::fs::File>,
         vals: Vec<i64>|
         -> Result<(), OutputError> {
            let mut col = rg
                .next_column()
                .map_err(|e| perr(&e))?
                .ok_or_else(|| perr(&"missing column"))?;
            col.typed::<Int64Type>()
                .write_batch(&vals, None, None)
                .map_err(|e| perr(&e))?;
            col.close().map_err(|e| perr(&e))
        };
    let write_f64 =
        |rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, std::fs::File>,
         vals: Vec<f64>|
         -> Result<(), OutputError> {
            let mut col = rg
                .next_column()
                .map_err(|e| perr(&e))?
                .ok_or_else(|| perr(&"missing column"))?;
            col.typed::<DoubleType>()
                .write_batch(&vals, None, None)
                .map_err(|e| perr(&e))?;
            col.close().map_err(|e| perr(&e))
        };
    let frac = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    write_i64(&mut rg, records.iter().map(|r| r.valid as i64).collect())?;
    write_f64(
        &mut rg,
        records
            .iter()
            .map(|r| frac(r.valid, (r.window.width * r.window.height) as u64))
            .collect(),
    )?;
    for c in 0..cols.len() {
        write_i64(
            &mut rg,
            records.iter().map(|r| r.counts[c] as i64).collect(),
        )?;
    }
    for c in 0..cols.len() {
        write_f64(
            &mut rg,
            records.iter().map(|r| frac(r.counts[c], r.valid)).collect(),
        )?;
    }
    if confidence {
        // The winning class's blended probability (0..=1, from the uint8 confidence map),
        // mean and smallest over the tile's valid pixels; NaN without one.
        let of = |r: &TileRecord, i: usize| r.stats.map_or(f64::NAN, |st| st[i]);
        write_f64(
            &mut rg,
            records
                .iter()
                .map(|r| of(r, 0) / r.valid.max(1) as f64)
                .collect(),
        )?;
        write_f64(&mut rg, records.iter().map(|r| of(r, 1)).collect())?;
    }
    {
        let mut col = rg
            .next_column()
            .map_err(|e| perr(&e))?
            .ok_or_else(|| perr(&"missing column"))?;
        col.typed::<ByteArrayType>()
            .write_batch(&wkbs, None, None)
            .map_err(|e| perr(&e))?;
        col.close().map_err(|e| perr(&e))?;
    }
    rg.close().map_err(|e| perr(&e))?;
    writer.close().map_err(|e| perr(&e))?;
    Ok(())
}

/// Writes the tiles table of a value map: per tile its window, valid pixels and the mean,
/// smallest and largest value (`<name>_mean`, `_min`, `_max`; NaN without a valid pixel).
pub fn write_value_tiles(
    path: &Path,
    records: &[TileRecord],
    name: &str,
    gt: &[f64; 6],
    projjson: &str,
) -> Result<(), OutputError> {
    let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let v = column_name(name);
    let schema = format!(
        "message tiles {{\n required int32 tile_id;\n required int32 tile_row;\n required int32 tile_col;\n \
         required int32 x_off;\n required int32 y_off;\n required int32 width;\n required int32 height;\n \
         required boolean inferred;\n required int64 valid_pixels;\n required double {v}_mean;\n \
         required double {v}_min;\n required double {v}_max;\n required binary geometry;\n}}\n"
    );
    let (wkbs, bbox) = footprints(records.iter().map(|r| r.window), gt);
    let mut writer = geoparquet_writer(
        path,
        &schema,
        projjson,
        (!records.is_empty()).then_some(bbox),
    )?;
    let mut rg = writer.next_row_group().map_err(|e| perr(&e))?;
    macro_rules! column {
        ($ty:ty, $vals:expr) => {
            write_column::<$ty>(&mut rg, $vals, path)?
        };
    }
    let i32s: [fn(&TileRecord) -> i32; 7] = [
        |r| r.id as i32,
        |r| r.row as i32,
        |r| r.col as i32,
        |r| r.window.x as i32,
        |r| r.window.y as i32,
        |r| r.window.width as i32,
        |r| r.window.height as i32,
    ];
    for f in i32s {
        column!(Int32Type, &records.iter().map(f).collect::<Vec<_>>());
    }
    column!(
        BoolType,
        &records.iter().map(|r| r.inferred).collect::<Vec<_>>()
    );
    column!(
        Int64Type,
        &records.iter().map(|r| r.valid as i64).collect::<Vec<_>>()
    );
    let stat = |r: &TileRecord, k: usize| match r.stats {
        Some(s) if r.valid > 0 => {
            if k == 0 {
                s[0] / r.valid as f64
            } else {
                s[k]
            }
        }
        _ => f64::NAN,
    };
    for k in 0..3 {
        column!(
            DoubleType,
            &records.iter().map(|r| stat(r, k)).collect::<Vec<_>>()
        );
    }
    column!(ByteArrayType, &wkbs);
    rg.close().map_err(|e| perr(&e))?;
    writer.close().map_err(|e| perr(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprints_are_closed_rings_in_crs_coordinates() {
        let gt = [500_000.0, 30.0, 0.0, 5_000_000.0, 0.0, -30.0];
        let (wkb, bbox) = footprint_wkb(
            Window {
                x: 1,
                y: 2,
                width: 3,
                height: 4,
            },
            &gt,
        );
        assert_eq!(wkb.len(), 1 + 4 + 4 + 4 + 5 * 16);
        assert_eq!(bbox, [500_030.0, 4_999_820.0, 500_120.0, 4_999_940.0]);
        assert_eq!(&wkb[13..29], &wkb[wkb.len() - 16..]);
    }

    #[test]
    fn class_names_become_column_names() {
        assert_eq!(column_name("cloud shadow"), "cloud_shadow");
    }
}
