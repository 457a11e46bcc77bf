//! The time steps of a time-series model's run: the `--scene` values expanded into dated
//! scenes, scenes of the same date mosaicked into one step, every step on one grid (the AOI's,
//! else the first date's), steps without a valid pixel left out with a warning.

use super::mosaic::{MosaicScene, mosaic_of};
use super::timeseries::{Date, SceneEntry, time_steps};
use super::{SceneOptions, Stack, StackRequest, open_stack_request};
use crate::aoi::Aoi;
use crate::error::{Error, SceneError};
use crate::model::ModelSpec;
use std::path::PathBuf;

/// One time step of a run.
#[derive(Debug, Clone)]
pub struct SeriesStep {
    /// Acquisition date.
    pub date: Date,
    /// Where the date came from.
    pub date_source: String,
    /// The scene (for several scenes of the date: their labels joined).
    pub label: String,
    /// The Sentinel-2 stack on the run's grid.
    pub stack: Stack,
    /// The Sentinel-1 stack, for models that take one.
    pub s1: Option<Stack>,
    /// The scenes mosaicked into this step (empty for a single scene).
    pub mosaic: Vec<MosaicScene>,
}

impl SeriesStep {
    /// The step as the plan and the summary record it.
    #[must_use]
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "scene": self.label,
            "date": self.date,
            "date_source": self.date_source,
            "bands": self.stack.bands,
            "mosaic": if self.mosaic.is_empty() { serde_json::Value::Null } else { serde_json::to_value(&self.mosaic).unwrap_or_default() },
        })
    }

    /// Every file GDAL reads for the step.
    #[must_use]
    pub fn files(&self) -> Vec<String> {
        let mut names = Vec::new();
        for st in std::iter::once(&self.stack).chain(&self.s1) {
            names.push(st.vrt.clone());
            names.extend(st.bands.iter().map(|b| b.source.clone()));
        }
        for m in &self.mosaic {
            names.extend(m.files.iter().cloned());
        }
        names
    }
}

/// Whether the stack has one finite value (read from an overview-sized sample of each band).
fn any_valid(stack: &Stack) -> Result<bool, SceneError> {
    let err = |e: gdal::errors::GdalError| SceneError::Gdal {
        path: PathBuf::from(&stack.scene),
        message: e.to_string(),
    };
    let ds = gdal::Dataset::open(&stack.vrt).map_err(err)?;
    let (w, h) = (stack.width.min(256), stack.height.min(256));
    let mut buf = vec![0.0_f32; w * h];
    for b in 1..=stack.vrt_bands {
        ds.rasterband(b)
            .and_then(|band| {
                band.read_into_slice::<f32>(
                    (0, 0),
                    (stack.width, stack.height),
                    (w, h),
                    &mut buf,
                    None,
                )
            })
            .map_err(err)?;
        if buf.iter().any(|v| v.is_finite()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The scenes of one date as one stack on the grid: one scene is opened on it directly,
/// several are mosaicked (least cloud cover on top).
fn open_date(
    group: &[SceneEntry],
    req: &StackRequest,
    opts: &SceneOptions,
    aoi: Option<&Aoi>,
    name: &str,
) -> Result<(Stack, Vec<MosaicScene>), Error> {
    match (aoi, group) {
        (None, [one]) => Ok((open_stack_request(&one.source, req, opts)?, Vec::new())),
        (Some(aoi), _) => mosaic_of(group.to_vec(), req, opts, aoi, name),
        (None, _) => {
            // No grid yet (the first date): the scenes' union on the first one's pixels.
            let grid = match &req.grid {
                Some(g) => g.clone(),
                None => union_grid(group, req, opts)?,
            };
            let epsg = gdal::spatial_ref::SpatialRef::from_wkt(&grid.srs_wkt)
                .ok()
                .and_then(|s| s.auth_code().ok());
            let area = Aoi::from_grid(group[0].source.label(), &grid, epsg);
            mosaic_of(group.to_vec(), req, opts, &area, name)
        }
    }
}

/// The grid covering every scene of `group` on the first scene's pixel grid; scenes in
/// another CRS or at another pixel size need an `--aoi` to be put on one grid.
fn union_grid(
    group: &[SceneEntry],
    req: &StackRequest,
    opts: &SceneOptions,
) -> Result<super::GridSpec, Error> {
    let first = open_stack_request(&group[0].source, req, opts)?;
    let gt = first.geo_transform;
    let (mut x0, mut y1) = (gt[0], gt[3]);
    let (mut x1, mut y0) = (
        gt[0] + first.width as f64 * gt[1],
        gt[3] + first.height as f64 * gt[5],
    );
    for e in &group[1..] {
        let st = open_stack_request(&e.source, req, opts)?;
        let g = st.geo_transform;
        let same_pixels = (g[1] - gt[1]).abs() <= 1e-9 * gt[1].abs()
            && (g[5] - gt[5]).abs() <= 1e-9 * gt[5].abs();
        if st.srs_wkt != first.srs_wkt || !same_pixels {
            return Err(SceneError::Series {
                what: format!(
                    "the first date's scenes {} and {} are in different CRS or pixel sizes; pass --aoi to put them on one grid",
                    group[0].source.label(),
                    e.source.label()
                ),
            }
            .into());
        }
        x0 = x0.min(g[0]);
        y1 = y1.max(g[3]);
        x1 = x1.max(g[0] + st.width as f64 * g[1]);
        y0 = y0.min(g[3] + st.height as f64 * g[5]);
    }
    // Snap outward to whole pixels of the first scene.
    let px = gt[1];
    let py = -gt[5];
    let left = gt[0] - ((gt[0] - x0) / px).round() * px;
    let top = gt[3] + ((y1 - gt[3]) / py).round() * py;
    let width = ((x1 - left) / px).round().max(1.0) as usize;
    let height = ((top - y0) / py).round().max(1.0) as usize;
    Ok(super::GridSpec {
        width,
        height,
        geo_transform: [left, px, 0.0, top, 0.0, gt[5]],
        srs_wkt: first.srs_wkt.clone(),
    })
}

/// Opens the time steps of `scenes` for `model` (an encoder): dates from the scenes or
/// `dates`, scenes of one date mosaicked, all on the AOI's grid or the first date's.
/// Returns the steps in date order and the warnings (left-out steps).
pub fn open_series(
    scenes: &[String],
    dates: &[Date],
    model: &ModelSpec,
    opts: &SceneOptions,
    aoi: Option<&Aoi>,
    name: &str,
) -> Result<(Vec<SeriesStep>, Vec<String>), Error> {
    let Some(enc) = &model.encoder else {
        return Err(SceneError::Series {
            what: format!("{} is not a time-series model", model.manifest.display()),
        }
        .into());
    };
    let mut req = super::StackRequest::for_model(model);
    let mut req_s1 = enc.stack_request_s1();
    // Sentinel-1 backscatter is read in dB as it is stored (its request says so).
    let opts_s1 = SceneOptions {
        read: crate::scene::ReadFlags {
            scale: None,
            offset: None,
            ..opts.read
        },
        ..opts.clone()
    };
    // Steps come sorted by date: scenes of one date are neighbours.
    let mut groups: Vec<(Date, String, Vec<SceneEntry>)> = Vec::new();
    for t in time_steps(scenes, dates)? {
        let entry = SceneEntry {
            source: t.source,
            date: Some((t.date, t.date_source.clone())),
            cloud_cover: t.cloud_cover,
        };
        match groups.last_mut() {
            Some((d, _, g)) if *d == t.date => g.push(entry),
            _ => groups.push((t.date, t.date_source, vec![entry])),
        }
    }
    let mut steps = Vec::new();
    let mut warnings = Vec::new();
    for (date, date_source, entries) in groups {
        let label = entries
            .iter()
            .map(|e| e.source.label().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        let (stack, mosaic) = open_date(&entries, &req, opts, aoi, name)?;
        crate::util::push_new(&mut warnings, stack.warnings.iter().cloned());
        if req.grid.is_none() {
            req.grid = Some(stack.grid());
        }
        if !any_valid(&stack)? {
            let w = format!("time step {date} ({label}) has no valid pixel and is left out");
            tracing::warn!("{w}");
            warnings.push(w);
            continue;
        }
        let s1 = match req_s1.as_mut() {
            Some(r) => {
                r.grid.clone_from(&req.grid);
                Some(open_date(&entries, r, &opts_s1, aoi, name)?.0)
            }
            None => None,
        };
        if entries.len() > 1 {
            tracing::info!(%date, scenes = entries.len(), "scenes of one date mosaicked into one time step");
        }
        steps.push(SeriesStep {
            date,
            date_source,
            label,
            stack,
            s1,
            mosaic,
        });
    }
    if steps.is_empty() {
        return Err(SceneError::Series {
            what: "no time step has a valid pixel; nothing to run".into(),
        }
        .into());
    }
    // An event model takes its steps per event from the whole series.
    let per_event = enc.temporal.as_ref().is_some_and(|t| !t.groups.is_empty());
    if steps.len() > enc.max_time_steps && !per_event {
        return Err(SceneError::TooManySteps {
            count: steps.len(),
            max: enc.max_time_steps,
        }
        .into());
    }
    Ok((steps, warnings))
}
