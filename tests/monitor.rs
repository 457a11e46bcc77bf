//! `eoinfer monitor`: cycles over a folder of real scenes (the eo-learn Slovenia series) with
//! s2cloudless, state and idempotency, the time series and alerts read by DuckDB, the lock,
//! failed acquisitions, and webhook delivery to a listener on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DATES: [&str; 5] = ["20150711", "20150731", "20150820", "20150830", "20150909"];

fn slovenia() -> PathBuf {
    shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100")
}

/// A monitor folder: two regions (the west and east halves of the Slovenia scene, in its UTM
/// zone), an empty `incoming/` and a config (s2cloudless at 10 m, the scene's own grid).
fn setup(dir: &Path, extra: &str) -> PathBuf {
    setup_with(dir, "", extra)
}

/// [`setup`] with top-level keys `top` and trailing tables `extra`.
fn setup_with(dir: &Path, top: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("incoming")).unwrap();
    std::fs::write(dir.join("regions.geojson"), SLOVENIA_REGIONS).unwrap();
    let config = dir.join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            r#"name = "slovenia"
out = "out"
{top}
[regions]
path = "regions.geojson"
id_column = "id"
[source]
type = "folder"
path = "incoming"
pattern = "*_13band.tif"
settle_seconds = 0.2
[[models]]
name = "clouds"
manifest = "{}"
resolution = 10
[[rules]]
type = "cloud-free-share-below"
model = "clouds"
threshold = 0.5
{extra}"#,
            manifest("s2cloudless.json").display()
        ),
    )
    .unwrap();
    config
}

fn add(dir: &Path, date: &str) {
    let name = format!("S2_L1C_{date}_13band.tif");
    std::fs::copy(slovenia().join(&name), dir.join("incoming").join(&name)).unwrap();
}

fn cycle(config: &Path) -> (Output, serde_json::Value) {
    let o = eoinfer([
        "monitor",
        "run",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (o, v)
}

fn processed(v: &serde_json::Value) -> usize {
    v["processed"].as_array().map_or(0, Vec::len)
}

/// DuckDB over a GeoParquet file: rows of `sql` (with `{f}` the file) as JSON.
fn duckdb(file: &Path, sql: &str) -> serde_json::Value {
    let q = sql.replace("{f}", &format!("'{}'", file.display()));
    let script = format!(
        "import duckdb, json, geopandas\ngeopandas.read_parquet({:?})\nprint(json.dumps(duckdb.sql({q:?}).fetchall()))",
        file.display().to_string()
    );
    let o = Command::new(reference_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Per date and region, whether Sentinel Hub's own CLM (in the `*_CLP_CLM.tif` beside the
/// scenes) calls less than half of the region clear: the dates the rule must alert on.
fn cloudy_by_clm() -> Vec<(String, String)> {
    let script = r#"
import subprocess, sys, tempfile, os, json
import numpy as np, tifffile
out = []
for d in sys.argv[2:]:
    src = os.path.join(sys.argv[1], f"S2_L1C_{d}_CLP_CLM.tif")
    with tempfile.TemporaryDirectory() as t:
        p = os.path.join(t, "p.tif")
        subprocess.run(["gdal_translate", "-q", "-co", "COMPRESS=NONE", "-co", "INTERLEAVE=BAND", src, p], check=True)
        clm = tifffile.imread(p)[1]
    # The regions' halves on the scene's 10 m grid (x0 465181.05, ~9.995 m): x < 465680 is west.
    split = int(round((465680 - 465181.052) / 9.994792220071540))
    for name, part in (("west", clm[:, :split]), ("east", clm[:, split:])):
        if (part < 0.5).mean() < 0.5:
            out.append([f"{d[:4]}-{d[4:6]}-{d[6:]}", name])
print(json.dumps(out))
"#;
    let o = Command::new(root().join(".venv-s2cloudless/bin/python"))
        .arg("-c")
        .arg(script)
        .arg(slovenia())
        .args(DATES)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<(String, String)> = serde_json::from_slice(&o.stdout).unwrap();
    let mut v = v;
    v.sort();
    v
}

#[test]
fn cycles_process_exactly_the_new_acquisitions_and_alert_on_the_cloudy_dates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = setup(dir, "");
    for d in &DATES[..3] {
        add(dir, d);
    }
    // Cycle 1: 3 acquisitions; cycle 2: nothing new; cycle 3: the 2 added.
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 3, "{v}");
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 0, "{v}");
    assert_eq!(v["alerts_new"], 0);
    let series = dir.join("out/timeseries.parquet");
    let before = std::fs::read(&series).unwrap();
    for d in &DATES[3..] {
        add(dir, d);
    }
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 2, "{v}");
    assert_ne!(std::fs::read(&series).unwrap(), before);

    // One row per region per date, readable by DuckDB and geopandas.
    let rows = duckdb(
        &series,
        "select region, date from {f} order by region, date",
    );
    assert_eq!(rows.as_array().unwrap().len(), 10, "{rows}");
    let share = duckdb(
        &series,
        "select min(clouds_valid_share), max(clouds_valid_share) from {f}",
    );
    assert_eq!(share, serde_json::json!([[1.0, 1.0]]));

    // Alerts on exactly the dates Sentinel Hub's CLM calls cloudy for each region.
    let expected = cloudy_by_clm();
    assert!(!expected.is_empty());
    let alerts = duckdb(
        &dir.join("out/alerts.parquet"),
        "select date, region from {f} order by date, region",
    );
    let got: Vec<(String, String)> = serde_json::from_value(alerts).unwrap();
    assert_eq!(got, expected);
    let geojson: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/alerts.geojson")).unwrap())
            .unwrap();
    assert_eq!(
        geojson["features"].as_array().unwrap().len(),
        expected.len()
    );

    // A rerun changes nothing: no new alert, the same files.
    let alerts_before = std::fs::read(dir.join("out/alerts.geojson")).unwrap();
    let series_before = std::fs::read(&series).unwrap();
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!((processed(&v), v["alerts_new"].as_u64()), (0, Some(0)));
    assert_eq!(
        std::fs::read(dir.join("out/alerts.geojson")).unwrap(),
        alerts_before
    );
    assert_eq!(std::fs::read(&series).unwrap(), series_before);

    // A replaced file (new size and time) is processed again, its rows replaced.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let name = format!("S2_L1C_{}_13band.tif", DATES[0]);
    let f = dir.join("incoming").join(&name);
    std::fs::copy(slovenia().join(&name), &f).unwrap();
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 1, "{v}");
    let rows = duckdb(&series, "select count(*) from {f}");
    assert_eq!(rows, serde_json::json!([[10]]));

    let status = ok_stdout(&eoinfer([
        "monitor",
        "status",
        "--config",
        config.to_str().unwrap(),
    ]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["items_done"], 5);
    assert_eq!(status["dates"], 5);
    // Every run's Item and catalog under the monitor's output folder is valid.
    let report = assert_stac_valid(&dir.join("out"));
    let items = report["documents"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".item.json"))
        .count();
    assert!(items >= 5, "{items} Items validated: {report}");
}

#[test]
fn an_overlapping_cycle_exits_0_saying_it_is_running() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), "");
    add(tmp.path(), DATES[0]);
    std::fs::create_dir_all(tmp.path().join("out")).unwrap();
    // Another cycle holds the lock (flock(1) takes the same kind of lock as eoinfer).
    let mut holder = Command::new("flock")
        .args(["-x", "--no-fork"])
        .arg(tmp.path().join("out/.monitor.lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (o, v) = cycle(&config);
    let err = ok(&o);
    assert!(err.contains("already running"), "{err}");
    assert_eq!(v["already_running"], true);
    assert_eq!(processed(&v), 0);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 1);
}

#[test]
fn a_corrupt_acquisition_fails_alone_with_its_reason_and_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = setup_with(dir, "max_attempts = 2", "");
    add(dir, DATES[0]);
    // A truncated copy of another date.
    let name = format!("S2_L1C_{}_13band.tif", DATES[1]);
    let bytes = std::fs::read(slovenia().join(&name)).unwrap();
    std::fs::write(dir.join("incoming").join(&name), &bytes[..bytes.len() / 3]).unwrap();
    let (o, v) = cycle(&config);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(processed(&v), 1, "{v}");
    let failed = v["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0][0], name.as_str());
    assert!(failed[0][1].as_str().unwrap().contains(&name), "{v}");
    // Retried on the next cycle (attempt 2 of 2), then left alone.
    let (o, v) = cycle(&config);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(v["failed"].as_array().unwrap().len(), 1);
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(v["failed"].as_array().unwrap().len(), 0);
    let status = ok_stdout(&eoinfer([
        "monitor",
        "status",
        "--config",
        config.to_str().unwrap(),
    ]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["items_failed"][0]["attempts"], 2);
}

#[test]
fn alerts_reach_the_webhook_once_each_with_their_key_and_failed_posts_are_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("hook/received.jsonl");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let script = root().join("tests/reference/webhook_listener.py");
    let server = Server::python(dir, |port| {
        vec![
            script.display().to_string(),
            port.to_string(),
            log.display().to_string(),
        ]
    });
    let config = setup(
        dir,
        &format!(
            "[alerts]\nwebhook_url = \"http://127.0.0.1:{}/alerts\"\nwebhook_token_env = \"EOINFER_TEST_TOKEN\"\n",
            server.1
        ),
    );
    for d in &DATES[..3] {
        add(dir, d);
    }
    // The receiver is down at first: the alerts wait in the outbox.
    std::fs::write(dir.join("hook/FAIL"), "").unwrap();
    let run = |config: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_eoinfer"))
            .args(["monitor", "run", "--json", "--config"])
            .arg(config)
            .env("EOINFER_TEST_TOKEN", "s3cret")
            .env_remove("ORT_DYLIB_PATH")
            .current_dir(root())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o, v)
    };
    let (o, v) = run(&config);
    let err = ok(&o);
    assert!(!err.contains("s3cret"), "the token is never logged");
    let alerts = v["alerts_new"].as_u64().unwrap();
    assert!(alerts > 0);
    assert_eq!(v["delivery_failed"].as_u64(), Some(alerts));
    assert!(!log.exists());
    // Back up: the due alerts are delivered (their back-off is over once it is reset here,
    // as a later cycle would find it).
    std::fs::remove_file(dir.join("hook/FAIL")).unwrap();
    let db = dir.join("out/state.sqlite");
    let o = Command::new(root().join(".venv-s2cloudless/bin/python"))
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('update outbox set next_try = 0'); c.commit()",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(o.status.success());
    let (o, v) = run(&config);
    ok(&o);
    assert_eq!(v["delivered"].as_u64(), Some(alerts));
    // Once more: nothing is sent again.
    let (o, v) = run(&config);
    ok(&o);
    assert_eq!(v["delivered"].as_u64(), Some(0));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, alerts);
    let mut keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len() as u64, alerts, "each alert key once");
    assert!(
        lines
            .iter()
            .all(|l| l["authorized"] == true && l["body"]["key"] == l["key"])
    );
}

#[test]
fn init_writes_an_example_and_a_bad_config_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("monitor.toml");
    ok(&eoinfer([
        "monitor",
        "init",
        "--config",
        path.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[[models]]") && text.contains("cloud-free-share-below"));
    // It refuses to overwrite.
    let o = eoinfer(["monitor", "init", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // A typo is named.
    let config = setup_with(tmp.path(), "max_atempts = 2", "");
    let (o, _) = cycle(&config);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("max_atempts") && err.contains("monitor.toml"),
        "{err}"
    );
}

#[test]
fn regions_without_unique_ids_are_refused_before_any_row_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), "");
    add(tmp.path(), DATES[0]);
    // Both halves called "west": their rows would merge into one series.
    std::fs::write(
        tmp.path().join("regions.geojson"),
        SLOVENIA_REGIONS.replace(r#""id":"east""#, r#""id":"west""#),
    )
    .unwrap();
    let (o, _) = cycle(&config);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(r#""west""#) && err.contains("unique"), "{err}");
    let status = ok_stdout(&eoinfer([
        "monitor",
        "status",
        "--config",
        config.to_str().unwrap(),
    ]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["items_done"], 0);
    assert_eq!(status["observations"], 0);
}

/// A second model masked by the first, and change rules on both.
const CHANGE_MODELS: &str = r#"
[[models]]
name = "csm"
manifest = "MANIFEST"
resolution = 10
mask = "clouds"
[[rules]]
type = "class-transition"
model = "clouds"
from = ["clear"]
to = ["cloud"]
min_area_m2 = 500
[[rules]]
type = "class-transition"
model = "csm"
[[rules]]
type = "class-fraction-change"
model = "csm"
class = "cloud_shadow"
threshold = 0.0001
"#;

/// Runs `tests/reference/check_change.py` (an independent numpy recomputation) on a model.
fn check_change(out: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new(reference_python())
        .arg(root().join("tests/reference/check_change.py"))
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn change_is_judged_per_pixel_against_its_previous_valid_observation_with_a_cloud_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = CHANGE_MODELS.replace(
        "MANIFEST",
        &manifest("ukis-csmask-6b-l1c.json").display().to_string(),
    );
    let config = setup(dir, &models);
    // Two cycles: the previous valid observations of the second come from the first.
    for d in &DATES[..2] {
        add(dir, d);
    }
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 2, "{v}");
    for d in &DATES[2..] {
        add(dir, d);
    }
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 3, "{v}");
    let out = dir.join("out");

    // Against numpy, from the class maps alone: every change map, every previous-valid map,
    // every region's counts. s2cloudless's "cloud" (1) masks the ukis-csmask map.
    let clouds = check_change(&out, &["clouds"]);
    assert_eq!(clouds["mismatches"], serde_json::json!([]), "{clouds}");
    assert_eq!(clouds["dates"], 5);
    assert!(
        clouds["pixels_changed"].as_u64().unwrap() > 1000,
        "{clouds}"
    );
    let csm = check_change(&out, &["csm", "clouds", "1"]);
    assert_eq!(csm["mismatches"], serde_json::json!([]), "{csm}");
    assert!(csm["pixels_compared"].as_u64().unwrap() > 0, "{csm}");
    assert!(
        csm["pixels_compared"].as_u64().unwrap() < clouds["pixels_compared"].as_u64().unwrap(),
        "the mask leaves pixels out: {csm} {clouds}"
    );

    // The transition alerts: value = changed area, geometry = exactly the changed pixels.
    let script = format!(
        "import geopandas, json\ng = geopandas.read_parquet({:?})\ng = g[(g.rule == 'class-transition') & (g.model == 'clouds')]\nprint(json.dumps([[r.value, round(r.geometry.area, 3), r.quicklook] for r in g.itertuples()]))",
        out.join("alerts.parquet").display().to_string()
    );
    let o = Command::new(reference_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let alerts: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = alerts.as_array().unwrap();
    assert!(!rows.is_empty(), "{alerts}");
    for r in rows {
        assert_eq!(r[0].as_f64().unwrap(), r[1].as_f64().unwrap(), "{r}");
        assert!(r[0].as_f64().unwrap() >= 500.0, "{r}");
        let png = std::fs::read(out.join(r[2].as_str().unwrap())).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // Below the three panels, a legend: text and the swatches of the change colours.
        let img = image::load_from_memory(&png).unwrap().to_rgba8();
        let strip: Vec<[u8; 4]> = (img.height() - 60..img.height())
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x, y).0)
            .collect();
        for c in [[20, 20, 20, 255], [228, 26, 28, 255], [253, 174, 97, 255]] {
            assert!(strip.contains(&c), "legend lacks {c:?}");
        }
    }
    // The changed pixels per region and date, as the state counts them, are the alerts'.
    let expected = duckdb(
        &out.join("timeseries.parquet"),
        "select count(*) from {f} where clouds_changed_share > 0",
    );
    assert!(expected[0][0].as_u64().unwrap() >= rows.len() as u64);
    // The time series carries the change columns.
    let cols = duckdb(
        &out.join("timeseries.parquet"),
        "select min(csm_compared_share) >= 0, max(csm_compared_share) <= 1, count(clouds_changed_share) from {f}",
    );
    assert_eq!(cols, serde_json::json!([[true, true, 10]]));
}

/// A monitor folder with the change rules and a webhook listener (its log in `hook/`).
fn setup_with_listener(dir: &Path) -> (PathBuf, Server, PathBuf) {
    let log = dir.join("hook/received.jsonl");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let script = root().join("tests/reference/webhook_listener.py");
    let server = Server::python(dir, |port| {
        vec![
            script.display().to_string(),
            port.to_string(),
            log.display().to_string(),
        ]
    });
    let models = CHANGE_MODELS.replace(
        "MANIFEST",
        &manifest("ukis-csmask-6b-l1c.json").display().to_string(),
    );
    let config = setup(
        dir,
        &format!(
            "{models}\n[alerts]\nwebhook_url = \"http://127.0.0.1:{}/alerts\"\n",
            server.1
        ),
    );
    (config, server, log)
}

fn spawn_cycle(config: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_eoinfer"))
        .args(["monitor", "run", "--json", "--config"])
        .arg(config)
        .env_remove("ORT_DYLIB_PATH")
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (at most 2 minutes) until `done` holds, the child still running.
fn wait_until(child: &mut std::process::Child, what: &str, done: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !done() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the cycle ended before {what}"
        );
        assert!(t0.elapsed().as_secs() < 120, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The state's tables and the time series and alert files, with the folder's own path and
/// the processing times taken out: what two runs of the same history must agree on.
fn final_state(dir: &Path) -> serde_json::Value {
    let out = dir.join("out");
    let script = r#"
import sqlite3, sys, json, duckdb, re
out, d = sys.argv[1], sys.argv[2]
# The run folders are named by the acquisitions' ids and file times (which differ between two
# copies of the same history): compared without.
norm = lambda v: re.sub(r"runs/([0-9-]+)/[0-9a-f]{12}/", r"runs/\1/RUN/", str(v).replace(d, "DIR"))
c = sqlite3.connect(out + "/state.sqlite")
tables = {}
for t, cols in [("items", "id, date, scene, status, attempts, error"),
                ("observations", "*"), ("changes", "*"), ("regions", "region, hex(wkb)"),
                ("alerts", "key, region, date, rule, model, value, threshold, message, hex(geometry), quicklook"),
                ("outbox", "key, payload, delivered")]:
    tables[t] = [[norm(v) for v in r] for r in c.execute(f"SELECT {cols} FROM {t} ORDER BY 1, 2")]
for f in ["timeseries", "alerts"]:
    tables[f + ".parquet"] = [[str(v) for v in r] for r in duckdb.sql(f"SELECT * FROM '{out}/{f}.parquet' ORDER BY 1, 2, 3").fetchall()]
print(json.dumps(tables))
"#;
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(&out)
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn received_keys(log: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_cycle_killed_mid_model_or_between_commit_and_post_reruns_to_the_same_state() {
    // The uninterrupted history: 3 dates, then 2.
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let (config_a, _server_a, log_a) = setup_with_listener(&a);
    for d in &DATES[..3] {
        add(&a, d);
    }
    ok(&cycle(&config_a).0);
    for d in &DATES[3..] {
        add(&a, d);
    }
    ok(&cycle(&config_a).0);
    let expected = final_state(&a);
    let expected_keys = received_keys(&log_a);
    assert!(!expected_keys.is_empty());

    // The same history, cycle 3 killed twice.
    let b = tmp.path().join("b");
    let (config_b, _server_b, log_b) = setup_with_listener(&b);
    for d in &DATES[..3] {
        add(&b, d);
    }
    ok(&cycle(&config_b).0);
    for d in &DATES[3..] {
        add(&b, d);
    }
    // 1. kill -9 while the models run on the first new date.
    let mut child = spawn_cycle(&config_b);
    let runs = b.join("out/runs/2015-08-30");
    wait_until(&mut child, "the first new date's run", || {
        std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some()))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // 2. The rerun commits both dates, then blocks posting an alert to the listener (which
    //    holds it unread): kill -9 there, between the commit and the delivery.
    std::fs::write(b.join("hook/HOLD"), "").unwrap();
    let mut child = spawn_cycle(&config_b);
    wait_until(&mut child, "the webhook POST", || {
        b.join("hook/HELD").exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(b.join("hook/HOLD")).unwrap();
    // 3. The next cycle processes nothing new and delivers what was left.
    let (o, v) = cycle(&config_b);
    ok(&o);
    assert_eq!(processed(&v), 0, "{v}");
    assert!(v["delivered"].as_u64().unwrap() > 0, "{v}");

    let got = final_state(&b);
    for (table, rows) in expected.as_object().unwrap() {
        assert_eq!(&got[table], rows, "table {table} differs");
    }
    assert_eq!(received_keys(&log_b), expected_keys, "each alert key once");
}

#[test]
fn an_embedding_model_gets_mean_embeddings_and_a_cosine_change_against_each_patch_s_previous_valid_one()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = format!(
        r#"
[[models]]
name = "oe"
manifest = "{}"
resolution = 10
mask = "clouds"
[[rules]]
type = "embedding-change"
model = "oe"
threshold = 0.07
"#,
        root()
            .join("models/olmoearth/olmoearth-v1-nano.json")
            .display()
    );
    let config = setup(dir, &models);
    for d in &DATES {
        add(dir, d);
    }
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 5, "{v}");
    let out = dir.join("out");

    // Against numpy, from the embedding maps and s2cloudless's masks alone.
    let check = Command::new(reference_python())
        .arg(root().join("tests/reference/check_embchange.py"))
        .arg(&out)
        .args(["oe", "0.07", "clouds", "1"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(s["mismatches"], serde_json::json!([]), "{s}");
    assert_eq!(s["dates"], 5);
    let (compared, changed) = (
        s["patches_compared"].as_u64().unwrap(),
        s["patches_changed"].as_u64().unwrap(),
    );
    assert!(0 < changed && changed < compared, "{s}");

    // The two cloudy dates compare nothing (s2cloudless masks every patch); the clear ones do.
    let rows = duckdb(
        &out.join("timeseries.parquet"),
        "select date, min(oe_compared_share), max(oe_compared_share), count(oe_mean_distance), count(oe_mean_embedding_0), count(oe_mean_embedding_127) from {f} group by date order by date",
    );
    assert_eq!(
        rows,
        serde_json::json!([
            ["2015-07-11", 0.0, 0.0, 0, 2, 2],
            ["2015-07-31", 0.0, 0.0, 0, 2, 2],
            ["2015-08-20", 0.0, 0.0, 0, 2, 2],
            ["2015-08-30", 1.0, 1.0, 2, 2, 2],
            ["2015-09-09", 1.0, 1.0, 2, 2, 2]
        ])
    );
    // The alerts: the area of the changed patches, their outline, a quicklook.
    let script = format!(
        "import geopandas, json\ng = geopandas.read_parquet({:?})\nprint(json.dumps([[r.rule, r.value, round(r.geometry.area, 3), r.quicklook] for r in g.itertuples()]))",
        out.join("alerts.parquet").display().to_string()
    );
    let o = Command::new(reference_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let alerts: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let alerts = alerts.as_array().unwrap();
    assert!(!alerts.is_empty());
    for a in alerts.iter().filter(|a| a[0] == "embedding-change") {
        assert_eq!(a[1].as_f64().unwrap(), a[2].as_f64().unwrap(), "{a}");
        let png = std::fs::read(out.join(a[3].as_str().unwrap())).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

#[test]
fn change_against_a_baseline_period_compares_every_date_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = setup_with(
        dir,
        r#"change_baseline = { start = "2015-07-01", end = "2015-07-31" }"#,
        r#"
[[rules]]
type = "class-transition"
model = "clouds"
"#,
    );
    for d in &DATES {
        add(dir, d);
    }
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 5, "{v}");
    let out = dir.join("out");
    let check = Command::new(reference_python())
        .arg(root().join("tests/reference/check_change.py"))
        .arg(&out)
        .arg("clouds")
        .env("BASELINE", "2015-07-01,2015-07-31")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(s["mismatches"], serde_json::json!([]), "{s}");
    // The later dates take their previous classes from the baseline period only.
    let used = duckdb_state(
        &out,
        "SELECT DISTINCT date, dates_used FROM changes WHERE date > '2015-07-31' ORDER BY date",
    );
    for row in used.as_array().unwrap() {
        let d: Vec<String> = serde_json::from_str(row[1].as_str().unwrap()).unwrap();
        assert!(d.iter().all(|x| x.as_str() <= "2015-07-31"), "{row}");
        assert!(!d.is_empty(), "{row}");
    }
}

/// Rows of `sql` on the state database, as JSON.
fn duckdb_state(out: &Path, sql: &str) -> serde_json::Value {
    let script = format!(
        "import sqlite3, json, sys\nc = sqlite3.connect(sys.argv[1])\nprint(json.dumps(c.execute({sql:?}).fetchall()))"
    );
    let o = Command::new(reference_python())
        .args(["-c", &script])
        .arg(out.join("state.sqlite"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_token_file_others_can_read_is_refused_before_any_work() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = dir.join("alert.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Port 9 (discard) refuses: deliveries fail and wait in the outbox.
    let config = setup(
        dir,
        "[alerts]\nwebhook_url = \"http://127.0.0.1:9/alerts\"\nwebhook_token_file = \"alert.token\"\n",
    );
    add(dir, DATES[1]);
    let (o, _) = cycle(&config);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("chmod 600") && err.contains("alert.token"),
        "{err}"
    );
    assert!(!err.contains("s3cret"));
    assert!(!dir.join("out/state.sqlite").exists(), "nothing was done");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (o, v) = cycle(&config);
    let err = ok(&o);
    assert!(!err.contains("s3cret"));
    assert_eq!(processed(&v), 1, "{v}");
    assert!(v["delivery_failed"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn earlier_maps_of_other_classes_are_never_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = setup(
        dir,
        "[[rules]]\ntype = \"class-transition\"\nmodel = \"clouds\"\n",
    );
    for d in &DATES[..2] {
        add(dir, d);
    }
    ok(&cycle(&config).0);
    // The model behind the name changes (3 classes instead of 2): its ids mean other things.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &manifest("s2cloudless.json").display().to_string(),
        &manifest("ukis-csmask-6b-l1c.json").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    add(dir, DATES[2]);
    let (o, v) = cycle(&config);
    ok(&o);
    assert_eq!(processed(&v), 1, "{v}");
    let rows = duckdb_state(
        &dir.join("out"),
        "SELECT compared, dates_used FROM changes WHERE date = '2015-08-20'",
    );
    assert_eq!(rows, serde_json::json!([[0, "[]"], [0, "[]"]]), "{rows}");
}
