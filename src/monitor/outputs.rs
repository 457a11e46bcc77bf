//! The monitor's files, rewritten from the state after every cycle (temporary name, then
//! rename): the time series (`timeseries.parquet`, one row per region and date, GeoParquet),
//! the alerts (`alerts.parquet`, `alerts.geojson`); and the webhook delivery of the outbox.

use crate::error::{MonitorError, OutputError};
use crate::monitor::config::{Config, Rule};
use crate::monitor::state::{Alert, State, alert_json};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// A column of a GeoParquet table.
enum Column {
    Text(String, Vec<String>),
    Real(String, Vec<Option<f64>>),
}

/// Writes a GeoParquet 1.1 file: the columns, then `geometry` (WKB, in the CRS `projjson`).
fn write_geoparquet(
    path: &Path,
    cols: &[Column],
    wkb: &[Vec<u8>],
    projjson: &str,
) -> Result<(), OutputError> {
    let part = crate::util::partial_name(path);
    let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut schema = String::from("message monitor {\n");
    for c in cols {
        match c {
            Column::Text(n, _) => {
                let _ = writeln!(schema, " required binary {n} (UTF8);");
            }
            Column::Real(n, _) => {
                let _ = writeln!(schema, " optional double {n};");
            }
        }
    }
    schema.push_str(" required binary geometry;\n}\n");
    let schema = Arc::new(parse_message_type(&schema).map_err(|e| perr(&e))?);
    let crs: serde_json::Value = serde_json::from_str(projjson).unwrap_or(serde_json::Value::Null);
    let geo = serde_json::json!({"version": "1.1.0", "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": [], "crs": crs}}});
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new("geo".into(), geo.to_string())]))
        .build();
    let file = std::fs::File::create(&part).map_err(|source| OutputError::Io {
        path: part.clone(),
        source,
    })?;
    let mut w = SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(|e| perr(&e))?;
    let mut rg = w.next_row_group().map_err(|e| perr(&e))?;
    for c in cols {
        let mut col = rg
            .next_column()
            .map_err(|e| perr(&e))?
            .ok_or_else(|| perr(&"missing column"))?;
        match c {
            Column::Text(_, v) => {
                let vals: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(s.as_str())).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&vals, None, None)
                    .map_err(|e| perr(&e))?;
            }
            Column::Real(_, v) => {
                let defs: Vec<i16> = v.iter().map(|x| i16::from(x.is_some())).collect();
                let vals: Vec<f64> = v.iter().filter_map(|x| *x).collect();
                col.typed::<DoubleType>()
                    .write_batch(&vals, Some(&defs), None)
                    .map_err(|e| perr(&e))?;
            }
        }
        col.close().map_err(|e| perr(&e))?;
    }
    let mut col = rg
        .next_column()
        .map_err(|e| perr(&e))?
        .ok_or_else(|| perr(&"missing geometry column"))?;
    let vals: Vec<ByteArray> = wkb.iter().map(|b| ByteArray::from(b.clone())).collect();
    col.typed::<ByteArrayType>()
        .write_batch(&vals, None, None)
        .map_err(|e| perr(&e))?;
    col.close().map_err(|e| perr(&e))?;
    rg.close().map_err(|e| perr(&e))?;
    w.close().map_err(|e| perr(&e))?;
    crate::journal::sync_file(&part).map_err(|source| OutputError::Io {
        path: part.clone(),
        source,
    })?;
    std::fs::rename(&part, path).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Rewrites the time series and the alert files from the state.
pub fn write_all(c: &Config, state: &State) -> Result<(), crate::Error> {
    let regions: BTreeMap<String, (Vec<u8>, String)> = state
        .regions()?
        .into_iter()
        .map(|(r, w, p)| (r, (w, p)))
        .collect();
    let Some(projjson) = regions.values().next().map(|(_, p)| p.clone()) else {
        return Ok(());
    };
    timeseries(c, state, &regions, &projjson)?;
    alerts(c, &state.alerts()?, &regions, &projjson)?;
    Ok(())
}

fn timeseries(
    c: &Config,
    state: &State,
    regions: &BTreeMap<String, (Vec<u8>, String)>,
    projjson: &str,
) -> Result<(), crate::Error> {
    let obs = state.observations()?;
    let changes: BTreeMap<(String, String, String), crate::monitor::state::Change> = state
        .changes()?
        .into_iter()
        .map(|ch| ((ch.region.clone(), ch.date.clone(), ch.model.clone()), ch))
        .collect();
    // One row per region and date; per model its class shares and areas.
    let mut rows: BTreeMap<(String, String), Vec<&crate::monitor::state::Observation>> =
        BTreeMap::new();
    for o in &obs {
        rows.entry((o.region.clone(), o.date.clone()))
            .or_default()
            .push(o);
    }
    let mut region_col = Vec::new();
    let mut date_col = Vec::new();
    let mut items_col = Vec::new();
    let mut wkb = Vec::new();
    let mut reals: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    let mut names: Vec<(String, String, Option<Vec<String>>)> = Vec::new();
    for m in &c.models {
        let classes = obs
            .iter()
            .find(|o| o.model == m.name)
            .map(|o| o.classes.clone())
            .unwrap_or_default();
        let cloudy = c.rules.iter().find_map(|r| match r {
            Rule::CloudFreeShareBelow { model, classes, .. } if model == &m.name => {
                Some(classes.clone())
            }
            _ => None,
        });
        names.push((m.name.clone(), classes.join("\u{1f}"), cloudy));
    }
    for ((region, date), list) in &rows {
        region_col.push(region.clone());
        date_col.push(date.clone());
        items_col.push(list.first().map(|o| o.items.clone()).unwrap_or_default());
        wkb.push(
            regions
                .get(region)
                .map(|(w, _)| w.clone())
                .unwrap_or_default(),
        );
    }
    for (model, classes, cloudy) in &names {
        let classes: Vec<&str> = classes.split('\u{1f}').filter(|s| !s.is_empty()).collect();
        let pick = |key: &(String, String)| rows[key].iter().find(|o| &o.model == model).copied();
        let keys: Vec<&(String, String)> = rows.keys().collect();
        let col = |f: &dyn Fn(&crate::monitor::state::Observation) -> f64| -> Vec<Option<f64>> {
            keys.iter().map(|k| pick(k).map(f)).collect()
        };
        reals.push((
            format!("{model}_valid_share"),
            col(&|o| {
                if o.region_pixels == 0 {
                    0.0
                } else {
                    o.valid_pixels as f64 / o.region_pixels as f64
                }
            }),
        ));
        if let Some(cloudy) = cloudy {
            reals.push((
                format!("{model}_clear_share"),
                col(&|o| crate::monitor::clear_share(o, cloudy)),
            ));
        }
        if change_and_band_columns(model, &classes, &keys, &pick, &changes, &obs, &mut reals) {
            continue;
        }
        for (ci, cname) in classes.iter().enumerate() {
            let n = crate::output::parquet::column_name(cname);
            reals.push((
                format!("{model}_fraction_{n}"),
                col(&|o| {
                    if o.valid_pixels == 0 {
                        0.0
                    } else {
                        o.counts.get(ci).copied().unwrap_or(0) as f64 / o.valid_pixels as f64
                    }
                }),
            ));
            reals.push((
                format!("{model}_area_m2_{n}"),
                col(&|o| o.counts.get(ci).copied().unwrap_or(0) as f64 * o.pixel_area),
            ));
        }
    }
    let mut cols = vec![
        Column::Text("region".into(), region_col),
        Column::Text("date".into(), date_col),
        Column::Text("items".into(), items_col),
    ];
    cols.extend(reals.into_iter().map(|(n, v)| Column::Real(n, v)));
    write_geoparquet(&c.out.join("timeseries.parquet"), &cols, &wkb, projjson)?;
    Ok(())
}

/// Appends `model`'s change columns (compared and changed shares, mean distance) and, for a
/// value or embedding map, its per-band means (and, for values, standard deviations); whether
/// it is such a map.
fn change_and_band_columns<'a>(
    model: &String,
    classes: &[&str],
    keys: &[&(String, String)],
    pick: &dyn Fn(&(String, String)) -> Option<&'a crate::monitor::state::Observation>,
    changes: &BTreeMap<(String, String, String), crate::monitor::state::Change>,
    obs: &[crate::monitor::state::Observation],
    reals: &mut Vec<(String, Vec<Option<f64>>)>,
) -> bool {
    if changes.keys().any(|k| &k.2 == model) {
        let change = |k: &(String, String)| changes.get(&(k.0.clone(), k.1.clone(), model.clone()));
        reals.push((
            format!("{model}_compared_share"),
            keys.iter()
                .map(|k| {
                    let (o, ch) = (pick(k)?, change(k)?);
                    Some(if o.region_pixels == 0 {
                        0.0
                    } else {
                        ch.compared as f64 / o.region_pixels as f64
                    })
                })
                .collect(),
        ));
        reals.push((
            format!("{model}_changed_share"),
            keys.iter()
                .map(|k| {
                    let ch = change(k)?;
                    Some(if ch.compared == 0 {
                        0.0
                    } else {
                        ch.changed as f64 / ch.compared as f64
                    })
                })
                .collect(),
        ));
    }
    if changes
        .iter()
        .any(|(k, ch)| &k.2 == model && ch.mean_distance.is_some())
    {
        reals.push((
            format!("{model}_mean_distance"),
            keys.iter()
                .map(|k| {
                    changes
                        .get(&(k.0.clone(), k.1.clone(), model.clone()))
                        .and_then(|ch| ch.mean_distance)
                })
                .collect(),
        ));
    }
    // A value or embedding map: per band its mean (and, for values, standard deviation).
    let continuous = obs.iter().any(|o| &o.model == model && !o.means.is_empty());
    if continuous {
        let embeddings = classes.iter().all(|n| n.starts_with("embedding_"));
        for (bi, bname) in classes.iter().enumerate() {
            let n = crate::output::parquet::column_name(bname);
            let stat = |v: &Vec<f64>| v.get(bi).copied().filter(|x| x.is_finite());
            reals.push((
                format!("{model}_mean_{n}"),
                keys.iter()
                    .map(|k| pick(k).and_then(|o| stat(&o.means)))
                    .collect(),
            ));
            if !embeddings {
                reals.push((
                    format!("{model}_std_{n}"),
                    keys.iter()
                        .map(|k| pick(k).and_then(|o| stat(&o.stds)))
                        .collect(),
                ));
            }
        }
        return true;
    }
    false
}

fn alerts(
    c: &Config,
    list: &[Alert],
    regions: &BTreeMap<String, (Vec<u8>, String)>,
    projjson: &str,
) -> Result<(), crate::Error> {
    let text = |f: &dyn Fn(&Alert) -> String| list.iter().map(f).collect::<Vec<_>>();
    let cols = vec![
        Column::Text("key".into(), text(&|a| a.key.clone())),
        Column::Text("region".into(), text(&|a| a.region.clone())),
        Column::Text("date".into(), text(&|a| a.date.clone())),
        Column::Text("rule".into(), text(&|a| a.rule.clone())),
        Column::Text("model".into(), text(&|a| a.model.clone())),
        Column::Real("value".into(), list.iter().map(|a| Some(a.value)).collect()),
        Column::Real(
            "threshold".into(),
            list.iter().map(|a| Some(a.threshold)).collect(),
        ),
        Column::Text("message".into(), text(&|a| a.message.clone())),
        Column::Text(
            "quicklook".into(),
            text(&|a| a.quicklook.clone().unwrap_or_default()),
        ),
    ];
    // The changed area for change rules, the region otherwise.
    let wkb: Vec<Vec<u8>> = list
        .iter()
        .map(|a| {
            a.geometry.clone().unwrap_or_else(|| {
                regions
                    .get(&a.region)
                    .map(|(w, _)| w.clone())
                    .unwrap_or_default()
            })
        })
        .collect();
    write_geoparquet(&c.out.join("alerts.parquet"), &cols, &wkb, projjson)?;
    // GeoJSON in longitude / latitude.
    let mut src =
        gdal::spatial_ref::SpatialRef::from_definition(projjson).map_err(|e| gerr(c, e))?;
    src.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let mut ll = gdal::spatial_ref::SpatialRef::from_epsg(4326).map_err(|e| gerr(c, e))?;
    ll.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let mut features = Vec::new();
    for (a, w) in list.iter().zip(&wkb) {
        let geometry = if w.is_empty() {
            serde_json::Value::Null
        } else {
            let mut g = gdal::vector::Geometry::from_wkb(w).map_err(|e| gerr(c, e))?;
            g.set_spatial_ref(src.clone());
            let g = g.transform_to(&ll).map_err(|e| gerr(c, e))?;
            serde_json::from_str(&g.json().map_err(|e| gerr(c, e))?).unwrap_or_default()
        };
        features.push(serde_json::json!({"type": "Feature", "id": a.key, "geometry": geometry, "properties": alert_json(a)}));
    }
    let doc = serde_json::json!({"type": "FeatureCollection", "name": format!("{} alerts", c.name), "features": features});
    let path = c.out.join("alerts.geojson");
    crate::util::write_atomic(
        &path,
        (serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n").as_bytes(),
    )
    .map_err(|source| OutputError::Io { path, source })?;
    Ok(())
}

fn gerr(c: &Config, e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Source {
        what: format!("alert geometry for {}: {e}", c.out.display()),
    }
}

/// POSTs every due alert of the outbox to `url` (header `Idempotency-Key`); returns the
/// deliveries that succeeded and failed (failed ones are retried on later cycles).
pub fn deliver(
    state: &State,
    url: &str,
    token: Option<&str>,
) -> Result<(usize, usize), MonitorError> {
    let (mut ok, mut failed) = (0, 0);
    for (key, payload, _) in state.due()? {
        let body: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        let result = crate::monitor::http::request(
            "POST",
            url,
            Some(&body),
            token,
            &[("Idempotency-Key", &key)],
        )
        .map(|_| ());
        if let Err(e) = &result {
            tracing::warn!(alert = %key, "webhook delivery failed, retried on a later cycle: {e}");
            failed += 1;
        } else {
            ok += 1;
        }
        state.delivered(&key, result)?;
    }
    Ok((ok, failed))
}
