//! The predict pipeline: reader -> inference -> blend + writers, three threads joined by
//! bounded channels (the bounds are the back-pressure and the memory limit).

use crate::blend::{BandAccumulator, FinishedRows};
use crate::error::{Error, OutputError};
use crate::grid::{Tile, TileGrid};
use crate::model::Segmenter;
use crate::normalize::prepare_tile;
use crate::output::parquet::{TileRecord, write_tiles};
use crate::output::raster::{RasterKind, RasterSink, aux_path};
use crate::plan::PredictPlan;
use crate::scene::StripReader;
use crate::util::{TempFiles, partial_name};
use crossbeam_channel::bounded;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One tile travelling through the pipeline.
struct TileMsg {
    tile: Tile,
    /// Model input, then (after inference) class probabilities; empty when skipped.
    data: Vec<f32>,
    valid: Vec<bool>,
    inferred: bool,
}

/// Counts of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Counts {
    /// Tiles in the grid that touch the scene.
    pub tiles: usize,
    /// Tiles the model ran on.
    pub tiles_inferred: usize,
    /// Tiles without one valid pixel, not run.
    pub tiles_skipped: usize,
    /// Pixels in the scene grid.
    pub pixels: u64,
    /// Pixels with valid input.
    pub pixels_valid: u64,
    /// Pixels per class name.
    pub class_pixels: BTreeMap<String, u64>,
    /// Polygons per class (with `--vectors`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polygons: Option<crate::output::vectors::PolygonStats>,
}

/// Seconds spent per stage (summed within each stage's thread) and in all.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Timings {
    /// Reading and normalising tiles.
    pub read: f64,
    /// ONNX Runtime.
    pub inference: f64,
    /// Blending and writing the staging rasters.
    pub blend_write: f64,
    /// COG conversion, Parquet and summary.
    pub finalize: f64,
    /// Wall time of the whole run.
    pub total: f64,
}

/// Paths of a run's outputs.
#[derive(Debug, Clone, Serialize)]
pub struct Outputs {
    /// Class map COG.
    pub classes: PathBuf,
    /// Probabilities COG, with `--probabilities`.
    pub probabilities: Option<PathBuf>,
    /// Tiles GeoParquet.
    pub tiles: PathBuf,
    /// This summary.
    pub summary: PathBuf,
    /// The run's STAC Item (also linked from `catalog.json` in the output folder).
    pub stac_item: PathBuf,
    /// Polygons, with `--vectors`.
    pub vectors: Option<PathBuf>,
}

/// The run summary: printed with `--json` and saved beside the outputs.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// eoinfer's version.
    pub eoinfer_version: String,
    /// GDAL's version.
    pub gdal_version: String,
    /// ONNX Runtime library and build.
    pub onnxruntime: BTreeMap<String, String>,
    /// The model.
    pub model: BTreeMap<String, String>,
    /// The scene grid and its bands.
    pub scene: crate::scene::Stack,
    /// Parameters of the run.
    pub parameters: serde_json::Value,
    /// Counts.
    pub counts: Counts,
    /// Timings in seconds.
    pub timings_s: Timings,
    /// Output files.
    pub outputs: Outputs,
    /// Warnings raised during the run.
    pub warnings: Vec<String>,
}

fn join<T>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, Error>>,
    stage: &'static str,
) -> Result<T, Error> {
    h.join().map_err(|_| Error::Pipeline(stage))?
}

/// The plan's tile grid and the tiles of it that touch the scene, in row-major order: the
/// tiles `predict` runs and `bench-model` times.
fn scene_tiles(plan: &PredictPlan) -> Result<(TileGrid, Vec<Tile>), Error> {
    let (width, height) = (plan.stack.width, plan.stack.height);
    let grid = TileGrid::new(width, height, plan.model.tile_size, plan.tiling)?;
    let tiles = grid
        .tiles()
        .filter(|t| t.window.clip(width, height).is_some())
        .collect();
    Ok((grid, tiles))
}

/// Runs `predict` as planned with an opened model; writes every output under a temporary
/// name and renames them all once everything succeeded.
pub fn predict(plan: &PredictPlan, mut model: Segmenter) -> Result<RunSummary, Error> {
    let t0 = Instant::now();
    let stack = &plan.stack;
    crate::size_block_cache(stack);
    let (width, height) = (stack.width, stack.height);
    let spec = &plan.model;
    let (grid, tiles) = scene_tiles(plan)?;
    let tile = spec.tile_size;
    let plane = tile * tile;
    let n_bands = spec.bands.len();
    let n_classes = spec.classes.len();
    let batch = plan.batch_size.max(1);

    let out = &plan.out_dir;
    let final_classes = out.join(format!("{}.classes.tif", plan.name));
    let final_probs = out.join(format!("{}.probs.tif", plan.name));
    let final_tiles = out.join(format!("{}.tiles.parquet", plan.name));
    let final_summary = out.join(format!("{}.summary.json", plan.name));
    let final_item = out.join(format!("{}.item.json", plan.name));
    let final_vectors = plan
        .vectors
        .map(|v| out.join(format!("{}.polygons.{}", plan.name, v.format.extension())));
    let mut temps = TempFiles::new();
    let staging_classes = temps.track(out.join(format!(".{}.classes.staging.tif", plan.name)));
    temps.track(aux_path(&staging_classes));
    let staging_probs = temps.track(out.join(format!(".{}.probs.staging.tif", plan.name)));
    temps.track(aux_path(&staging_probs));
    let part_classes = temps.track(partial_name(&final_classes));
    temps.track(aux_path(&part_classes));
    let part_probs = temps.track(partial_name(&final_probs));
    temps.track(aux_path(&part_probs));
    let part_tiles = temps.track(partial_name(&final_tiles));
    let part_summary = temps.track(partial_name(&final_summary));

    let mut classes_sink =
        RasterSink::create(&staging_classes, stack, RasterKind::Classes, &spec.classes)?;
    let mut probs_sink = if plan.probabilities {
        Some(RasterSink::create(
            &staging_probs,
            stack,
            RasterKind::Probabilities,
            &spec.classes,
        )?)
    } else {
        None
    };

    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(tiles.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} tiles {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    let mut records: Vec<TileRecord> = tiles
        .iter()
        .map(|t| TileRecord {
            id: t.id,
            row: t.row,
            col: t.col,
            window: t.window.clip(width, height).unwrap_or(t.window),
            inferred: false,
            counts: vec![0; n_classes],
            valid: 0,
        })
        .collect();
    let mut counts = Counts {
        tiles: tiles.len(),
        pixels: (width * height) as u64,
        ..Counts::default()
    };
    let mut class_totals = vec![0_u64; n_classes];

    let (tx_read, rx_read) = bounded::<TileMsg>(batch * 2);
    let (tx_inf, rx_inf) = bounded::<TileMsg>(batch * 2);
    let (read_time, infer_time, write_time) =
        std::thread::scope(|s| -> Result<(Duration, Duration, Duration), Error> {
            let tiles_ref = &tiles;
            let reader = s.spawn(move || -> Result<Duration, Error> {
                let mut reader = StripReader::open(stack, tile)?;
                let rescale: Vec<_> = stack.bands.iter().map(|b| b.rescale).collect();
                let mut busy = Duration::ZERO;
                for &t in tiles_ref {
                    let start = Instant::now();
                    let mut data = vec![0.0_f32; n_bands * plane];
                    let mut valid = vec![false; plane];
                    reader.read(t.window, &mut data)?;
                    let n_valid = prepare_tile(&mut data, &mut valid, &rescale, &spec.scaling);
                    let msg = if n_valid == 0 {
                        TileMsg {
                            tile: t,
                            data: Vec::new(),
                            valid,
                            inferred: false,
                        }
                    } else {
                        TileMsg {
                            tile: t,
                            data,
                            valid,
                            inferred: true,
                        }
                    };
                    busy += start.elapsed();
                    if tx_read.send(msg).is_err() {
                        break;
                    }
                }
                Ok(busy)
            });
            let infer = s.spawn(move || -> Result<Duration, Error> {
                let mut busy = Duration::ZERO;
                let mut pending: Vec<TileMsg> = Vec::with_capacity(batch * 2);
                let mut input = Vec::with_capacity(batch * n_bands * plane);
                let mut run = |pending: &mut Vec<TileMsg>| -> Result<bool, Error> {
                    let start = Instant::now();
                    input.clear();
                    let idx: Vec<usize> = (0..pending.len())
                        .filter(|&i| pending[i].inferred)
                        .collect();
                    if !idx.is_empty() {
                        for &i in &idx {
                            input.extend_from_slice(&pending[i].data);
                        }
                        let probs = model.run(&input, idx.len())?;
                        for (k, &i) in idx.iter().enumerate() {
                            pending[i].data =
                                probs[k * n_classes * plane..(k + 1) * n_classes * plane].to_vec();
                        }
                    }
                    busy += start.elapsed();
                    for m in pending.drain(..) {
                        if tx_inf.send(m).is_err() {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                };
                for msg in &rx_read {
                    pending.push(msg);
                    if pending.iter().filter(|m| m.inferred).count() == batch && !run(&mut pending)?
                    {
                        return Ok(busy);
                    }
                }
                run(&mut pending)?;
                Ok(busy)
            });

            // Blend and write on this thread.
            let blend = (|| -> Result<Duration, Error> {
                let weights = grid.weights();
                let mut acc =
                    BandAccumulator::new(width, height, n_classes, tile, plan.probabilities);
                let mut busy = Duration::ZERO;
                let mut row: Option<usize> = None;
                let mut next_record = 0;
                let mut write =
                    |f: FinishedRows, records: &mut Vec<TileRecord>| -> Result<(), Error> {
                        classes_sink.write_rows(f.y, f.rows, &f.classes)?;
                        if let Some(p) = probs_sink.as_mut() {
                            p.write_rows(f.y, f.rows, &f.probs)?;
                        }
                        for &c in &f.classes {
                            if usize::from(c) < n_classes {
                                class_totals[usize::from(c)] += 1;
                            }
                        }
                        crate::output::parquet::count_rows(records, &f, width);
                        Ok(())
                    };
                for msg in &rx_inf {
                    let start = Instant::now();
                    if let Some(r) = row.filter(|&r| r != msg.tile.row) {
                        if let Some(f) = acc.flush_until(grid.rows_final_after(r)) {
                            write(f, &mut records)?;
                        }
                    }
                    row = Some(msg.tile.row);
                    while records[next_record].id != msg.tile.id {
                        next_record += 1;
                    }
                    records[next_record].inferred = msg.inferred;
                    if msg.inferred {
                        acc.add(msg.tile.window, &msg.data, &weights, &msg.valid);
                    }
                    progress.inc(1);
                    busy += start.elapsed();
                }
                let start = Instant::now();
                if let Some(f) = acc.flush_until(height) {
                    write(f, &mut records)?;
                }
                Ok(busy + start.elapsed())
            })();
            // On a blend error, dropping the receiver stops the upstream stages.
            drop(rx_inf);
            let infer_time = join(infer, "inference");
            let read_time = join(reader, "reader");
            let read_time = read_time?;
            let infer_time = infer_time?;
            let write_time = blend?;
            Ok((read_time, infer_time, write_time))
        })?;
    progress.finish_and_clear();

    let t_final = Instant::now();
    counts.tiles_inferred = records.iter().filter(|r| r.inferred).count();
    counts.tiles_skipped = counts.tiles - counts.tiles_inferred;
    counts.pixels_valid = class_totals.iter().sum();
    counts.class_pixels = spec
        .classes
        .iter()
        .map(|c| (c.name.clone(), class_totals[usize::from(c.value)]))
        .collect();
    let mut warnings = plan.warnings.clone();
    if counts.pixels_valid == 0 {
        let w = format!(
            "scene {} has no valid pixel (all nodata); the outputs are all nodata",
            stack.scene
        );
        tracing::warn!("{w}");
        warnings.push(w);
    }

    classes_sink.finish_cog(&part_classes)?;
    if let Some(p) = probs_sink {
        p.finish_cog(&part_probs)?;
    }
    let mut vector_move = None;
    let mut polygon_stats = None;
    if let (Some(opts), Some(fin)) = (plan.vectors, &final_vectors) {
        let staged = temps.track(out.join(format!(
            ".{}.polygons.staged.{}",
            plan.name,
            opts.format.extension()
        )));
        polygon_stats = Some(crate::output::vectors::polygonize(
            &part_classes,
            &staged,
            &plan.name,
            &opts,
        )?);
        vector_move = Some((staged, fin.clone()));
    }
    counts.polygons = polygon_stats;
    let class_names: Vec<String> = spec.classes.iter().map(|c| c.name.clone()).collect();
    write_tiles(
        &part_tiles,
        &records,
        &class_names,
        &stack.geo_transform,
        &stack.projjson,
    )?;

    let outputs = Outputs {
        classes: final_classes.clone(),
        probabilities: plan.probabilities.then(|| final_probs.clone()),
        tiles: final_tiles.clone(),
        summary: final_summary.clone(),
        stac_item: final_item.clone(),
        vectors: final_vectors.clone(),
    };
    let mut summary = RunSummary {
        eoinfer_version: env!("CARGO_PKG_VERSION").to_string(),
        gdal_version: gdal::version::version_info("RELEASE_NAME"),
        onnxruntime: BTreeMap::from([
            ("library".to_string(), plan.ort_lib.display().to_string()),
            ("build".to_string(), crate::model::runtime::runtime_info()),
        ]),
        model: BTreeMap::from([
            ("manifest".to_string(), spec.manifest.display().to_string()),
            ("id".to_string(), spec.id.clone()),
            ("onnx".to_string(), spec.onnx.display().to_string()),
            ("sha256".to_string(), plan.onnx_sha256.clone()),
        ]),
        scene: stack.clone(),
        parameters: serde_json::json!({
            "tiling": plan.tiling,
            "tile_size": tile,
            "tta": plan.tta,
            "batch_size": batch,
            "threads": plan.threads,
            "device": plan.device.to_string(),
            "probabilities": plan.probabilities,
            "resolution": stack.resolution,
            "vectors": plan.vectors,
        }),
        counts,
        timings_s: Timings {
            read: read_time.as_secs_f64(),
            inference: infer_time.as_secs_f64(),
            blend_write: write_time.as_secs_f64(),
            finalize: 0.0,
            total: 0.0,
        },
        outputs,
        warnings,
    };
    summary.timings_s.finalize = t_final.elapsed().as_secs_f64();
    summary.timings_s.total = t0.elapsed().as_secs_f64();
    let mut text = serde_json::to_string_pretty(&summary).map_err(|e| OutputError::Io {
        path: final_summary.clone(),
        source: e.into(),
    })?;
    text.push('\n');
    std::fs::write(&part_summary, text).map_err(|source| OutputError::Io {
        path: part_summary.clone(),
        source,
    })?;

    // Everything is written: move it into place.
    let mut moves = vec![
        (part_classes.clone(), final_classes.clone()),
        (part_tiles, final_tiles),
        (part_summary, final_summary),
    ];
    moves.extend(crate::output::qgis::write_styles(
        &final_classes,
        plan.probabilities.then_some(final_probs.as_path()),
        final_vectors.as_deref(),
        &spec.classes,
        &mut temps,
    )?);
    if plan.qgis_project {
        use crate::output::qgis::ProjectLayer;
        let mut layers = Vec::new();
        if let Some(v) = &final_vectors {
            layers.push(ProjectLayer::Polygons(v.clone()));
        }
        layers.push(ProjectLayer::Classes(final_classes.clone()));
        if plan.probabilities {
            layers.push(ProjectLayer::Probabilities(final_probs.clone()));
        }
        let text = crate::output::qgis::project(
            &plan.name,
            &layers,
            &spec.classes,
            &stack.srs_wkt,
            stack.epsg,
        );
        moves.push(crate::output::qgis::stage_text(
            &out.join(format!("{}.qgs", plan.name)),
            &text,
            &mut temps,
        )?);
    }
    moves.push(write_item(plan, &final_item, &mut temps)?);
    moves.extend(vector_move);
    if aux_path(&part_classes).exists() {
        moves.push((aux_path(&part_classes), aux_path(&final_classes)));
    }
    if plan.probabilities {
        moves.push((part_probs.clone(), final_probs.clone()));
        if aux_path(&part_probs).exists() {
            moves.push((aux_path(&part_probs), aux_path(&final_probs)));
        }
    } else {
        // A stale probabilities file from an earlier run must not pass for this run's.
        let _ = std::fs::remove_file(&final_probs);
        let _ = std::fs::remove_file(aux_path(&final_probs));
        let _ = std::fs::remove_file(crate::output::qgis::style_path(&final_probs));
    }
    for (from, to) in moves {
        rename(&from, &to)?;
    }
    temps.disarm();
    crate::output::stac::update_catalog(
        out,
        &format!("{}.item.json", plan.name),
        &format!("{} on {}", spec.id, plan.name),
    )?;
    Ok(summary)
}

/// The run's STAC Item, written under a temporary name; returns the rename.
fn write_item(
    plan: &PredictPlan,
    final_item: &Path,
    temps: &mut TempFiles,
) -> Result<(PathBuf, PathBuf), Error> {
    use crate::output::stac::{Asset, COG, JSON, PARQUET, QML, RunItem, item_json};
    let stack = &plan.stack;
    let out = &plan.out_dir;
    let name = &plan.name;
    let date = crate::scene::timeseries::parse_date(&stack.name)
        .or_else(|| crate::scene::timeseries::parse_date(&stack.scene))
        .map(|d| d.to_string());
    let mut assets = vec![
        Asset {
            key: "classes",
            path: out.join(format!("{name}.classes.tif")),
            media_type: COG,
            roles: &["data"],
            title: format!("class map ({})", plan.model.id),
        },
        Asset {
            key: "classes_style",
            path: out.join(format!("{name}.classes.qml")),
            media_type: QML,
            roles: &["style"],
            title: "QGIS style of the class map".into(),
        },
        Asset {
            key: "tiles",
            path: out.join(format!("{name}.tiles.parquet")),
            media_type: PARQUET,
            roles: &["data", "metadata"],
            title: "tiles with class counts (GeoParquet)".into(),
        },
        Asset {
            key: "summary",
            path: out.join(format!("{name}.summary.json")),
            media_type: JSON,
            roles: &["metadata"],
            title: "run summary".into(),
        },
    ];
    if let Some(v) = plan.vectors {
        use crate::output::vectors::VectorFormat;
        assets.push(Asset {
            key: "polygons",
            path: out.join(format!("{name}.polygons.{}", v.format.extension())),
            media_type: match v.format {
                VectorFormat::Gpkg => "application/geopackage+sqlite3",
                VectorFormat::Parquet => PARQUET,
                VectorFormat::Fgb => "application/vnd.flatgeobuf",
            },
            roles: &["data"],
            title: "class polygons (class, class_name, area_m2)".into(),
        });
        assets.push(Asset {
            key: "polygons_style",
            path: out.join(format!("{name}.polygons.qml")),
            media_type: QML,
            roles: &["style"],
            title: "QGIS style of the polygons".into(),
        });
    }
    if plan.qgis_project {
        assets.push(Asset {
            key: "qgis_project",
            path: out.join(format!("{name}.qgs")),
            media_type: "application/x-qgis",
            roles: &["metadata", "visual"],
            title: "QGIS project of the run".into(),
        });
    }
    if plan.probabilities {
        assets.push(Asset {
            key: "probabilities",
            path: out.join(format!("{name}.probs.tif")),
            media_type: COG,
            roles: &["data"],
            title: "class probabilities (uint8, scale 1/255)".into(),
        });
        assets.push(Asset {
            key: "probabilities_style",
            path: out.join(format!("{name}.probs.qml")),
            media_type: QML,
            roles: &["style"],
            title: "QGIS style of the probabilities".into(),
        });
    }
    let item = RunItem {
        id: name,
        start: date.clone(),
        end: date.clone(),
        width: stack.width,
        height: stack.height,
        geo_transform: stack.geo_transform,
        srs_wkt: &stack.srs_wkt,
        epsg: stack.epsg,
        assets,
        model_manifest: &plan.model.manifest,
        model_id: &plan.model.id,
        onnx_sha256: &plan.onnx_sha256,
        inputs: vec![(stack.scene.clone(), date)],
    };
    let part = temps.track(partial_name(final_item));
    let doc = item_json(&item, final_item, &crate::util::now_rfc3339())?;
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    std::fs::write(&part, text).map_err(|source| OutputError::Io {
        path: part.clone(),
        source,
    })?;
    Ok((part, final_item.to_path_buf()))
}

fn rename(from: &Path, to: &Path) -> Result<(), OutputError> {
    std::fs::rename(from, to).map_err(|source| OutputError::Io {
        path: to.to_path_buf(),
        source,
    })
}

/// What `eoinfer bench-model` measured: ONNX Runtime alone on the tiles `predict` runs.
#[derive(Debug, Clone, Serialize)]
pub struct LimitReport {
    /// Tiles in the grid that touch the scene.
    pub tiles: usize,
    /// Tiles with valid pixels (the ones the model runs on).
    pub tiles_inferred: usize,
    /// Model runs per tile (test-time augmentation).
    pub runs_per_tile: usize,
    /// Tiles per batch.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Seconds spent reading and normalising the tiles into memory (not part of the limit).
    pub read_s: f64,
    /// Seconds inside ONNX Runtime's `run` for all batches: the limit.
    pub inference_s: f64,
    /// Tiles per second at the limit.
    pub tiles_per_s: f64,
}

/// Reads every tile `predict` would run into memory, batched exactly as `predict` batches
/// them, then times ONNX Runtime alone over all batches.
pub fn model_only(plan: &PredictPlan, mut model: Segmenter) -> Result<LimitReport, Error> {
    let stack = &plan.stack;
    let spec = &plan.model;
    let (_, tiles) = scene_tiles(plan)?;
    let plane = spec.tile_size * spec.tile_size;
    let per_tile = spec.bands.len() * plane;
    let batch = plan.batch_size.max(1);

    crate::size_block_cache(stack);
    let t_read = Instant::now();
    let mut reader = StripReader::open(stack, spec.tile_size)?;
    let rescale: Vec<_> = stack.bands.iter().map(|b| b.rescale).collect();
    let mut batches: Vec<Vec<f32>> = Vec::new();
    let mut current: Vec<f32> = Vec::with_capacity(batch * per_tile);
    let mut data = vec![0.0_f32; per_tile];
    let mut valid = vec![false; plane];
    let mut inferred = 0;
    for t in &tiles {
        data.fill(0.0);
        reader.read(t.window, &mut data)?;
        if prepare_tile(&mut data, &mut valid, &rescale, &spec.scaling) == 0 {
            continue;
        }
        inferred += 1;
        current.extend_from_slice(&data);
        if current.len() == batch * per_tile {
            batches.push(std::mem::replace(
                &mut current,
                Vec::with_capacity(batch * per_tile),
            ));
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    drop(reader);
    let read_s = t_read.elapsed().as_secs_f64();

    let runs = plan.tta.variants().len();
    let start = Instant::now();
    for b in &batches {
        for _ in 0..runs {
            model.run_raw(b, b.len() / per_tile)?;
        }
    }
    let inference_s = start.elapsed().as_secs_f64();
    Ok(LimitReport {
        tiles: tiles.len(),
        tiles_inferred: inferred,
        runs_per_tile: runs,
        batch_size: batch,
        threads: plan.threads,
        read_s,
        inference_s,
        tiles_per_s: inferred as f64 / inference_s.max(1e-9),
    })
}
