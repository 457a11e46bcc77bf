//! Scheduled monitoring (`eoinfer monitor`): one cycle finds the acquisitions a source offers
//! that are not processed yet, runs the configured models on them over the regions (the same
//! runner as `predict`, on the regions' AOI grid, one observation per date), records per-region
//! statistics in the state database, raises alerts by rule, and rewrites the time series and
//! alert files from the state. Cycles are locked (an overlapping one exits or waits) and
//! idempotent: a killed cycle leaves every acquisition done or to do, never half.

pub mod change;
pub mod config;
pub mod embchange;
pub mod http;
pub mod outputs;
pub mod source;
pub mod state;

use crate::error::MonitorError;
use config::{Config, Overlap, Rule};
use source::Acquisition;
use state::{Alert, Change, Observation, State};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a cycle did (`--json` prints it).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CycleReport {
    /// The monitor's name.
    pub name: String,
    /// Another cycle held the lock (and `on_overlap` is `skip`): nothing was done.
    pub already_running: bool,
    /// Acquisitions the source offered.
    pub listed: usize,
    /// Files the source skipped, with why (incomplete, undated).
    pub skipped: Vec<String>,
    /// Acquisitions processed this cycle.
    pub processed: Vec<String>,
    /// Acquisitions that failed this cycle, with the reason.
    pub failed: Vec<(String, String)>,
    /// New alerts.
    pub alerts_new: usize,
    /// Alerts delivered to the webhook this cycle, and deliveries that failed (retried later).
    pub delivered: usize,
    /// See `delivered`.
    pub delivery_failed: usize,
    /// More new acquisitions than `max_items_per_cycle` were offered: the rest wait.
    pub backlog: usize,
    /// Seconds.
    pub seconds: f64,
    /// Of them, seconds in the models' runs (`predict` on each date): the rest is the
    /// monitor's own work (listing, statistics, change, alerts, state, files, webhook).
    pub model_seconds: f64,
}

/// Writes the commented example configuration to `path` (refusing to overwrite).
pub fn init(path: &Path) -> Result<(), MonitorError> {
    if path.exists() {
        return Err(MonitorError::Config {
            path: path.to_path_buf(),
            what: "exists already; remove it or name another file".into(),
        });
    }
    crate::util::write_atomic(path, config::EXAMPLE.as_bytes()).map_err(|e| MonitorError::Config {
        path: path.to_path_buf(),
        what: format!("cannot be written: {e}"),
    })
}

/// The state's counts (`monitor status`).
pub fn status(config: &Path) -> Result<serde_json::Value, MonitorError> {
    let c = Config::load(config)?;
    if !c.out.join("state.sqlite").is_file() {
        return Ok(serde_json::json!({"name": c.name, "cycles_run": false}));
    }
    let s = State::open(&c.out)?;
    let mut v = s.counts()?;
    v["name"] = c.name.into();
    Ok(v)
}

/// The acquisitions to process this cycle, grouped by date: every date with an acquisition
/// that is new, changed or failed (under the attempt limit), with all of that date's
/// acquisitions (they are mosaicked into one observation). At most `cap` to-do
/// acquisitions; the number left waiting is returned too.
fn to_do(
    state: &State,
    listed: &[Acquisition],
    cap: usize,
    attempts: u32,
) -> Result<(BTreeMap<String, Vec<Acquisition>>, usize), MonitorError> {
    let mut todo = Vec::new();
    for a in listed {
        let pending = match state.item(&a.id)? {
            None => true,
            Some(r) if r.updated != a.updated => true,
            Some(r) => r.status == "failed" && r.attempts < attempts,
        };
        if pending {
            todo.push(a);
        }
    }
    let backlog = todo.len().saturating_sub(cap);
    let dates: std::collections::BTreeSet<&str> =
        todo.iter().take(cap).map(|a| a.date.as_str()).collect();
    let mut groups: BTreeMap<String, Vec<Acquisition>> = BTreeMap::new();
    for a in listed.iter().filter(|a| dates.contains(a.date.as_str())) {
        groups.entry(a.date.clone()).or_default().push(a.clone());
    }
    Ok((groups, backlog))
}

/// What a model writes, and the monitor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A class map (`<name>.classes.tif`): class shares, transitions.
    Classes,
    /// An embedding map (`<name>.embeddings.tif`): mean embeddings, `1 - cosine` change.
    Embeddings,
    /// A value map (`<name>.values.tif`): mean and standard deviation.
    Values,
}

impl Output {
    /// The output of a model's manifest.
    #[must_use]
    pub fn of(spec: &crate::model::ModelSpec) -> Self {
        use crate::model::embedding::EncoderHead;
        match spec.head_kind() {
            Some(EncoderHead::Embeddings) => Self::Embeddings,
            Some(EncoderHead::Regression) => Self::Values,
            Some(EncoderHead::Segmentation | EncoderHead::Classification) | None => Self::Classes,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Classes => "classes",
            Self::Embeddings => "embeddings",
            Self::Values => "values",
        }
    }
}

/// Runs one model over a date's acquisitions on the regions' grid; its map's path.
fn run_model(
    c: &Config,
    m: &config::Model,
    output: Output,
    date: &str,
    group: &[Acquisition],
    env: &ort::environment::Environment,
) -> Result<std::path::PathBuf, crate::Error> {
    let key: String = crate::util::sha256_hex(
        group
            .iter()
            .fold(String::new(), |mut s, a| {
                let _ = writeln!(s, "{}\n{}", a.id, a.updated);
                s
            })
            .as_bytes(),
    )
    .chars()
    .take(12)
    .collect();
    let out = c.out.join("runs").join(date).join(key);
    let args = crate::plan::PredictArgs {
        model: m.manifest.clone(),
        scenes: group.iter().map(|a| a.scene.clone()).collect(),
        aoi: Some(c.regions.path.display().to_string()),
        out: out.clone(),
        name: Some(m.name.clone()),
        resolution: m.resolution,
        bands: m.bands.clone(),
        s2_offset: m.s2_offset,
        nodata: m.nodata,
        read: crate::scene::ReadFlags {
            scale: m.scale,
            offset: m.offset,
            ..Default::default()
        },
        device: m
            .device
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|what| MonitorError::Config {
                path: m.manifest.clone(),
                what,
            })?
            .unwrap_or_default(),
        batch_size: m.batch_size.unwrap_or(4),
        threads: c.threads,
        ..Default::default()
    };
    let plan = crate::plan::PredictPlan::build(&args)?;
    let model = plan.open_model(env)?;
    plan.check_checksum()?;
    crate::pipeline::predict(&plan, model)?;
    Ok(out.join(format!("{}.{}.tif", m.name, output.suffix())))
}

/// Per-region observations of one class map.
fn observe(
    c: &Config,
    model: &str,
    date: &str,
    group: &[Acquisition],
    classes_tif: &Path,
) -> Result<(Vec<Observation>, Vec<state::RegionRow>), crate::Error> {
    let table = crate::output::zonal::zonal(classes_tif, &c.regions.path, false)?;
    let (names, continuous) = match &table.kind {
        crate::output::zonal::Kind::Classes(names) => (names, false),
        crate::output::zonal::Kind::Continuous(names) => (names, true),
    };
    let stats = table.band_stats();
    let col = table
        .attr_names
        .iter()
        .position(|n| n == &c.regions.id_column)
        .ok_or_else(|| MonitorError::Config {
            path: c.regions.path.clone(),
            what: format!(
                "has no attribute {:?} (regions.id_column); it has {:?}",
                c.regions.id_column, table.attr_names
            ),
        })?;
    let items = group
        .iter()
        .map(|a| a.id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut obs = Vec::new();
    let mut regions = Vec::new();
    for (i, (inside, valid, counts)) in table.class_counts().into_iter().enumerate() {
        // A value or embedding map: valid where every band is (its first band's count).
        let (valid, means, stds) = if continuous {
            let s = &stats[i];
            (
                s.iter().map(|b| b.0).min().unwrap_or(0),
                s.iter().map(|b| b.1).collect(),
                s.iter().map(|b| b.2).collect(),
            )
        } else {
            (valid, Vec::new(), Vec::new())
        };
        // A missing or repeated id would merge regions' rows in the time series: refused.
        let region = match &table.attrs[i][col] {
            crate::output::zonal::Attr::Int(Some(v)) => v.to_string(),
            crate::output::zonal::Attr::Real(Some(v)) => v.to_string(),
            crate::output::zonal::Attr::Text(Some(v)) if !v.is_empty() => v.clone(),
            _ => {
                return Err(MonitorError::Config {
                    path: c.regions.path.clone(),
                    what: format!(
                        "region {} (in file order) has no {:?} (regions.id_column); give every region an id",
                        i + 1,
                        c.regions.id_column
                    ),
                }
                .into());
            }
        };
        if obs.iter().any(|o: &Observation| o.region == region) {
            return Err(MonitorError::Config {
                path: c.regions.path.clone(),
                what: format!(
                    "the region id {region:?} ({:?}) is given to more than one region; ids must be unique",
                    c.regions.id_column
                ),
            }
            .into());
        }
        regions.push((
            region.clone(),
            table.wkb[i].clone(),
            table.projjson().to_string(),
        ));
        obs.push(Observation {
            region,
            date: date.to_string(),
            model: model.to_string(),
            items: items.clone(),
            region_pixels: inside,
            valid_pixels: valid,
            classes: names.clone(),
            counts,
            pixel_area: table.pixel_area,
            output: classes_tif.display().to_string(),
            means,
            stds,
        });
    }
    Ok((obs, regions))
}

/// The clear (valid and not `cloudy`) share of the region in an observation.
#[must_use]
pub fn clear_share(o: &Observation, cloudy: &[String]) -> f64 {
    if o.region_pixels == 0 {
        return 0.0;
    }
    let cloud: u64 = o
        .classes
        .iter()
        .zip(&o.counts)
        .filter(|(n, _)| cloudy.contains(n))
        .map(|(_, c)| c)
        .sum();
    o.valid_pixels.saturating_sub(cloud) as f64 / o.region_pixels as f64
}

/// The alerts the rules raise on a date's observations.
fn alerts_of(rules: &[Rule], obs: &[Observation]) -> Vec<Alert> {
    let mut out = Vec::new();
    for r in rules {
        match r {
            Rule::CloudFreeShareBelow {
                model,
                threshold,
                classes,
            } => {
                for o in obs.iter().filter(|o| &o.model == model) {
                    let share = clear_share(o, classes);
                    if share < *threshold {
                        let rule = "cloud-free-share-below";
                        let key = crate::util::sha256_hex(
                            format!("{rule}|{}|{}|{model}|{threshold}", o.region, o.date)
                                .as_bytes(),
                        )[..24]
                            .to_string();
                        out.push(Alert {
                            key,
                            region: o.region.clone(),
                            date: o.date.clone(),
                            rule: rule.into(),
                            model: model.clone(),
                            value: share,
                            threshold: *threshold,
                            message: format!(
                                "region {} on {}: {:.1} % valid and cloud-free ({model}), below {:.1} %",
                                o.region,
                                o.date,
                                share * 100.0,
                                threshold * 100.0
                            ),
                            geometry: None,
                            quicklook: None,
                        });
                    }
                }
            }
            // Judged per pixel, by `change_of` and `embedding_change_of`.
            Rule::ClassTransition { .. }
            | Rule::ClassFractionChange { .. }
            | Rule::EmbeddingChange { .. } => {}
        }
    }
    out
}

/// The class values of a mask model's map that mask a pixel.
fn masked_values(m: &config::Model, mask_tif: &Path) -> Result<Vec<u8>, crate::Error> {
    let ds = gdal::Dataset::open(mask_tif).map_err(|e| MonitorError::Change {
        path: mask_tif.to_path_buf(),
        what: e.to_string(),
    })?;
    let band = ds.rasterband(1).map_err(|e| MonitorError::Change {
        path: mask_tif.to_path_buf(),
        what: e.to_string(),
    })?;
    let names = crate::output::vectors::category_names(&band);
    let id = |n: &str| names.iter().position(|c| c == n).map(|i| i as u8);
    let mask = m.mask.clone().unwrap_or_default();
    if let Some(list) = &m.mask_classes {
        return list
            .iter()
            .map(|n| {
                id(n).ok_or_else(|| {
                    MonitorError::Config {
                        path: mask_tif.to_path_buf(),
                        what: format!(
                            "models.mask_classes of {:?}: the mask model {mask:?} has no class {n:?}; it has {names:?}",
                            m.name
                        ),
                    }
                    .into()
                })
            })
            .collect();
    }
    let v: Vec<u8> = ["cloud", "cloud_shadow"]
        .iter()
        .filter_map(|n| id(n))
        .collect();
    if v.is_empty() {
        return Err(MonitorError::Config {
            path: mask_tif.to_path_buf(),
            what: format!(
                "the mask model {mask:?} of {:?} has no class cloud or cloud_shadow (it has {names:?}); name the classes that mask in models.mask_classes",
                m.name
            ),
        }
        .into());
    }
    Ok(v)
}

/// The class values of `names` in `classes` (a config error naming the rule otherwise).
fn class_ids(
    rule: &Rule,
    classes: &[String],
    names: &[String],
) -> Result<Vec<usize>, MonitorError> {
    names
        .iter()
        .map(|n| {
            classes
                .iter()
                .position(|c| c == n)
                .ok_or_else(|| MonitorError::Config {
                    path: PathBuf::from(rule.model()),
                    what: format!(
                        "rule {}: model {:?} has no class {n:?}; it has {classes:?}",
                        rule.name(),
                        rule.model()
                    ),
                })
        })
        .collect()
}

/// `part / whole`, 0 for an empty whole.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A file name made of a region id.
fn file_part(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A change rule's judgement: value, threshold, message, and which change codes it counts.
type Judged = (f64, f64, String, Box<dyn Fn(u16) -> bool>);

/// Judges a change rule on one region's comparison (None: no alert).
fn judge(
    rule: &Rule,
    classes: &[String],
    rc: &change::RegionChange,
    o: &Observation,
    compared_share: f64,
) -> Result<Option<Judged>, MonitorError> {
    let judged = |min: f64| rc.compared > 0 && compared_share >= min;
    let n = classes.len();
    let (region, date, model) = (&o.region, &o.date, &o.model);
    Ok(Some(match rule {
        Rule::ClassTransition {
            from,
            to,
            min_area_m2,
            min_compared_share,
            ..
        } => {
            let (f, t) = (
                class_ids(rule, classes, from)?,
                class_ids(rule, classes, to)?,
            );
            let pixels = rc.transitions(n, &f, &t);
            let area = pixels as f64 * o.pixel_area;
            if !judged(*min_compared_share) || pixels == 0 || area < *min_area_m2 {
                return Ok(None);
            }
            let any = |l: &[String]| {
                if l.is_empty() {
                    "any class".to_string()
                } else {
                    l.join(" or ")
                }
            };
            let message = format!(
                "region {region} on {date}: {area:.0} m² ({pixels} px) changed from {} to {} ({}, against each pixel's previous valid observation), at least {min_area_m2:.0} m²",
                any(from),
                any(to),
                model
            );
            let hit = move |code: u16| {
                let (a, b) = (usize::from(code / 100), usize::from(code % 100));
                code != 0 && (f.is_empty() || f.contains(&a)) && (t.is_empty() || t.contains(&b))
            };
            (area, *min_area_m2, message, Box::new(hit))
        }
        Rule::ClassFractionChange {
            class,
            threshold,
            min_compared_share,
            ..
        } => {
            let k = class_ids(rule, classes, std::slice::from_ref(class))?[0];
            let v = rc.fraction_change(n, k);
            if !judged(*min_compared_share) || v.abs() < *threshold {
                return Ok(None);
            }
            let message = format!(
                "region {region} on {date}: the share of {class} among the {} compared pixels changed by {:+.1} points ({}), at least {:.1}",
                rc.compared,
                v * 100.0,
                model,
                threshold * 100.0
            );
            let hit = move |code: u16| {
                code != 0 && (usize::from(code / 100) == k || usize::from(code % 100) == k)
            };
            (v, *threshold, message, Box::new(hit))
        }
        Rule::CloudFreeShareBelow { .. } | Rule::EmbeddingChange { .. } => return Ok(None),
    }))
}

/// The earlier maps of model `m` before `date` (newest first, at most the look-back), each
/// with its date's mask map; dates without the mask's map are left out.
fn earlier_maps(
    c: &Config,
    state: &State,
    m: &config::Model,
    date: &str,
    mask: Option<&(String, Vec<u8>)>,
) -> Result<Vec<change::Map>, MonitorError> {
    let mut earlier = Vec::new();
    let candidates = match &c.change_baseline {
        // Against a fixed period: its dates before this one, newest first.
        Some(b) => state
            .maps_before(&m.name, date, usize::MAX >> 1)?
            .into_iter()
            .filter(|(d, _)| d.as_str() >= b.start.as_str() && d.as_str() <= b.end.as_str())
            .collect(),
        None => state.maps_before(&m.name, date, c.change_lookback_dates)?,
    };
    for (d, out) in candidates {
        let mask = match mask {
            // A date without the mask's map cannot tell clouds: not used.
            Some((mm, v)) => match state.map_of(mm, &d)? {
                Some(p) => Some((PathBuf::from(p), v.clone())),
                None => continue,
            },
            None => None,
        };
        earlier.push(change::Map {
            date: d,
            classes: PathBuf::from(out),
            mask,
        });
    }
    Ok(earlier)
}

/// What a date's change of model `m` compares: its map now (with its mask), the earlier maps,
/// where the change and previous maps go (beside the map), and the regions' WKB.
struct Compared {
    current: change::Map,
    earlier: Vec<change::Map>,
    change_tif: PathBuf,
    previous_tif: PathBuf,
    wkbs: Vec<Vec<u8>>,
}

fn compared(
    c: &Config,
    state: &State,
    m: &config::Model,
    date: &str,
    maps: &BTreeMap<String, PathBuf>,
    regions: &[state::RegionRow],
) -> Result<Compared, crate::Error> {
    let map = &maps[&m.name];
    let mask = match &m.mask {
        Some(mm) => Some((mm.clone(), masked_values(m, &maps[mm])?)),
        None => None,
    };
    let dir = map.parent().unwrap_or(Path::new("."));
    Ok(Compared {
        current: change::Map {
            date: date.to_string(),
            classes: map.clone(),
            mask: mask.as_ref().map(|(mm, v)| (maps[mm].clone(), v.clone())),
        },
        earlier: earlier_maps(c, state, m, date, mask.as_ref())?,
        change_tif: dir.join(format!("{}.change.tif", m.name)),
        previous_tif: dir.join(format!("{}.previous.tif", m.name)),
        wkbs: regions.iter().map(|r| r.1.clone()).collect(),
    })
}

/// Per-patch `1 - cosine` change of embedding model `m`'s map on `date` against each patch's
/// previous valid observation (the distance map and previous embeddings beside the map), its
/// rows per region, and the alerts of the embedding-change rules, each with the changed area
/// and a quicklook.
fn embedding_change_of(
    c: &Config,
    state: &State,
    m: &config::Model,
    date: &str,
    maps: &BTreeMap<String, PathBuf>,
    obs: &[Observation],
    regions: &[state::RegionRow],
) -> Result<(Vec<Change>, Vec<Alert>), crate::Error> {
    let Compared {
        current,
        earlier,
        change_tif,
        previous_tif,
        wkbs,
    } = compared(c, state, m, date, maps, regions)?;
    let det = embchange::detect(&current, &earlier, &wkbs, &change_tif, &previous_tif)?;
    let rules: Vec<&Rule> = c
        .rules
        .iter()
        .filter(|r| matches!(r, Rule::EmbeddingChange { .. }) && r.model() == m.name)
        .collect();
    let lowest = rules
        .iter()
        .filter_map(|r| match r {
            Rule::EmbeddingChange { threshold, .. } => Some(*threshold),
            _ => None,
        })
        .fold(f64::INFINITY, f64::min);
    let mut changes = Vec::new();
    let mut alerts = Vec::new();
    for ((region, wkb, _), &(compared, sum)) in regions.iter().zip(&det.regions) {
        let (changed, _) = embchange::changed(&change_tif, wkb, lowest)?;
        changes.push(Change {
            region: region.clone(),
            date: date.to_string(),
            model: m.name.clone(),
            compared,
            changed,
            matrix: Vec::new(),
            dates_used: det.dates_used.clone(),
            output: change_tif.display().to_string(),
            mean_distance: (compared > 0).then(|| sum / compared as f64),
        });
        let Some(o) = obs
            .iter()
            .find(|o| &o.region == region && o.model == m.name)
        else {
            continue;
        };
        let compared_share = share(compared, o.region_pixels);
        for rule in &rules {
            let Rule::EmbeddingChange {
                threshold,
                min_area_m2,
                min_compared_share,
                ..
            } = rule
            else {
                continue;
            };
            if compared == 0 || compared_share < *min_compared_share {
                continue;
            }
            let (patches, geometry) = embchange::changed(&change_tif, wkb, *threshold)?;
            let area = patches as f64 * o.pixel_area;
            if patches == 0 || area < *min_area_m2 {
                continue;
            }
            let key = crate::util::sha256_hex(
                format!("{}|{region}|{date}|{rule:?}", rule.name()).as_bytes(),
            )[..24]
                .to_string();
            let rel = format!("quicklooks/{date}/{}-{}.png", file_part(region), &key[..8]);
            embchange::render_quicklook(
                &current,
                &previous_tif,
                &change_tif,
                wkb,
                *threshold,
                &c.out.join(&rel),
            )?;
            alerts.push(Alert {
                key,
                region: region.clone(),
                date: date.to_string(),
                rule: rule.name().into(),
                model: m.name.clone(),
                value: area,
                threshold: *min_area_m2,
                message: format!(
                    "region {region} on {date}: {area:.0} m² ({patches} patches) of embedding change above {threshold} (1 - cosine, {}, against each patch's previous valid observation), at least {min_area_m2:.0} m²",
                    m.name
                ),
                geometry,
                quicklook: Some(rel),
            });
        }
    }
    Ok((changes, alerts))
}

/// Per-pixel change of model `m`'s map on `date` against each pixel's previous valid
/// observation (the change map and previous classes beside the map), its rows per region,
/// and the alerts of the change rules on it, each with the changed area and a quicklook.
fn change_of(
    c: &Config,
    state: &State,
    m: &config::Model,
    date: &str,
    maps: &BTreeMap<String, PathBuf>,
    obs: &[Observation],
    regions: &[state::RegionRow],
) -> Result<(Vec<Change>, Vec<Alert>), crate::Error> {
    let classes_tif = &maps[&m.name];
    let Compared {
        current,
        earlier,
        change_tif,
        previous_tif,
        wkbs,
    } = compared(c, state, m, date, maps, regions)?;
    let det = change::detect(&current, &earlier, &wkbs, &change_tif, &previous_tif)?;
    let n = det.classes.len();
    let mut changes = Vec::new();
    let mut alerts = Vec::new();
    for ((region, wkb, _), rc) in regions.iter().zip(&det.regions) {
        changes.push(Change {
            region: region.clone(),
            date: date.to_string(),
            model: m.name.clone(),
            compared: rc.compared,
            changed: rc.transitions(n, &[], &[]),
            matrix: rc.matrix.clone(),
            dates_used: det.dates_used.clone(),
            output: change_tif.display().to_string(),
            mean_distance: None,
        });
        let Some(o) = obs
            .iter()
            .find(|o| &o.region == region && o.model == m.name)
        else {
            continue;
        };
        let compared_share = share(rc.compared, o.region_pixels);
        for rule in c
            .rules
            .iter()
            .filter(|r| r.needs_change() && r.model() == m.name)
        {
            let Some((value, threshold, message, hit)) =
                judge(rule, &det.classes, rc, o, compared_share)?
            else {
                continue;
            };
            let key = crate::util::sha256_hex(
                format!("{}|{region}|{date}|{rule:?}", rule.name()).as_bytes(),
            )[..24]
                .to_string();
            let geometry = change::changed_area(&change_tif, wkb, &*hit)?;
            let rel = format!("quicklooks/{date}/{}-{}.png", file_part(region), &key[..8]);
            change::render_quicklook(
                classes_tif,
                &previous_tif,
                &change_tif,
                wkb,
                &*hit,
                &c.out.join(&rel),
            )?;
            alerts.push(Alert {
                key,
                region: region.clone(),
                date: date.to_string(),
                rule: rule.name().into(),
                model: m.name.clone(),
                value,
                threshold,
                message,
                geometry,
                quicklook: Some(rel),
            });
        }
    }
    Ok((changes, alerts))
}

/// Processes one date: every model, then one transaction with its rows and alerts.
fn process_date(
    c: &Config,
    outputs: &BTreeMap<String, Output>,
    state: &mut State,
    date: &str,
    group: &[Acquisition],
    env: &ort::environment::Environment,
    model_seconds: &mut f64,
) -> Result<usize, crate::Error> {
    let mut obs = Vec::new();
    let mut regions = Vec::new();
    let mut maps = BTreeMap::new();
    for m in &c.models {
        let t = std::time::Instant::now();
        let classes = run_model(c, m, outputs[&m.name], date, group, env);
        *model_seconds += t.elapsed().as_secs_f64();
        let classes = classes?;
        let (o, r) = observe(c, &m.name, date, group, &classes)?;
        obs.extend(o);
        regions = r;
        maps.insert(m.name.clone(), classes);
    }
    let mut alerts = alerts_of(&c.rules, &obs);
    let mut changes = Vec::new();
    for m in &c.models {
        if c.rules
            .iter()
            .any(|r| r.needs_change() && r.model() == m.name)
        {
            let (ch, a) = if outputs[&m.name] == Output::Embeddings {
                embedding_change_of(c, state, m, date, &maps, &obs, &regions)?
            } else {
                change_of(c, state, m, date, &maps, &obs, &regions)?
            };
            changes.extend(ch);
            alerts.extend(a);
        }
    }
    let n = alerts.len();
    state.commit_date(
        group,
        &obs,
        &changes,
        &regions,
        &alerts,
        c.alerts.webhook_url.is_some(),
    )?;
    Ok(n)
}

/// What each model writes; rules and masks that need another kind of map are refused.
fn outputs_of(c: &Config, config: &Path) -> Result<BTreeMap<String, Output>, crate::Error> {
    let mut outputs = BTreeMap::new();
    for m in &c.models {
        let spec = crate::model::ModelSpec::load(&m.manifest)?;
        outputs.insert(m.name.clone(), Output::of(&spec));
    }
    let bad = |what: String| -> crate::Error {
        MonitorError::Config {
            path: config.to_path_buf(),
            what,
        }
        .into()
    };
    for m in &c.models {
        if let Some(mask) = &m.mask {
            if outputs[mask] != Output::Classes {
                return Err(bad(format!(
                    "models.mask of {:?}: {mask:?} does not write a class map (a mask is a cloud model's class map)",
                    m.name
                )));
            }
        }
    }
    for r in &c.rules {
        let want = match r {
            Rule::EmbeddingChange { .. } => Output::Embeddings,
            _ => Output::Classes,
        };
        let got = outputs[r.model()];
        if got != want {
            return Err(bad(format!(
                "rule {} reads a {} map, but model {:?} writes {} (rules for embeddings: embedding-change; for class maps: cloud-free-share-below, class-transition, class-fraction-change)",
                r.name(),
                want.suffix(),
                r.model(),
                got.suffix()
            )));
        }
    }
    Ok(outputs)
}

/// Runs one monitoring cycle of the configuration at `config`.
pub fn run(config: &Path) -> Result<CycleReport, crate::Error> {
    let t0 = std::time::Instant::now();
    let c = Config::load(config)?;
    let outputs = outputs_of(&c, config)?;
    // Read (and its file's permissions checked) before any work: a bad token file is exit 2.
    let webhook_token = config::secret(
        c.alerts.webhook_token_env.as_ref(),
        c.alerts.webhook_token_file.as_ref(),
    )?;
    std::fs::create_dir_all(&c.out).map_err(|e| MonitorError::Config {
        path: c.out.clone(),
        what: format!("the output folder cannot be made: {e}"),
    })?;
    let mut report = CycleReport {
        name: c.name.clone(),
        ..CycleReport::default()
    };
    let lock_path = c.out.join(".monitor.lock");
    let _lock = match c.on_overlap {
        Overlap::Skip => {
            let Some(l) = crate::lock::Held::try_take(&lock_path, crate::lock::Mode::Exclusive)?
            else {
                tracing::info!(monitor = %c.name, "already running: another cycle holds {}", lock_path.display());
                report.already_running = true;
                return Ok(report);
            };
            l
        }
        Overlap::Wait => crate::lock::Held::wait(&lock_path, crate::lock::Mode::Exclusive)?,
    };
    let mut state = State::open(&c.out)?;
    let bbox = crate::aoi::lonlat_bbox(&c.regions.path.display().to_string())?;
    let from = match &c.source {
        config::Source::StacApi {
            start,
            lookback_days,
            ..
        } => {
            let back = state
                .newest_done()?
                .and_then(|d| days_before(&d, *lookback_days));
            match (start.clone(), back) {
                (Some(s), Some(b)) => Some(s.max(b)),
                (s, b) => s.or(b),
            }
        }
        config::Source::StacCatalog { start, .. } => start.clone(),
        config::Source::Folder { .. } => None,
    };
    let listing = source::list(
        &c.source,
        bbox,
        from.as_deref(),
        c.max_items_per_cycle.saturating_mul(20).max(1000),
        &c.out.join("items"),
    )?;
    report.listed = listing.acquisitions.len();
    report.skipped = listing.skipped;
    let (groups, backlog) = to_do(
        &state,
        &listing.acquisitions,
        c.max_items_per_cycle,
        c.max_attempts,
    )?;
    report.backlog = backlog;
    if !groups.is_empty() {
        let ort_lib = crate::model::runtime::find_runtime(None)?;
        let env = crate::model::runtime::init_runtime(&ort_lib)?;
        for (date, group) in &groups {
            tracing::info!(monitor = %c.name, date = %date, acquisitions = group.len(), "processing");
            match process_date(
                &c,
                &outputs,
                &mut state,
                date,
                group,
                &env,
                &mut report.model_seconds,
            ) {
                Ok(n) => {
                    report.alerts_new += n;
                    report.processed.extend(group.iter().map(|a| a.id.clone()));
                }
                // A bad configuration (regions without unique ids) stops the cycle: exit 2; so
                // does the state database failing, which is not the acquisition's fault.
                Err(
                    e @ crate::Error::Monitor(
                        MonitorError::Config { .. } | MonitorError::State { .. },
                    ),
                ) => return Err(e),
                Err(e) => {
                    let reason = error_chain(&e);
                    tracing::warn!(monitor = %c.name, date = %date, "failed: {reason}");
                    state.fail(group, &reason)?;
                    report
                        .failed
                        .extend(group.iter().map(|a| (a.id.clone(), reason.clone())));
                }
            }
        }
    }
    outputs::write_all(&c, &state)?;
    if let Some(url) = &c.alerts.webhook_url {
        let (ok, failed) = outputs::deliver(&state, url, webhook_token.as_deref())?;
        report.delivered = ok;
        report.delivery_failed = failed;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// An error with its causes, in one line.
fn error_chain(e: &crate::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// The date `days` before `date` (`YYYY-MM-DD`), by the proleptic Gregorian calendar.
fn days_before(date: &str, days: u32) -> Option<String> {
    let d = crate::scene::timeseries::parse_date(date)?;
    let days =
        crate::util::days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day))
            - i64::from(days);
    let (year, month, day) = crate::util::civil_from_days(days);
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_go_back_across_months_years_and_leap_days() {
        assert_eq!(days_before("2015-07-11", 30).as_deref(), Some("2015-06-11"));
        assert_eq!(days_before("2024-03-01", 1).as_deref(), Some("2024-02-29"));
        assert_eq!(days_before("2023-01-05", 10).as_deref(), Some("2022-12-26"));
        assert_eq!(days_before("2020-02-01", 0).as_deref(), Some("2020-02-01"));
    }

    #[test]
    fn the_clear_share_counts_valid_pixels_outside_the_cloud_classes() {
        let o = Observation {
            region: "a".into(),
            date: "2020-01-01".into(),
            model: "m".into(),
            items: "i".into(),
            region_pixels: 100,
            valid_pixels: 80,
            classes: vec!["clear".into(), "cloud".into(), "cloud_shadow".into()],
            counts: vec![50, 20, 10],
            pixel_area: 1.0,
            output: String::new(),
            means: Vec::new(),
            stds: Vec::new(),
        };
        let cloudy = vec!["cloud".to_string(), "cloud_shadow".to_string()];
        assert!((clear_share(&o, &cloudy) - 0.5).abs() < 1e-12);
        let a = alerts_of(
            &[Rule::CloudFreeShareBelow {
                model: "m".into(),
                threshold: 0.6,
                classes: cloudy,
            }],
            &[o],
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].key.len(), 24);
    }
}
