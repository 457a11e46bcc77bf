//! `eoinfer monitor` against a real STAC API on loopback: stac-fastapi-pgstac on PostgreSQL +
//! PostGIS (tests/reference/stac_api.py), its Items describing the Slovenia series, their
//! assets served by a range-capable HTTP server and read through GDAL's `/vsicurl/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The STAC API launcher; stopped (stdin closed, then waited for) when dropped.
struct StacApi {
    child: Option<Child>,
    url: String,
    pg_port: u64,
    work: PathBuf,
}

impl StacApi {
    fn start(work: &Path, items: &Path) -> Self {
        Self::start_with(
            work,
            &items.join("collection.json"),
            &items.join("items.ndjson"),
        )
    }

    /// With the collections (one JSON or ndjson) and Items files named.
    fn start_with(work: &Path, collections: &Path, items: &Path) -> Self {
        let mut child = Command::new(stacapi_python())
            .arg(root().join("tests/reference/stac_api.py"))
            .arg(work)
            .arg(collections)
            .arg(items)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("the STAC API did not start ({e}): {line:?}"));
        Self {
            child: Some(child),
            url: v["url"].as_str().unwrap().to_string(),
            pg_port: v["pg_port"].as_u64().unwrap(),
            work: work.to_path_buf(),
        }
    }

    fn add(&self, items: &Path) {
        let o = Command::new(stacapi_python())
            .arg(root().join("tests/reference/stac_api.py"))
            .arg("--add")
            .arg(self.pg_port.to_string())
            .arg(&self.work)
            .arg(items.join("items.ndjson"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for StacApi {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}

fn stacapi_python() -> PathBuf {
    let p = root().join(".venv-stacapi/bin/python");
    assert!(
        p.is_file(),
        "{} missing: run `make test` (scripts/setup.sh --reference builds it)",
        p.display()
    );
    p
}

/// Items for `dates` in `out` (collection.json, items.ndjson): with `per_band` one asset per
/// band, the band files written into `bands` (served at `base`); else one 13-band asset per
/// Item (its bands listed in `eo:bands`), the scene files copied into `bands`.
fn items(out: &Path, bands: &Path, base: &str, dates: &[&str], per_band: bool) {
    let mut cmd = Command::new(reference_python());
    cmd.arg(root().join("tests/reference/slovenia_items.py"));
    if per_band {
        cmd.arg("--per-band").arg(bands);
    } else {
        for d in dates {
            let name = format!("S2_L1C_{d}_13band.tif");
            std::fs::copy(
                shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100").join(&name),
                bands.join(&name),
            )
            .unwrap();
        }
    }
    let o = cmd
        .arg(out)
        .arg(base)
        .args(dates)
        .env(
            "EOINFER_SLOVENIA_DIR",
            shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100"),
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn cycle(config: &Path) -> serde_json::Value {
    let o = eoinfer([
        "monitor",
        "run",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn processed(v: &serde_json::Value) -> Vec<String> {
    v["processed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_stac_api_on_loopback_feeds_the_monitor_new_items_only() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(tmp.path(), "");
}

/// The whole scenario against the STAC API: 3 Items, nothing new, 2 more. `extra` is added to
/// the config.
fn scenario(dir: &Path, extra: &str) {
    let bands = dir.join("bands");
    std::fs::create_dir_all(&bands).unwrap();
    let assets = Server::start(&bands);
    let base = format!("http://127.0.0.1:{}", assets.1);
    items(
        &dir.join("first"),
        &bands,
        &base,
        &["20150711", "20150731", "20150820"],
        true,
    );
    // The later Items carry one multi-band asset each, read remotely band by band as their
    // `eo:bands` list them.
    items(
        &dir.join("more"),
        &bands,
        &base,
        &["20150830", "20150909"],
        false,
    );
    let api = StacApi::start(&dir.join("pg"), &dir.join("first"));

    std::fs::write(dir.join("regions.geojson"), SLOVENIA_REGIONS).unwrap();
    let config = dir.join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            r#"name = "slovenia-stac"
out = "out"
[regions]
path = "regions.geojson"
id_column = "id"
[source]
type = "stac-api"
url = "{}"
collections = ["s2-l1c-slovenia"]
start = "2015-01-01"
[[models]]
name = "clouds"
manifest = "{}"
resolution = 10
[[rules]]
type = "cloud-free-share-below"
model = "clouds"
threshold = 0.5
{extra}
"#,
            api.url,
            manifest("s2cloudless.json").display()
        ),
    )
    .unwrap();

    // Cycle 1: the 3 Items in the catalogue; cycle 2: nothing new; 2 Items added; cycle 3: 2.
    let v = cycle(&config);
    let mut p = processed(&v);
    p.sort();
    assert_eq!(
        p,
        ["S2_L1C_20150711", "S2_L1C_20150731", "S2_L1C_20150820"],
        "{v}"
    );
    let v = cycle(&config);
    assert!(processed(&v).is_empty(), "{v}");
    // Asked from 30 days (lookback_days) before the newest processed date, 2015-08-20.
    assert_eq!(v["listed"], 2);
    api.add(&dir.join("more"));
    let v = cycle(&config);
    let mut p = processed(&v);
    p.sort();
    assert_eq!(p, ["S2_L1C_20150830", "S2_L1C_20150909"], "{v}");

    // One row per region and date; alerts on the two cloudy dates for both regions.
    let status = ok_stdout(&eoinfer([
        "monitor",
        "status",
        "--config",
        config.to_str().unwrap(),
    ]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["observations"], 10, "{status}");
    assert_eq!(status["alerts"], 4, "{status}");
    let alerts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/alerts.geojson")).unwrap())
            .unwrap();
    let mut dates: Vec<&str> = alerts["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["date"].as_str().unwrap())
        .collect();
    dates.sort_unstable();
    dates.dedup();
    assert_eq!(dates, ["2015-07-31", "2015-08-20"]);
    drop(api);
}

#[test]
fn a_whole_monitoring_history_runs_inside_a_network_namespace_with_only_loopback() {
    // This test binary again, inside a new network namespace (root: `unshare -n`), running
    // only the test below.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test creates a network namespace (`unshare -n`) and needs root, as CI runs"
    );
    let o = Command::new("unshare")
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inside_a_network_namespace",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EOINFER_IN_NETNS", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
#[ignore = "run by a_whole_monitoring_history_runs_inside_a_network_namespace_with_only_loopback"]
fn inside_a_network_namespace() {
    assert_eq!(
        std::env::var("EOINFER_IN_NETNS").as_deref(),
        Ok("1"),
        "run through a_whole_monitoring_history_runs_inside_a_network_namespace_with_only_loopback"
    );
    // Only loopback, brought up here; nothing beyond it is reachable.
    let o = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:"), "{links}");
    let outside: std::net::SocketAddr = "1.1.1.1:443".parse().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&outside, std::time::Duration::from_secs(2)).is_err()
    );
    // PostgreSQL, the STAC API, the asset server and the webhook listener all start in here.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("hook/received.jsonl");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let script = root().join("tests/reference/webhook_listener.py");
    let hook = Server::python(dir, |port| {
        vec![
            script.display().to_string(),
            port.to_string(),
            log.display().to_string(),
        ]
    });
    scenario(
        dir,
        &format!(
            "[alerts]\nwebhook_url = \"http://127.0.0.1:{}/alerts\"\n",
            hook.1
        ),
    );
    let mut keys: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["key"].to_string())
        .collect();
    assert_eq!(keys.len(), 4, "the 4 alerts, each once: {keys:?}");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4);
}

/// Writes a static catalog into `root/catalog/` (catalog.json -> s2/collection.json -> one
/// Item file per line of each `items.ndjson` in `from`, all links relative) with the Items'
/// asset hrefs made relative to their files (the assets are in `root`, served at `base`).
fn static_catalog(root: &Path, base: &str, from: &[&Path]) {
    let script = r#"
import json, os, sys
root, base, sources = sys.argv[1], sys.argv[2], sys.argv[3:]
cat = os.path.join(root, "catalog")
os.makedirs(os.path.join(cat, "s2", "items"), exist_ok=True)
links = []
for src in sources:
    for line in open(os.path.join(src, "items.ndjson")):
        item = json.loads(line)
        for a in item["assets"].values():
            a["href"] = a["href"].replace(base + "/", "../../../")
        item["links"] = [{"rel": "collection", "href": "../collection.json"}]
        json.dump(item, open(os.path.join(cat, "s2", "items", item["id"] + ".json"), "w"))
        links.append({"rel": "item", "href": "./items/" + item["id"] + ".json", "type": "application/geo+json"})
coll = json.load(open(os.path.join(sources[0], "collection.json")))
coll["links"] = [{"rel": "root", "href": "../catalog.json"}] + links
json.dump(coll, open(os.path.join(cat, "s2", "collection.json"), "w"))
json.dump({"type": "Catalog", "stac_version": "1.1.0", "id": "local", "description": "test",
           "links": [{"rel": "child", "href": "./s2/collection.json"}]},
          open(os.path.join(cat, "catalog.json"), "w"))
"#;
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(root)
        .arg(base)
        .args(from)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_static_stac_catalog_over_http_feeds_the_monitor_new_items_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bands = dir.join("bands");
    std::fs::create_dir_all(&bands).unwrap();
    let assets = Server::start(&bands);
    let base = format!("http://127.0.0.1:{}", assets.1);
    items(
        &dir.join("first"),
        &bands,
        &base,
        &["20150711", "20150731", "20150820"],
        true,
    );
    items(
        &dir.join("more"),
        &bands,
        &base,
        &["20150830", "20150909"],
        false,
    );
    static_catalog(&bands, &base, &[&dir.join("first")]);
    std::fs::write(dir.join("regions.geojson"), SLOVENIA_REGIONS).unwrap();
    let config = dir.join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            r#"name = "slovenia-catalog"
out = "out"
[regions]
path = "regions.geojson"
id_column = "id"
[source]
type = "stac-catalog"
url = "{base}/catalog/catalog.json"
collections = ["s2-l1c-slovenia"]
[[models]]
name = "clouds"
manifest = "{}"
resolution = 10
[[rules]]
type = "cloud-free-share-below"
model = "clouds"
threshold = 0.5
"#,
            manifest("s2cloudless.json").display()
        ),
    )
    .unwrap();
    let sorted = |v: &serde_json::Value| {
        let mut p = processed(v);
        p.sort();
        p
    };
    let v = cycle(&config);
    assert_eq!(
        sorted(&v),
        ["S2_L1C_20150711", "S2_L1C_20150731", "S2_L1C_20150820"],
        "{v}"
    );
    let v = cycle(&config);
    assert!(processed(&v).is_empty(), "{v}");
    assert_eq!(v["listed"], 3);
    static_catalog(&bands, &base, &[&dir.join("first"), &dir.join("more")]);
    let v = cycle(&config);
    assert_eq!(sorted(&v), ["S2_L1C_20150830", "S2_L1C_20150909"], "{v}");
    let status = ok_stdout(&eoinfer([
        "monitor",
        "status",
        "--config",
        config.to_str().unwrap(),
    ]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["observations"], 10, "{status}");
    assert_eq!(status["alerts"], 4, "{status}");
}

/// `shared/scenes` folder `name`.
fn scene_dir(name: &str) -> PathBuf {
    shared_scene(name)
}

/// The real Earth Search Item of T29RKH and the Landsat 8 C2 L2 Item, their asset hrefs
/// pointed at `base/t29rkh/` and `base/landsat/` (served from `bands`), appended to
/// `items.ndjson` in `out`, and their collections to `collections.ndjson` there.
fn other_items(out: &Path, bands: &Path, base: &str) {
    std::os::unix::fs::symlink(
        scene_dir("s2_l2a_T29RKH_20200219_earthsearch").join("original_cogs"),
        bands.join("t29rkh"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        scene_dir("landsat8_c2l2_008059_20191201"),
        bands.join("landsat"),
    )
    .unwrap();
    let script = r#"
import json, os, sys
out, base, s2, ls = sys.argv[1:5]
# The https assets held in the local folders are served from here instead (as from the
# user's own mirror); the rest keep their hrefs (Earth Search's s3:// JP2 copies are only a
# fallback eoinfer does not take while a COG holds the band).
def moved(path, folder, local, to_disk=False):
    item = json.load(open(path))
    for a in item["assets"].values():
        name = a["href"].rsplit("/", 1)[-1]
        if a["href"].startswith("http") and os.path.exists(os.path.join(local, name)):
            a["href"] = os.path.join(local, name) if to_disk else f"{base}/{folder}/{name}"
    return item
s2_item, ls_item = "S2A_29RKH_20200219_0_L2A.json", "LC08_L2SP_008059_20191201_20200825_02_T1_SR_stac.json"
items = [moved(os.path.join(s2, s2_item), "t29rkh", s2),
         moved(os.path.join(ls, ls_item), "landsat", ls)]
# The same Items with their assets on disk: what `predict` reads without HTTP.
json.dump(moved(os.path.join(s2, s2_item), "", s2, True), open(os.path.join(out, "t29rkh-local.json"), "w"))
json.dump(moved(os.path.join(ls, ls_item), "", ls, True), open(os.path.join(out, "landsat-local.json"), "w"))
with open(os.path.join(out, "items.ndjson"), "a") as f:
    for i in items:
        f.write(json.dumps(i) + "\n")
first = json.load(open(os.path.join(out, "collection.json")))
with open(os.path.join(out, "collections.ndjson"), "w") as f:
    f.write(json.dumps(first) + "\n")
    for i in items:
        c = dict(first, id=i["collection"], title=i["collection"], links=[])
        c["extent"] = {"spatial": {"bbox": [i["bbox"]]}, "temporal": {"interval": [[None, None]]}}
        f.write(json.dumps(c) + "\n")
"#;
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(out)
        .arg(base)
        .arg(scene_dir("s2_l2a_T29RKH_20200219_earthsearch").join("original_cogs"))
        .arg(scene_dir("landsat8_c2l2_008059_20191201"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A monitor config in `dir/<name>/` watching one square region (`epsg`, `[x0, y0, x1, y1]`)
/// with the 6-band L2A cloud mask at `resolution`.
fn square_monitor(
    dir: &Path,
    name: &str,
    url: &str,
    collection: &str,
    epsg: u32,
    b: [f64; 4],
    resolution: f64,
) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("regions.geojson"),
        format!(
            r#"{{"type":"FeatureCollection","crs":{{"type":"name","properties":{{"name":"urn:ogc:def:crs:EPSG::{epsg}"}}}},"features":[{{"type":"Feature","properties":{{"id":"{name}"}},"geometry":{{"type":"Polygon","coordinates":[[[{x0},{y0}],[{x1},{y0}],[{x1},{y1}],[{x0},{y1}],[{x0},{y0}]]]}}}}]}}"#,
            x0 = b[0],
            y0 = b[1],
            x1 = b[2],
            y1 = b[3]
        ),
    )
    .unwrap();
    let config = d.join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            r#"name = "{name}"
out = "out"
[regions]
path = "regions.geojson"
id_column = "id"
[source]
type = "stac-api"
url = "{url}"
collections = ["{collection}"]
start = "2013-01-01"
[[models]]
name = "csm"
manifest = "{}"
resolution = {resolution}
[[rules]]
type = "cloud-free-share-below"
model = "csm"
threshold = 0.5
"#,
            manifest("ukis-csmask-6b-l2a.json").display()
        ),
    )
    .unwrap();
    config
}

/// Band 1 of a raster as numbers (rasterio).
fn pixels(tif: &Path) -> serde_json::Value {
    let o = Command::new(reference_python())
        .args([
            "-c",
            "import rasterio, sys, json; d = rasterio.open(sys.argv[1]); print(json.dumps([list(d.shape), d.read(1).ravel().tolist()]))",
        ])
        .arg(tif)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn one_stac_api_serves_sentinel_2_and_landsat_items_each_monitor_takes_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bands = dir.join("bands");
    std::fs::create_dir_all(&bands).unwrap();
    let assets = Server::start(&bands);
    let base = format!("http://127.0.0.1:{}", assets.1);
    let cat = dir.join("catalogue");
    items(&cat, &bands, &base, &["20150711", "20150731"], true);
    other_items(&cat, &bands, &base);
    let api = StacApi::start_with(
        &dir.join("pg"),
        &cat.join("collections.ndjson"),
        &cat.join("items.ndjson"),
    );
    let url = api.url.clone();

    // A region in T29RKH (UTM 29N, 100 m data) and one in the Landsat scene (UTM 18N).
    let s2 = square_monitor(
        dir,
        "t29rkh",
        &url,
        "sentinel-2-l2a",
        32629,
        [250_000.0, 2_700_000.0, 270_000.0, 2_720_000.0],
        100.0,
    );
    let ls = square_monitor(
        dir,
        "landsat",
        &url,
        "landsat-c2l2-sr",
        32618,
        [500_000.0, 100_000.0, 545_000.0, 145_000.0],
        450.0,
    );
    for (config, id) in [
        (&s2, "S2A_29RKH_20200219_0_L2A"),
        (&ls, "LC08_L2SP_008059_20191201_20200825_02_T1"),
    ] {
        let v = cycle(config);
        assert_eq!(processed(&v), [id], "{v}");
        let v = cycle(config);
        assert!(processed(&v).is_empty(), "{v}");
    }
    // Each class map is the one `predict` makes from the same files on disk.
    for (config, scene, resolution) in [
        (&s2, cat.join("t29rkh-local.json"), "100"),
        (&ls, cat.join("landsat-local.json"), "450"),
    ] {
        let folder = config.parent().unwrap();
        let local = folder.join("local");
        ok(&eoinfer([
            "predict",
            "--model",
            manifest("ukis-csmask-6b-l2a.json").to_str().unwrap(),
            "--scene",
            scene.to_str().unwrap(),
            "--aoi",
            folder.join("regions.geojson").to_str().unwrap(),
            "--resolution",
            resolution,
            "--name",
            "csm",
            "--batch-size",
            "4",
            "--out",
            local.to_str().unwrap(),
        ]));
        let run = std::fs::read_dir(folder.join("out/runs"))
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .next()
            .unwrap()
            .path();
        assert_eq!(
            pixels(&run.join("csm.classes.tif")),
            pixels(&local.join("csm.classes.tif")),
            "{}",
            folder.display()
        );
    }
    // The Slovenia monitor asks for all three collections: the bounding box keeps its own.
    std::fs::write(dir.join("regions.geojson"), SLOVENIA_REGIONS).unwrap();
    let config = dir.join("slovenia.toml");
    std::fs::write(
        &config,
        format!(
            r#"name = "slovenia"
out = "slovenia-out"
[regions]
path = "regions.geojson"
id_column = "id"
[source]
type = "stac-api"
url = "{url}"
collections = ["s2-l1c-slovenia", "sentinel-2-l2a", "landsat-c2l2-sr"]
start = "2013-01-01"
[[models]]
name = "clouds"
manifest = "{}"
resolution = 10
"#,
            manifest("s2cloudless.json").display()
        ),
    )
    .unwrap();
    let v = cycle(&config);
    let mut p = processed(&v);
    p.sort();
    assert_eq!(p, ["S2_L1C_20150711", "S2_L1C_20150731"], "{v}");
    assert_eq!(v["listed"], 2, "{v}");
    drop(api);
}
