//! Ai2's OlmoEarth task models (issue 15): the committed Nano stand-ins of three published
//! configurations (mangrove: class map, lfmc: per-pixel regression with Sentinel-1,
//! forest_loss_driver: one label per event from pre/post image groups), exported by
//! models/olmoearth/rslearn_export.py with rslearn's own classes, run end to end on the real
//! WorldCereal and Slovenia series; their temporal contracts refused and relaxed; their licence
//! carried into the summary, the STAC Item and `eoinfer models`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn model(name: &str) -> PathBuf {
    root().join("models/olmoearth").join(format!("{name}.json"))
}

/// The golden output of a committed model (PyTorch's, little-endian float32).
fn golden(name: &str) -> (Vec<usize>, Vec<f32>) {
    let dir = root().join("models/olmoearth/golden").join(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let f = &meta["arrays"]["features"];
    let shape = f["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    (shape, read_f32_file(&dir.join(f["file"].as_str().unwrap())))
}

/// A GeoJSON of square events (EPSG:32631) centred on the pixels `centres` (column, row) of
/// the WorldCereal grid, with `event_date` when given.
fn events_file(dir: &Path, centres: &[(f64, f64)], date: Option<&str>) -> PathBuf {
    let features: Vec<serde_json::Value> = centres
        .iter()
        .map(|&(c, r)| {
            let (x, y) = (664_000.0 + c * 10.0, 5_612_120.0 - r * 10.0);
            let ring = [
                [x - 60.0, y - 60.0],
                [x + 60.0, y - 60.0],
                [x + 60.0, y + 60.0],
                [x - 60.0, y + 60.0],
                [x - 60.0, y - 60.0],
            ];
            let mut props = serde_json::json!({});
            if let Some(d) = date {
                props["event_date"] = d.into();
            }
            serde_json::json!({"type": "Feature", "properties": props,
                "geometry": {"type": "Polygon", "coordinates": [ring]}})
        })
        .collect();
    let doc = serde_json::json!({"type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32631"}},
        "features": features});
    let path = dir.join("events.geojson");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

#[test]
fn events_are_labelled_in_a_window_centred_on_each_polygon() {
    // The committed classification Nano (32 px windows, no temporal contract): an event
    // centred on pixel (16, 16) is the golden window x 0..32, y 0..32 of all twelve months.
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("scenes");
    std::fs::create_dir(&scenes).unwrap();
    worldcereal_s2(&scenes, 100, &ALL_MONTHS);
    let events = events_file(dir.path(), &[(16.0, 16.0), (50.0, 60.0)], None);
    let out = dir.path().join("out");
    let o = eoinfer([
        "predict",
        "--model",
        model("olmoearth-v1-nano-cls").to_str().unwrap(),
        "--scene",
        scenes.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        // December and January of WorldCereal hold 65535 (saturated) everywhere.
        "--accept-out-of-range",
        "--json",
    ]);
    ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["labelled"].as_array().unwrap().len(), 2);
    let parquet = out.join("scenes.events.parquet");
    let rows = parquet_json_rows(&parquet);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["window_x"], 0);
    assert_eq!(rows[0]["window_y"], 0);
    assert_eq!(rows[1]["window_x"], 34);
    assert_eq!(rows[1]["window_y"], 44);
    assert_eq!(
        rows[0]["all_dates"].as_str().unwrap().split(',').count(),
        12
    );
    // PyTorch's logits of the golden window, softmaxed, against the event's scores.
    let (shape, logits) = golden("olmoearth-v1-nano-cls");
    assert_eq!(shape, [1, 4]);
    let m = logits.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| f64::from(l - m).exp()).collect();
    let total: f64 = e.iter().sum();
    let names = ["cropland", "grassland", "forest", "water"];
    let mut max_abs = 0.0_f64;
    for (k, n) in names.iter().enumerate() {
        let got = rows[0][&format!("score_{n}")].as_f64().unwrap();
        max_abs = max_abs.max((got - e[k] / total).abs());
    }
    println!("event window vs PyTorch: max abs {max_abs:.2e}");
    assert!(max_abs <= 1e-4, "max abs {max_abs}");
    let geo = geo_metadata(&parquet);
    assert_eq!(geo["columns"]["geometry"]["geometry_types"][0], "Polygon");
    assert!(files_in(&out).iter().all(|f| !f.contains(".partial")));
    // A polygon whose window leaves the grid is refused, naming it.
    let events = events_file(dir.path(), &[(5.0, 50.0)], None);
    let o = eoinfer([
        "predict",
        "--model",
        model("olmoearth-v1-nano-cls").to_str().unwrap(),
        "--scene",
        scenes.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--out",
        dir.path().join("out2").to_str().unwrap(),
        "--accept-out-of-range",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("event 0") && err.contains("not inside"),
        "{err}"
    );
}

fn predict(args: &[&str]) -> std::process::Output {
    let mut all = vec!["predict"];
    all.extend_from_slice(args);
    eoinfer(all)
}

/// The licence and attribution every output of a task model carries.
fn assert_licence(summary: &serde_json::Value, item: &Path) {
    assert_eq!(
        summary["model"]["license"],
        "LicenseRef-OlmoEarth-Artifact-License"
    );
    let attribution = summary["model"]["attribution"].as_str().unwrap();
    assert!(attribution.contains("Ai2"), "{attribution}");
    let item: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(item).unwrap()).unwrap();
    let text = item.to_string();
    assert!(
        text.contains("LicenseRef-OlmoEarth-Artifact-License") && text.contains("Ai2"),
        "{text}"
    );
}

#[test]
fn mangrove_style_class_map_labels_two_pixel_windows_with_the_configured_classes() {
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("months");
    std::fs::create_dir(&scenes).unwrap();
    worldcereal_s2(&scenes, 100, &ALL_MONTHS);
    let out = dir.path().join("out");
    let o = predict(&[
        "--model",
        model("task-mangrove-nano").to_str().unwrap(),
        "--scene",
        scenes.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--accept-out-of-range",
        "--batch-size",
        "256",
        "--json",
    ]);
    ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_licence(&summary, &out.join("months.item.json"));
    let contract = summary["model"]["temporal_contract"].as_str().unwrap();
    assert!(
        contract.contains("12 time steps, one per 30 days") && contract.contains("newest first"),
        "{contract}"
    );
    let cog = out.join("months.classes.tif");
    let info = gdalinfo(&cog);
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG");
    let band = &info["bands"][0];
    let names: Vec<&str> = band["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(&names[..4], ["invalid", "mangrove", "water", "other"]);
    // Colours from olmoearth_run.yaml: mangrove (148, 235, 99).
    assert_eq!(
        band["colorTable"]["entries"][1],
        serde_json::json!([148, 235, 99, 255])
    );
    // The decoder pools over its 2 x 2 px window: every window has one label.
    let (classes, w, h) = read_u8(&cog, 1);
    assert_eq!((w, h), (100, 100));
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let c = classes[y * w + x];
            assert!(c < 4, "class {c} at {x}, {y}");
            for (dx, dy) in [(1, 0), (0, 1), (1, 1)] {
                assert_eq!(classes[(y + dy) * w + x + dx], c, "window at {x}, {y}");
            }
        }
    }
    assert_stac_valid(&out);
}

#[test]
fn a_series_that_breaks_the_temporal_contract_is_refused_with_what_the_model_needs() {
    // Five dates of the Slovenia series for a model trained on twelve 30-day mosaics.
    let scene = shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100");
    let out = tempfile::tempdir().unwrap();
    let o = predict(&[
        "--model",
        model("task-mangrove-nano").to_str().unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--relax-temporal-contract",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("temporal contract")
            && err.contains("needs 12 time steps, one per 30 days")
            && err.contains("has 5 (2015-07-11"),
        "{err}"
    );
    assert!(
        files_in(out.path()).is_empty(),
        "{:?}",
        files_in(out.path())
    );
}

#[test]
fn lfmc_style_regression_of_sentinel_2_and_1_matches_rslearn_once_the_period_is_relaxed() {
    // 12 monthly composites for a model of 12 fortnightly mosaics: refused, then run with
    // --relax-temporal-contract, which the summary records.
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("months");
    std::fs::create_dir(&scenes).unwrap();
    worldcereal_s2(&scenes, 32, &ALL_MONTHS);
    worldcereal_s1(&scenes, 32, &ALL_MONTHS, false);
    let out = dir.path().join("out");
    let args = |relax: bool| {
        let mut a = vec![
            "--model".to_string(),
            model("task-lfmc-nano").to_str().unwrap().to_string(),
            "--scene".into(),
            scenes.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--accept-out-of-range".into(),
            "--json".into(),
        ];
        if relax {
            a.push("--relax-temporal-contract".into());
        }
        a
    };
    let o = eoinfer(std::iter::once("predict".to_string()).chain(args(false)));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("14-day periods") && err.contains("--relax-temporal-contract"),
        "{err}"
    );
    let o = eoinfer(std::iter::once("predict".to_string()).chain(args(true)));
    ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_licence(&summary, &out.join("months.item.json"));
    let warnings = summary["warnings"].to_string();
    assert!(warnings.contains("temporal contract relaxed"), "{warnings}");
    let values = out.join("months.values.tif");
    let info = gdalinfo(&values);
    let band = &info["bands"][0];
    assert_eq!(band["unit"], "%");
    assert_eq!(band["description"], "lfmc");
    // One 32 px tile: the values are the model's on the golden window (fed newest first).
    let got = &read_f32_bands(&values)[0];
    let (shape, reference) = golden("task-lfmc-nano");
    assert_eq!(shape, [1, 1, 32, 32]);
    let max_abs = got
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0_f32, f32::max);
    println!("lfmc values vs rslearn's PyTorch forward: max abs {max_abs:.2e}");
    assert!(max_abs <= 1e-4, "max abs {max_abs}");
    // The preview: the values on the ramp of their QGIS style over the newest month's natural
    // colour, and the ramp's ends in the legend.
    let item = read_json(&out.join("months.item.json"));
    let thumb = item["assets"]["thumbnail"]["title"].as_str().unwrap();
    assert!(
        thumb.contains("lfmc over the natural colour (red, green, blue) of 20"),
        "{thumb}"
    );
    let png = image::open(out.join("months.preview.png"))
        .unwrap()
        .to_rgba8();
    assert_eq!(png.dimensions(), (1024, 1024));
    for end in [[0x44, 0x01, 0x54, 255], [0xfd, 0xe7, 0x25, 255]] {
        assert!(png.pixels().any(|p| p.0 == end), "ramp end {end:?}");
    }
    assert_stac_valid(&out);
}

#[test]
fn forest_loss_driver_labels_each_event_from_its_pre_and_post_images() {
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("months");
    std::fs::create_dir(&scenes).unwrap();
    // Nov..Feb and Jul..Oct: the golden window's images.
    worldcereal_s2(&scenes, 100, &[0, 1, 2, 3, 8, 9, 10, 11]);
    let events = events_file(
        dir.path(),
        &[(32.0, 32.0), (60.0, 50.0)],
        Some("2021-04-15"),
    );
    let out = dir.path().join("out");
    let manifest = model("task-forest-loss-driver-nano");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "--model",
            manifest.to_str().unwrap(),
            "--scene",
            scenes.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--accept-out-of-range",
            "--json",
        ];
        a.extend_from_slice(extra);
        predict(&a.iter().map(|s| &**s).collect::<Vec<_>>())
    };
    // Without events: the model classifies events.
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--events"));
    let ev = events.to_str().unwrap();
    // 120 to 300 days before 2021-04-15 holds only November and December.
    let o = run(&["--events", ev]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`pre` needs 4 images from -300 to -120 days") && err.contains("has 2 there"),
        "{err}"
    );
    let o = run(&["--events", ev, "--relax-temporal-contract"]);
    ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["model"]["license"],
        "LicenseRef-OlmoEarth-Artifact-License"
    );
    assert!(
        summary["warnings"]
            .to_string()
            .contains("temporal contract relaxed")
    );
    let rows = parquet_json_rows(&out.join("months.events.parquet"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["event_date"], "2021-04-15");
    assert_eq!(
        rows[0]["pre_dates"],
        "2020-11-01,2020-12-01,2021-01-01,2021-02-01"
    );
    assert_eq!(
        rows[0]["post_dates"],
        "2021-07-01,2021-08-01,2021-09-01,2021-10-01"
    );
    assert_eq!(
        (rows[0]["window_x"].clone(), rows[0]["window_y"].clone()),
        (0.into(), 0.into())
    );
    let (shape, reference) = golden("task-forest-loss-driver-nano");
    assert_eq!(shape, [1, 10]);
    let names = [
        "agriculture",
        "mining",
        "airstrip",
        "road",
        "logging",
        "burned",
        "landslide",
        "hurricane",
        "river",
        "none",
    ];
    let mut max_abs = 0.0_f64;
    let mut total = 0.0;
    for (k, n) in names.iter().enumerate() {
        let got = rows[0][&format!("score_{n}")].as_f64().unwrap();
        total += got;
        max_abs = max_abs.max((got - f64::from(reference[k])).abs());
    }
    println!("forest loss event vs rslearn's PyTorch forward: max abs {max_abs:.2e}");
    assert!(max_abs <= 1e-4, "max abs {max_abs}");
    assert!((total - 1.0).abs() < 1e-5);
    let best = names
        .iter()
        .position(|n| *n == rows[0]["class_name"].as_str().unwrap());
    assert_eq!(best, Some(rows[0]["class"].as_i64().unwrap() as usize));
}

#[test]
fn committed_task_models_match_rslearn_on_the_golden_windows_and_list_their_licence() {
    for name in [
        "task-mangrove-nano",
        "task-lfmc-nano",
        "task-forest-loss-driver-nano",
    ] {
        let o = eoinfer([
            "model",
            "check",
            "--model",
            model(name).to_str().unwrap(),
            "--golden",
            root()
                .join("models/olmoearth/golden")
                .join(name)
                .to_str()
                .unwrap(),
        ]);
        ok(&o);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let max_abs = report["golden"]["max_abs"].as_f64().unwrap();
        println!("{name}: max abs {max_abs:.2e} (ONNX Runtime from Rust vs rslearn's PyTorch)");
        assert!(max_abs <= 1e-4, "{name}: {max_abs}");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model(name)).unwrap()).unwrap();
        let description = doc["properties"]["description"].as_str().unwrap();
        assert!(description.contains("NOT Ai2's model"), "{description}");
    }
    let o = eoinfer(["models"]);
    let text = ok_stdout(&o);
    let line = text
        .lines()
        .find(|l| l.starts_with("task-lfmc-nano"))
        .unwrap();
    assert!(
        line.contains("LicenseRef-OlmoEarth-Artifact-License"),
        "{line}"
    );
}
