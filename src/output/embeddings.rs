//! The embeddings table: one row per patch with its polygon and centre (scene CRS and WGS84)
//! and its embedding as a list of float32, written as GeoParquet 1.1 row group by row group
//! (bounded memory), ready for similarity search in DuckDB or pandas.

use crate::error::OutputError;
use crate::grid::Window;
use crate::output::parquet::footprint_wkb;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A streaming GeoParquet writer of patch embeddings.
pub struct EmbeddingTable {
    path: PathBuf,
    writer: SerializedFileWriter<std::fs::File>,
    to_wgs84: CoordTransform,
    geo_transform: [f64; 6],
    dim: usize,
    rows: usize,
}

impl std::fmt::Debug for EmbeddingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingTable")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn perr(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl EmbeddingTable {
    /// Creates the table at `path` for patches on `geo_transform` (patch grid) in `srs_wkt`.
    pub fn create(
        path: &Path,
        geo_transform: [f64; 6],
        srs_wkt: &str,
        projjson: &str,
        bbox: [f64; 4],
        dim: usize,
    ) -> Result<Self, OutputError> {
        let schema = "message embeddings {\n required int32 patch_row;\n required int32 patch_col;\n required double center_x;\n \
                      required double center_y;\n required double lon;\n required double lat;\n \
                      required group embedding (LIST) {\n  repeated group list {\n   required float element;\n  }\n }\n \
                      required binary geometry;\n}\n";
        let schema = Arc::new(parse_message_type(schema).map_err(|e| perr(path, e))?);
        let crs: serde_json::Value =
            serde_json::from_str(projjson).unwrap_or(serde_json::Value::Null);
        let geo = serde_json::json!({
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs, "bbox": bbox}}
        });
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![
                KeyValue::new("geo".to_string(), geo.to_string()),
                KeyValue::new("eoinfer:embedding_dim".to_string(), dim.to_string()),
            ]))
            .build();
        let file = std::fs::File::create(path).map_err(|source| OutputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let writer =
            SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(|e| perr(path, e))?;
        let src = SpatialRef::from_wkt(srs_wkt).map_err(|e| perr(path, e))?;
        let mut dst = SpatialRef::from_epsg(4326).map_err(|e| perr(path, e))?;
        dst.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let mut src = src;
        src.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let to_wgs84 = CoordTransform::new(&src, &dst).map_err(|e| perr(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            to_wgs84,
            geo_transform,
            dim,
            rows: 0,
        })
    }

    /// Writes the valid patches of a `width` x `rows` rectangle of the patch grid at
    /// column `x0`, row `y` as one row group; `values` is channel-major (`dim * rows * width`).
    pub fn write_block(
        &mut self,
        (x0, y): (usize, usize),
        (width, rows): (usize, usize),
        values: &[f32],
        valid: &[bool],
    ) -> Result<(), OutputError> {
        let path = self.path.clone();
        let gt = self.geo_transform;
        let idx: Vec<(usize, usize)> = (0..rows)
            .flat_map(|r| (0..width).map(move |x| (r, x)))
            .filter(|&(r, x)| valid[r * width + x])
            .collect();
        let col = |x: usize| x0 + x;
        if idx.is_empty() {
            return Ok(());
        }
        let mut cx: Vec<f64> = idx
            .iter()
            .map(|&(_, x)| gt[0] + (col(x) as f64 + 0.5) * gt[1])
            .collect::<Vec<_>>();
        let mut cy: Vec<f64> = idx
            .iter()
            .map(|&(r, _)| gt[3] + ((y + r) as f64 + 0.5) * gt[5])
            .collect::<Vec<_>>();
        let (center_x, center_y) = (cx.clone(), cy.clone());
        let mut z = vec![0.0; cx.len()];
        self.to_wgs84
            .transform_coords(&mut cx, &mut cy, &mut z)
            .map_err(|e| perr(&path, e))?;
        let plane = rows * width;
        let mut emb = Vec::with_capacity(idx.len() * self.dim);
        let mut def = Vec::with_capacity(idx.len() * self.dim);
        let mut rep = Vec::with_capacity(idx.len() * self.dim);
        for &(r, x) in &idx {
            for c in 0..self.dim {
                emb.push(values[c * plane + r * width + x]);
                def.push(1_i16);
                rep.push(i16::from(c != 0));
            }
        }
        let geoms: Vec<ByteArray> = idx
            .iter()
            .map(|&(r, x)| {
                let w = Window {
                    x: col(x) as i64,
                    y: (y + r) as i64,
                    width: 1,
                    height: 1,
                };
                ByteArray::from(footprint_wkb(w, &gt).0)
            })
            .collect();
        let mut rg = self.writer.next_row_group().map_err(|e| perr(&path, e))?;
        macro_rules! column {
            ($ty:ty, $vals:expr, $def:expr, $rep:expr) => {{
                let mut col = rg
                    .next_column()
                    .map_err(|e| perr(&path, e))?
                    .ok_or_else(|| perr(&path, "missing column"))?;
                col.typed::<$ty>()
                    .write_batch($vals, $def, $rep)
                    .map_err(|e| perr(&path, e))?;
                col.close().map_err(|e| perr(&path, e))?;
            }};
        }
        column!(
            Int32Type,
            &idx.iter().map(|&(r, _)| (y + r) as i32).collect::<Vec<_>>(),
            None,
            None
        );
        column!(
            Int32Type,
            &idx.iter().map(|&(_, x)| col(x) as i32).collect::<Vec<_>>(),
            None,
            None
        );
        column!(DoubleType, &center_x, None, None);
        column!(DoubleType, &center_y, None, None);
        column!(DoubleType, &cx, None, None);
        column!(DoubleType, &cy, None, None);
        column!(FloatType, &emb, Some(&def), Some(&rep));
        column!(ByteArrayType, &geoms, None, None);
        rg.close().map_err(|e| perr(&path, e))?;
        self.rows += idx.len();
        Ok(())
    }

    /// Finishes the file; returns the number of rows.
    pub fn close(self) -> Result<usize, OutputError> {
        let path = self.path.clone();
        self.writer.close().map_err(|e| perr(&path, e))?;
        Ok(self.rows)
    }
}

/// Writes the rows of every part of an embeddings raster into `table`, part by part (block
/// order: column panel by panel, top to bottom) in chunks of rows (a patch with a finite
/// first band is a written embedding).
fn table_from_parts(
    table: &mut EmbeddingTable,
    parts: &[crate::output::raster::Part],
    dim: usize,
) -> Result<(), OutputError> {
    let gerr = |p: &Path, e: gdal::errors::GdalError| OutputError::Gdal {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    for p in parts {
        let width = p.cols;
        let ds = gdal::Dataset::open(&p.path).map_err(|e| gerr(&p.path, e))?;
        let chunk = ((32 << 20) / (width * dim * 4).max(1)).clamp(1, p.rows.max(1));
        let mut y = 0;
        while y < p.rows {
            let n = chunk.min(p.rows - y);
            let plane = width * n;
            let mut values = vec![0_f32; dim * plane];
            for b in 0..dim {
                ds.rasterband(b + 1)
                    .and_then(|band| {
                        band.read_into_slice::<f32>(
                            (0, y as isize),
                            (width, n),
                            (width, n),
                            &mut values[b * plane..(b + 1) * plane],
                            None,
                        )
                    })
                    .map_err(|e| gerr(&p.path, e))?;
            }
            let valid: Vec<bool> = values[..plane].iter().map(|v| v.is_finite()).collect();
            table.write_block((p.x, p.y + y), (width, n), &values, &valid)?;
            y += n;
        }
    }
    Ok(())
}

/// The outputs of an embeddings head from the finished blocks: the embeddings COG (float32,
/// or uint8 with per-band scale and offset from the whole run's range), the GeoParquet, the
/// STAC Item and the summary, renamed into place with the summary last.
pub fn merge(
    job: &crate::plan::JobPlan,
    out: &Path,
    ctx: crate::pipeline::MergeContext,
    records: &[&crate::journal::BlockRecord],
    parts_path: &Path,
    (dim, uint8): (usize, bool),
    t_final: std::time::Instant,
) -> Result<crate::pipeline::RunSummary, crate::error::Error> {
    use crate::output::raster::{Part, aux_path, band_ranges, embeddings_cog_from_parts};
    use crate::util::{TempFiles, partial_name};
    let name = &job.name;
    let parts = Part::of_blocks(records, parts_path);
    let (w, h, gt) = job.out_grid();
    let final_cog = out.join(format!("{name}.embeddings.tif"));
    let final_table = out.join(format!("{name}.embeddings.parquet"));
    let final_summary = out.join(format!("{name}.summary.json"));
    let final_item = out.join(format!("{name}.item.json"));
    let mut temps = TempFiles::new();
    let part_cog = temps.track(partial_name(&final_cog));
    temps.track(aux_path(&part_cog));
    let part_table = temps.track(partial_name(&final_table));
    let ranges = if uint8 {
        Some(band_ranges(&parts, dim)?)
    } else {
        None
    };
    let srs = &job.grid.srs_wkt;
    embeddings_cog_from_parts(&parts, (w, h), &gt, srs, dim, ranges.as_deref(), &part_cog)?;
    let bbox = [
        gt[0],
        gt[3] + gt[5] * h as f64,
        gt[0] + gt[1] * w as f64,
        gt[3],
    ];
    let mut table = EmbeddingTable::create(&part_table, gt, srs, &job.grid.projjson, bbox, dim)?;
    table_from_parts(&mut table, &parts, dim)?;
    let rows = table.close()?;
    let patches_valid: u64 = records
        .iter()
        .map(|r| r.class_pixels.first().copied().unwrap_or(0))
        .sum();
    let summary = crate::pipeline::RunSummary::for_embeddings(
        job,
        ctx,
        records,
        crate::pipeline::Outputs {
            classes: None,
            probabilities: None,
            confidence: None,
            tiles: None,
            embeddings: Some(final_cog.clone()),
            table: Some(final_table.clone()),
            values: None,
            summary: final_summary.clone(),
            stac_item: final_item.clone(),
            preview: Some(out.join(format!("{name}.preview.png"))),
            vectors: None,
        },
        (patches_valid, rows),
        t_final,
    );
    let mut moves = vec![
        (part_cog.clone(), final_cog.clone()),
        (part_table, final_table),
    ];
    if aux_path(&part_cog).exists() {
        moves.push((aux_path(&part_cog), aux_path(&final_cog)));
    }
    crate::pipeline::commit_outputs(job, out, &summary, moves, temps)?;
    Ok(summary)
}
