//! `predict --events`: a classification model labels one window centred on each event polygon
//! instead of tiling the grid. An event model (pre/post image groups in its temporal
//! contract, such as Ai2's forest-loss-driver model) takes each event's images from the
//! series by the event's date: per group, the images within the group's days around the
//! event, nearest the event first, then in date order. One row per event goes to
//! `<name>.events.parquet` (GeoParquet: the event's polygon, the dates used, the label and
//! every class's score) and the run's summary to `<name>.events.json`; both are written under
//! temporary names and renamed when complete.

use crate::error::{Error, OutputError, SceneError};
use crate::grid::Window;
use crate::output::zonal::Attr;
use crate::plan::{EventInputs, PredictArgs};
use crate::scene::timeseries::Date;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One event: its polygon, date and window.
#[derive(Debug)]
struct Event {
    /// Its place in the file (0-based).
    index: usize,
    date: Option<Date>,
    wkb: Vec<u8>,
    geometry_type: String,
    bbox: [f64; 4],
    window: Window,
}

/// One labelled event.
#[derive(Debug, Serialize)]
pub struct EventRow {
    /// Its place in the events file (0-based).
    pub event: usize,
    /// The event's date (event models).
    pub event_date: Option<String>,
    /// Per image group (or `all`), the dates of its images.
    pub dates: BTreeMap<String, Vec<String>>,
    /// The window's top-left pixel on the grid.
    pub window_x: i64,
    /// See `window_x`.
    pub window_y: i64,
    /// Share of the window's pixel-steps with every band.
    pub valid_share: f64,
    /// The label.
    pub class: usize,
    /// Its name.
    pub class_name: String,
    /// Every class's probability.
    pub scores: Vec<f32>,
    #[serde(skip)]
    wkb: Vec<u8>,
}

/// What `predict --events` did.
#[derive(Debug, Serialize)]
pub struct EventsSummary {
    /// The events file.
    pub events: PathBuf,
    /// The model.
    pub model: BTreeMap<String, String>,
    /// The window edge in pixels.
    pub window_size: usize,
    /// The series' time steps.
    pub time_steps: Vec<serde_json::Value>,
    /// The GeoParquet written.
    pub output: PathBuf,
    /// One entry per labelled event.
    pub labelled: Vec<EventRow>,
    /// Events left out (no valid pixel) and relaxed contracts.
    pub warnings: Vec<String>,
    /// Seconds in the model, and in all.
    pub model_seconds: f64,
    /// See `model_seconds`.
    pub total_seconds: f64,
}

fn refuse(path: &Path, what: String) -> Error {
    SceneError::Events {
        path: path.to_path_buf(),
        what,
    }
    .into()
}

/// The events of `path` on the grid of `inputs` with their windows (`size` px, centred on
/// each polygon's centroid, inside the grid) and dates.
fn read_events(
    path: &Path,
    inputs: &EventInputs,
    size: usize,
    default_date: Option<Date>,
) -> Result<Vec<Event>, Error> {
    let stack = &inputs.stack;
    let srs = gdal::spatial_ref::SpatialRef::from_wkt(&stack.srs_wkt)
        .map_err(|e| refuse(path, format!("the scenes' CRS: {e}")))?;
    let (names, attrs, geoms) = crate::output::zonal::read_polygons(path, &srs)?;
    let date_col = names.iter().position(|n| n == "event_date");
    let gt = stack.geo_transform;
    let mut events = Vec::new();
    for (i, g) in geoms.iter().enumerate() {
        let date = match date_col.map(|c| &attrs[i][c]) {
            Some(Attr::Text(Some(t))) => Some(
                crate::scene::timeseries::parse_date(&t.replace('/', "-")).ok_or_else(|| {
                    refuse(
                        path,
                        format!("event {i}: event_date {t:?} is not a date (YYYY-MM-DD)"),
                    )
                })?,
            ),
            _ => default_date,
        };
        let no_centroid = || refuse(path, format!("event {i}: its centroid cannot be computed"));
        let c = gdal::vector::Geometry::empty(gdal_sys::OGRwkbGeometryType::wkbPoint)
            .map_err(|_| no_centroid())?;
        // SAFETY: both handles are valid geometries owned here; OGR writes the point into `c`.
        let rv = unsafe { gdal_sys::OGR_G_Centroid(g.c_geometry(), c.c_geometry()) };
        if rv != gdal_sys::OGRErr::OGRERR_NONE as i32 {
            return Err(no_centroid());
        }
        let (cx, cy, _) = c.get_point(0);
        let col = (cx - gt[0]) / gt[1];
        let row = (cy - gt[3]) / gt[5];
        let half = size as f64 / 2.0;
        let window = Window {
            x: (col - half).round() as i64,
            y: (row - half).round() as i64,
            width: size,
            height: size,
        };
        if window.x < 0
            || window.y < 0
            || window.x as usize + size > stack.width
            || window.y as usize + size > stack.height
        {
            return Err(refuse(
                path,
                format!(
                    "event {i}: its {size} x {size} px window around the centroid (pixel {col:.1}, {row:.1}) is not inside the scenes' grid ({} x {} px); give scenes that cover it or leave the event out",
                    stack.width, stack.height
                ),
            ));
        }
        let env = g.envelope();
        events.push(Event {
            index: i,
            date,
            wkb: g
                .wkb()
                .map_err(|e| refuse(path, format!("event {i}: {e}")))?,
            geometry_type: g.geometry_name(),
            bbox: [env.MinX, env.MinY, env.MaxX, env.MaxY],
            window,
        });
    }
    if events.is_empty() {
        return Err(refuse(path, "has no event polygons".into()));
    }
    Ok(events)
}

/// Per event, the steps it uses (per group) and the warnings of relaxed contracts.
fn select_steps(
    path: &Path,
    inputs: &EventInputs,
    events: &[Event],
    relax: bool,
) -> Result<(Picked, Vec<String>), Error> {
    let enc = inputs.model.encoder.as_ref().ok_or_else(|| {
        refuse(
            &inputs.model.manifest,
            "not a time-series classification model".into(),
        )
    })?;
    let dates: Vec<Date> = inputs.series.iter().map(|s| s.date).collect();
    let contract_err = |what: String| -> Error {
        SceneError::TemporalContract {
            model: inputs.model.manifest.clone(),
            what,
        }
        .into()
    };
    let mut warnings = Vec::new();
    let Some(contract) = enc.temporal.as_ref().filter(|t| !t.groups.is_empty()) else {
        // Every event takes the whole series.
        if let Some(c) = &enc.temporal {
            warnings.extend(c.check_series(&dates, relax).map_err(contract_err)?);
        }
        // In the model's order, as TileSource feeds a grid run.
        let mut all: Vec<usize> = (0..dates.len()).collect();
        if enc.newest_first() {
            all.reverse();
        }
        return Ok((vec![vec![all]; events.len()], warnings));
    };
    let mut picked = Vec::new();
    for e in events {
        let date = e.date.ok_or_else(|| {
            refuse(
                path,
                format!(
                    "event {}: no date; the model takes {}: give each event an `event_date` attribute (YYYY-MM-DD) or --event-date",
                    e.index,
                    contract.describe()
                ),
            )
        })?;
        let (groups, w) = contract
            .select_event(&dates, date, relax)
            .map_err(|what| contract_err(format!("event {}: {what}", e.index)))?;
        warnings.extend(w.into_iter().map(|w| format!("event {}: {w}", e.index)));
        picked.push(groups);
    }
    Ok((picked, warnings))
}

/// Per event, per image group, the indices of its steps in the series.
type Picked = Vec<Vec<Vec<usize>>>;

/// The row of one labelled event from its scores.
fn row_of(
    e: &Event,
    scores: Vec<f32>,
    share: f64,
    dates: BTreeMap<String, Vec<String>>,
    classes: &[crate::model::ClassInfo],
) -> EventRow {
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    EventRow {
        event: e.index,
        event_date: e.date.map(|d| d.to_string()),
        dates,
        window_x: e.window.x,
        window_y: e.window.y,
        valid_share: share,
        class: best,
        class_name: classes
            .get(best)
            .map_or_else(|| format!("class {best}"), |c| c.name.clone()),
        scores,
        wkb: e.wkb.clone(),
    }
}

/// Runs the model on every event's window (events with the same images batched together);
/// returns the rows, the time in the model and the events left out.
fn label(
    args: &PredictArgs,
    inputs: &EventInputs,
    events: &[Event],
    picked: &Picked,
) -> Result<(Vec<EventRow>, std::time::Duration, Vec<String>), Error> {
    let model = &inputs.model;
    let enc = model
        .encoder
        .as_ref()
        .ok_or_else(|| refuse(&model.manifest, "not an encoder".into()))?;
    let group_names: Vec<String> = enc.temporal.as_ref().map_or_else(Vec::new, |t| {
        t.groups.iter().map(|g| g.name.clone()).collect()
    });
    let names = if group_names.is_empty() {
        vec!["all".to_string()]
    } else {
        group_names
    };
    let env = crate::model::runtime::init_runtime(&inputs.ort_lib)?;
    let mut encoder =
        crate::model::Encoder::load(&env, model, inputs.threads, args.device, Vec::new())?
            .with_io_binding(
                args.device,
                args.io_binding || args.device != crate::model::Device::Cpu,
            )?;
    let size = events.first().map_or(model.tile_size, |e| e.window.width);
    let mut source = crate::source::WindowSource::open(&inputs.series, enc, size)?;
    let mut by_steps: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for (k, groups) in picked.iter().enumerate() {
        by_steps.entry(groups.concat()).or_default().push(k);
    }
    let (mut rows, mut left_out) = (Vec::new(), Vec::new());
    let mut model_time = std::time::Duration::ZERO;
    for (steps, members) in &by_steps {
        encoder.set_timestamps(
            steps
                .iter()
                .flat_map(|&i| {
                    let d = inputs.series[i].date;
                    [d.day as i32, d.month as i32 - 1, d.year]
                })
                .collect(),
        );
        for chunk in members.chunks(args.batch_size.max(1)) {
            let (mut s2, mut s1, mut run_for) = (Vec::new(), Vec::new(), Vec::new());
            for &k in chunk {
                let (tile, share) = source.read(steps, events[k].window)?;
                if tile.inferred {
                    s2.extend_from_slice(&tile.data);
                    s1.extend_from_slice(&tile.s1);
                    run_for.push((k, share));
                } else {
                    left_out.push(format!(
                        "event {}: its window has no valid pixel on the images it takes; left out",
                        events[k].index
                    ));
                }
            }
            if run_for.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            let out = encoder.run(&s2, &s1, run_for.len())?;
            model_time += t0.elapsed();
            let per = out.len() / run_for.len();
            for (j, &(k, share)) in run_for.iter().enumerate() {
                let scores = out[j * per..(j + 1) * per].to_vec();
                if let Some(bad) = scores.iter().find(|v| !v.is_finite()) {
                    return Err(crate::error::ModelError::NonFinite {
                        path: model.onnx.clone(),
                        tile: format!("event {}", events[k].index),
                        value: bad.to_string(),
                    }
                    .into());
                }
                let dates = names
                    .iter()
                    .zip(&picked[k])
                    .map(|(name, g)| {
                        let d = g.iter().map(|&i| inputs.series[i].date.to_string());
                        (name.clone(), d.collect())
                    })
                    .collect();
                rows.push(row_of(&events[k], scores, share, dates, &model.classes));
            }
        }
    }
    rows.sort_by_key(|r| r.event);
    Ok((rows, model_time, left_out))
}

/// Runs `predict --events`.
pub fn run(args: &PredictArgs) -> Result<EventsSummary, Error> {
    let started = Instant::now();
    let path = args
        .events
        .clone()
        .ok_or_else(|| refuse(Path::new("--events"), "no events file".into()))?;
    let inputs = crate::plan::open_events(args)?;
    let model = &inputs.model;
    let enc = model
        .encoder
        .as_ref()
        .ok_or_else(|| refuse(&model.manifest, "not an encoder".into()))?;
    let size = enc.window_size.unwrap_or(model.tile_size);
    let events = read_events(&path, &inputs, size, args.event_date)?;
    let (picked, relaxed) = select_steps(&path, &inputs, &events, args.relax_temporal_contract)?;
    let mut warnings = inputs.warnings.clone();
    for w in &relaxed {
        tracing::warn!("{w}");
    }
    warnings.extend(relaxed);
    let (rows, model_time, left_out) = label(args, &inputs, &events, &picked)?;
    warnings.extend(left_out);
    std::fs::create_dir_all(&args.out).map_err(|source| OutputError::Io {
        path: args.out.clone(),
        source,
    })?;
    let name = &inputs.name;
    let output = args.out.join(format!("{name}.events.parquet"));
    let mut temps = crate::util::TempFiles::new();
    let part = temps.track(crate::util::partial_name(&output));
    let groups: Vec<String> = enc.temporal.as_ref().map_or_else(Vec::new, |t| {
        t.groups.iter().map(|g| g.name.clone()).collect()
    });
    write_rows(
        &part,
        &rows,
        &model.classes,
        &groups,
        &inputs.stack,
        &events,
    )?;
    let summary = EventsSummary {
        events: path.clone(),
        model: model_info(model),
        window_size: size,
        time_steps: inputs
            .series
            .iter()
            .map(crate::scene::series::SeriesStep::describe)
            .collect(),
        output: output.clone(),
        labelled: rows,
        warnings,
        model_seconds: model_time.as_secs_f64(),
        total_seconds: started.elapsed().as_secs_f64(),
    };
    let summary_path = args.out.join(format!("{name}.events.json"));
    let summary_part = temps.track(crate::util::partial_name(&summary_path));
    std::fs::write(
        &summary_part,
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|source| OutputError::Io {
        path: summary_part.clone(),
        source,
    })?;
    temps.commit(vec![(part, output), (summary_part, summary_path)])?;
    Ok(summary)
}

/// The model as the summary names it, with its licence and temporal contract.
fn model_info(model: &crate::model::ModelSpec) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([
        ("manifest".to_string(), model.manifest.display().to_string()),
        ("id".to_string(), model.id.clone()),
        ("onnx".to_string(), model.onnx.display().to_string()),
    ]);
    for (k, v) in [
        ("license", model.license.clone()),
        ("attribution", model.attribution.clone()),
        (
            "temporal_contract",
            model
                .encoder
                .as_ref()
                .and_then(|e| e.temporal.as_ref())
                .map(crate::model::temporal::TemporalContract::describe),
        ),
    ] {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    m
}

/// GeoParquet's name of an OGR geometry type.
fn geoparquet_type(ogr: &str) -> &'static str {
    match ogr.to_ascii_uppercase().as_str() {
        "POINT" => "Point",
        "LINESTRING" => "LineString",
        "MULTIPOLYGON" => "MultiPolygon",
        "MULTIPOINT" => "MultiPoint",
        "MULTILINESTRING" => "MultiLineString",
        "GEOMETRYCOLLECTION" => "GeometryCollection",
        _ => "Polygon",
    }
}

/// The events GeoParquet.
fn write_rows(
    path: &Path,
    rows: &[EventRow],
    classes: &[crate::model::ClassInfo],
    groups: &[String],
    stack: &crate::scene::Stack,
    events: &[Event],
) -> Result<(), OutputError> {
    let projjson = gdal::spatial_ref::SpatialRef::from_wkt(&stack.srs_wkt)
        .ok()
        .and_then(|s| s.to_projjson().ok())
        .unwrap_or_default();
    let mut types: Vec<&str> = events
        .iter()
        .map(|e| geoparquet_type(&e.geometry_type))
        .collect();
    types.sort_unstable();
    types.dedup();
    let bbox = events.iter().fold(
        [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ],
        |b, e| {
            [
                b[0].min(e.bbox[0]),
                b[1].min(e.bbox[1]),
                b[2].max(e.bbox[2]),
                b[3].max(e.bbox[3]),
            ]
        },
    );
    let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let date_cols: Vec<String> = if groups.is_empty() {
        vec!["all".into()]
    } else {
        groups.to_vec()
    };
    let mut schema = String::from(
        "message events {\n required int64 event;\n optional binary event_date (UTF8);\n",
    );
    for g in &date_cols {
        let _ = writeln!(
            schema,
            " required binary {}_dates (UTF8);",
            crate::output::parquet::column_name(g)
        );
    }
    schema.push_str(
        " required int32 window_x;\n required int32 window_y;\n required double valid_share;\n",
    );
    schema.push_str(&crate::output::parquet::class_schema(classes));
    schema.push_str(" required binary geometry;\n}\n");
    let mut writer = crate::output::parquet::geoparquet_writer_of(
        path,
        &schema,
        &projjson,
        (!rows.is_empty()).then_some(bbox),
        &types,
    )?;
    let mut rg = writer.next_row_group().map_err(|e| perr(&e))?;
    macro_rules! column {
        ($ty:ty, $vals:expr) => {
            crate::output::parquet::write_column::<$ty>(&mut rg, $vals, path)?
        };
    }
    column!(
        Int64Type,
        &rows.iter().map(|r| r.event as i64).collect::<Vec<_>>()
    );
    // The optional event date: definition levels mark the rows that have one.
    {
        let defs: Vec<i16> = rows
            .iter()
            .map(|r| i16::from(r.event_date.is_some()))
            .collect();
        let vals: Vec<ByteArray> = rows
            .iter()
            .filter_map(|r| r.event_date.as_deref().map(ByteArray::from))
            .collect();
        let mut col = rg
            .next_column()
            .map_err(|e| perr(&e))?
            .ok_or_else(|| perr(&"no event_date column"))?;
        col.typed::<ByteArrayType>()
            .write_batch(&vals, Some(&defs), None)
            .map_err(|e| perr(&e))?;
        col.close().map_err(|e| perr(&e))?;
    }
    for g in &date_cols {
        let vals: Vec<ByteArray> = rows
            .iter()
            .map(|r| {
                ByteArray::from(
                    r.dates
                        .get(g)
                        .map_or(String::new(), |d| d.join(","))
                        .as_str(),
                )
            })
            .collect();
        column!(ByteArrayType, &vals);
    }
    column!(
        Int32Type,
        &rows.iter().map(|r| r.window_x as i32).collect::<Vec<_>>()
    );
    column!(
        Int32Type,
        &rows.iter().map(|r| r.window_y as i32).collect::<Vec<_>>()
    );
    column!(
        DoubleType,
        &rows.iter().map(|r| r.valid_share).collect::<Vec<_>>()
    );
    let labelled: Vec<(usize, &[f32])> = rows
        .iter()
        .map(|r| (r.class, r.scores.as_slice()))
        .collect();
    crate::output::parquet::write_class_columns(&mut rg, &labelled, classes, path)?;
    let wkbs: Vec<ByteArray> = rows
        .iter()
        .map(|r| ByteArray::from(r.wkb.clone()))
        .collect();
    column!(ByteArrayType, &wkbs);
    rg.close().map_err(|e| perr(&e))?;
    writer.close().map_err(|e| perr(&e))?;
    Ok(())
}
