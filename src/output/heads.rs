//! The final outputs of the value heads, from the float32 parts their blocks wrote:
//! a regression head's value map (float32 COG with the value's name, unit and nodata, a QGIS
//! colour ramp, per-tile statistics in the tiles GeoParquet) and a classification head's
//! window labels (a class COG at window resolution with the colour table, and one GeoParquet
//! row per window with its label and class scores).

use crate::error::{Error, OutputError};
use crate::journal::BlockRecord;
use crate::model::ClassInfo;
use crate::model::embedding::RegressionSpec;
use crate::output::raster::{Part, RasterKind, RasterSink, aux_path, cog_from_parts};
use crate::pipeline::{Counts, MergeContext, Outputs, RunSummary};
use crate::plan::JobPlan;
use crate::util::{TempFiles, partial_name};
use parquet::data_type::{ByteArrayType, Int32Type};
use std::fmt::Write as _;
use std::path::Path;

fn gerr(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Gdal {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

use crate::scene::xml_escape as xml;

/// Joins the value parts into a COG: float32, NaN (no prediction) becoming the value's
/// nodata; or (`uint8`) 1 to 255 linear over the manifest's expected range, values outside
/// it clamped, 0 = no prediction, with the scale and offset that give the value back. The
/// band carries the value's name, unit and expected range.
fn values_cog(
    job: &JobPlan,
    parts: &[Part],
    (value, uint8): (&RegressionSpec, bool),
    target: &Path,
) -> Result<(), OutputError> {
    let (width, height, gt) = job.out_grid();
    let [lo, hi] = value.range;
    let scale = (hi - lo) / 254.0;
    let mut s = crate::output::raster::vrt_header((width, height), &gt, &job.grid.srs_wkt);
    let kind = if uint8 {
        format!(
            "dataType=\"Byte\" band=\"1\"><NoDataValue>0</NoDataValue><Offset>{:.17e}</Offset><Scale>{scale:.17e}</Scale>",
            lo - scale
        )
    } else {
        format!(
            "dataType=\"Float32\" band=\"1\"><NoDataValue>{:.17e}</NoDataValue>",
            value.nodata
        )
    };
    let _ = write!(
        s,
        "<VRTRasterBand {kind}<Description>{}</Description><UnitType>{}</UnitType>\
         <Metadata><MDI key=\"VALUE_NAME\">{}</MDI><MDI key=\"VALUE_UNIT\">{}</MDI><MDI key=\"VALUE_RANGE\">{} {}</MDI></Metadata>",
        xml(&value.name),
        xml(&value.unit),
        xml(&value.name),
        xml(&value.unit),
        lo,
        hi
    );
    // The LUT maps the range onto 1..255 and clamps outside it (NaN stays no data).
    let lut = if uint8 {
        format!("<LUT>{lo:.17e}:1,{hi:.17e}:255</LUT>")
    } else {
        String::new()
    };
    for p in parts {
        let _ = write!(
            s,
            "<ComplexSource><SourceFilename relativeToVRT=\"0\">{}</SourceFilename><SourceBand>1</SourceBand>{}<NODATA>nan</NODATA>{lut}</ComplexSource>",
            xml(&p.path.to_string_lossy()),
            p.rects()
        );
    }
    s.push_str("</VRTRasterBand></VRTDataset>");
    let src = gdal::Dataset::open(&s).map_err(|e| gerr(target, e))?;
    crate::output::raster::cog_copy(&src, RasterKind::Values, target)
}

/// The outputs of a regression head from the finished blocks.
pub fn merge_regression(
    job: &JobPlan,
    out: &Path,
    ctx: MergeContext,
    records: &[&BlockRecord],
    parts_path: &Path,
    (value, uint8): (&RegressionSpec, bool),
    t_final: std::time::Instant,
) -> Result<RunSummary, Error> {
    let name = &job.name;
    let parts = Part::of_blocks(records, parts_path);
    let final_values = out.join(format!("{name}.values.tif"));
    let final_tiles = out.join(format!("{name}.tiles.parquet"));
    let final_summary = out.join(format!("{name}.summary.json"));
    let final_item = out.join(format!("{name}.item.json"));
    let mut temps = TempFiles::new();
    let part_values = temps.track(partial_name(&final_values));
    temps.track(aux_path(&part_values));
    let part_tiles = temps.track(partial_name(&final_tiles));
    values_cog(job, &parts, (value, uint8), &part_values)?;
    let (tiles, totals, _) = crate::pipeline::sum_tiles(job, records, 1)?;
    crate::output::parquet::write_value_tiles(
        &part_tiles,
        &tiles,
        &value.name,
        &job.grid.geo_transform,
        &job.grid.projjson,
    )?;
    let valid = totals.first().copied().unwrap_or(0);
    // A uint8 map holds the expected range only: say where the model went outside it.
    let outside = tiles
        .iter()
        .filter_map(|t| t.stats)
        .filter(|st| st[1] < value.range[0] || st[2] > value.range[1])
        .count();
    let mut ctx = ctx;
    if uint8 && outside > 0 {
        let w = format!(
            "{outside} tile(s) hold {} values outside the expected range {} to {}: the uint8 values COG clamps them to the range (tiles.parquet has their real minimum and maximum; --value-dtype float32 keeps them)",
            value.name, value.range[0], value.range[1]
        );
        tracing::warn!("{w}");
        ctx.warnings.push(w);
    }
    let counts = Counts {
        pixels_valid: valid,
        ..Counts::default()
    };
    let outputs = Outputs {
        classes: None,
        probabilities: None,
        confidence: None,
        tiles: Some(final_tiles.clone()),
        embeddings: None,
        table: None,
        values: Some(final_values.clone()),
        summary: final_summary.clone(),
        stac_item: final_item.clone(),
        preview: Some(out.join(format!("{name}.preview.png"))),
        vectors: None,
    };
    let summary = RunSummary::assemble(job, ctx, records, outputs, counts, t_final);
    let style =
        crate::output::qgis::value_style(&value.name, &value.unit, value.range[0], value.range[1]);
    let mut moves = vec![
        (part_values.clone(), final_values.clone()),
        (part_tiles, final_tiles),
        crate::output::qgis::stage_text(
            &crate::output::qgis::style_path(&final_values),
            &style,
            &mut temps,
        )?,
    ];
    if aux_path(&part_values).exists() {
        moves.push((aux_path(&part_values), aux_path(&final_values)));
    }
    crate::pipeline::commit_outputs(job, out, &summary, moves, temps)?;
    Ok(summary)
}

/// One labelled window.
struct WindowRow {
    row: usize,
    col: usize,
    class: u8,
    scores: Vec<f32>,
}

/// Reads the window scores of every part: the label of each window (the class with the
/// highest score; `CLASS_NODATA` without a prediction) on the `width` x `height` window
/// grid, and the labelled windows in row-major order.
fn labels(
    parts: &[Part],
    (width, height): (usize, usize),
    classes: usize,
) -> Result<(Vec<u8>, Vec<WindowRow>), OutputError> {
    let mut labels = vec![crate::blend::CLASS_NODATA; width * height];
    let mut rows = Vec::new();
    for p in parts {
        let ds = gdal::Dataset::open(&p.path).map_err(|e| gerr(&p.path, e))?;
        let pw = p.cols;
        let plane = pw * p.rows;
        let mut scores = vec![0_f32; classes * plane];
        for c in 0..classes {
            ds.rasterband(c + 1)
                .and_then(|b| {
                    b.read_into_slice::<f32>(
                        (0, 0),
                        (pw, p.rows),
                        (pw, p.rows),
                        &mut scores[c * plane..(c + 1) * plane],
                        None,
                    )
                })
                .map_err(|e| gerr(&p.path, e))?;
        }
        for i in 0..plane {
            let s: Vec<f32> = (0..classes).map(|c| scores[c * plane + i]).collect();
            if !s[0].is_finite() {
                continue;
            }
            let best = (0..classes)
                .max_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            let (row, col) = (p.y + i / pw, p.x + i % pw);
            labels[row * width + col] = best as u8;
            rows.push(WindowRow {
                row,
                col,
                class: best as u8,
                scores: s,
            });
        }
    }
    rows.sort_by_key(|r| (r.row, r.col));
    Ok((labels, rows))
}

/// The windows GeoParquet: one row per labelled window with its polygon, label and scores.
fn write_windows(
    path: &Path,
    rows: &[WindowRow],
    classes: &[ClassInfo],
    gt: &[f64; 6],
    projjson: &str,
) -> Result<(), OutputError> {
    let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let schema = format!(
        "message windows {{\n required int32 window_row;\n required int32 window_col;\n{} required binary geometry;\n}}\n",
        crate::output::parquet::class_schema(classes)
    );
    let windows = rows.iter().map(|r| crate::grid::Window {
        x: r.col as i64,
        y: r.row as i64,
        width: 1,
        height: 1,
    });
    let (wkbs, bbox) = crate::output::parquet::footprints(windows, gt);
    let mut writer = crate::output::parquet::geoparquet_writer(
        path,
        &schema,
        projjson,
        (!rows.is_empty()).then_some(bbox),
    )?;
    let mut rg = writer.next_row_group().map_err(|e| perr(&e))?;
    macro_rules! column {
        ($ty:ty, $vals:expr) => {
            crate::output::parquet::write_column::<$ty>(&mut rg, $vals, path)?
        };
    }
    column!(
        Int32Type,
        &rows.iter().map(|r| r.row as i32).collect::<Vec<_>>()
    );
    column!(
        Int32Type,
        &rows.iter().map(|r| r.col as i32).collect::<Vec<_>>()
    );
    let labelled: Vec<(usize, &[f32])> = rows
        .iter()
        .map(|r| (usize::from(r.class), r.scores.as_slice()))
        .collect();
    crate::output::parquet::write_class_columns(&mut rg, &labelled, classes, path)?;
    column!(ByteArrayType, &wkbs);
    rg.close().map_err(|e| perr(&e))?;
    writer.close().map_err(|e| perr(&e))?;
    Ok(())
}

/// The outputs of a classification head from the finished blocks.
pub fn merge_classification(
    job: &JobPlan,
    out: &Path,
    ctx: MergeContext,
    records: &[&BlockRecord],
    parts_path: &Path,
    t_final: std::time::Instant,
) -> Result<RunSummary, Error> {
    let name = &job.name;
    let classes = &job.model.classes;
    let parts = Part::of_blocks(records, parts_path);
    let (width, height, gt) = job.out_grid();
    let final_classes = out.join(format!("{name}.classes.tif"));
    let final_windows = out.join(format!("{name}.windows.parquet"));
    let final_summary = out.join(format!("{name}.summary.json"));
    let final_item = out.join(format!("{name}.item.json"));
    let mut temps = TempFiles::new();
    let part_classes = temps.track(partial_name(&final_classes));
    temps.track(aux_path(&part_classes));
    let staged = temps.track(out.join(format!(".{name}.labels.staged.tif")));
    temps.track(aux_path(&staged));
    let part_windows = temps.track(partial_name(&final_windows));
    let (labels, rows) = labels(&parts, (width, height), classes.len())?;
    let mut sink = RasterSink::create_part(
        &staged,
        (width, height),
        &gt,
        &job.grid.srs_wkt,
        RasterKind::Classes,
        classes,
    )?;
    sink.write_rows(0, height, &labels)?;
    sink.finish_part()?;
    let whole = [Part::whole(staged.clone(), (width, height))];
    cog_from_parts(
        &whole,
        (width, height),
        &gt,
        &job.grid.srs_wkt,
        RasterKind::Classes,
        classes,
        &part_classes,
    )?;
    write_windows(&part_windows, &rows, classes, &gt, &job.grid.projjson)?;
    let mut per_class = vec![0_u64; classes.len()];
    for r in &rows {
        per_class[usize::from(r.class)] += 1;
    }
    let counts = Counts {
        pixels: (width * height) as u64,
        pixels_valid: rows.len() as u64,
        class_pixels: classes
            .iter()
            .map(|c| (c.name.clone(), per_class[usize::from(c.value)]))
            .collect(),
        ..Counts::default()
    };
    let outputs = Outputs {
        classes: Some(final_classes.clone()),
        probabilities: None,
        confidence: None,
        tiles: None,
        embeddings: None,
        table: Some(final_windows.clone()),
        values: None,
        summary: final_summary.clone(),
        stac_item: final_item.clone(),
        preview: Some(out.join(format!("{name}.preview.png"))),
        vectors: None,
    };
    let summary = RunSummary::assemble(job, ctx, records, outputs, counts, t_final);
    let mut moves = vec![
        (part_classes.clone(), final_classes.clone()),
        (part_windows, final_windows),
    ];
    moves.extend(crate::output::qgis::write_styles(
        &final_classes,
        None,
        None,
        None,
        classes,
        &mut temps,
    )?);
    if aux_path(&part_classes).exists() {
        moves.push((aux_path(&part_classes), aux_path(&final_classes)));
    }
    crate::pipeline::commit_outputs(job, out, &summary, moves, temps)?;
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_file(aux_path(&staged));
    Ok(summary)
}
