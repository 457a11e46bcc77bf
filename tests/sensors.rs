//! The input contract: every sensor is read from its own metadata (Landsat 8 Collection 2
//! Level-2 and Level-1 from their MTL files and STAC Items, Sentinel-2 by its processing
//! baseline), or refused with the fix; nothing is guessed silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCENES: [&str; 2] = [
    "landsat8_c2l2_008059_20191201",
    "landsat8_c2l2_017036_20130419",
];

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Runs the 6-band L2A cloud model on `scene` at the test scenes' ~445 m pixels (they are
/// decimated: the upsampling rule wants --resolution) and returns the summary.
fn run(scene: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        s(&manifest("ukis-csmask-6b-l2a.json")),
        "--scene".into(),
        scene.into(),
        "--out".into(),
        s(out),
        "--name".into(),
        "run".into(),
        "--resolution".into(),
        "445".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|x| (*x).to_string()));
    json(&ok_stdout(&eoinfer(&args)))
}

/// The product id of a test scene (`LC08_L2SP_008059_20191201_20200825_02_T1`).
fn product_id(dir: &Path) -> String {
    let mtl = files_in(dir)
        .into_iter()
        .find(|f| f.ends_with("_MTL.txt"))
        .unwrap();
    mtl.trim_end_matches("_MTL.txt").to_string()
}

/// The scene's own CFMask bits on the run's grid: (cloud or dilated cloud, cloud shadow) per
/// pixel, 255 where QA_PIXEL is fill.
fn qa_on_grid(dir: &Path, classes: &Path, tmp: &Path) -> Vec<u8> {
    let (ext, (w, h)) = extent(classes);
    let qa = dir.join(format!("{}_QA_PIXEL.TIF", product_id(dir)));
    let warped = tmp.join("qa.tif");
    let st = Command::new("gdalwarp")
        .args(["-q", "-overwrite", "-r", "near", "-te"])
        .args(ext.iter().map(ToString::to_string))
        .args(["-ts", &w.to_string(), &h.to_string()])
        .arg(&qa)
        .arg(&warped)
        .status()
        .unwrap();
    assert!(st.success());
    let ds = gdal::Dataset::open(&warped).unwrap();
    let band = ds.rasterband(1).unwrap();
    let buf = band
        .read_as::<u16>((0, 0), ds.raster_size(), ds.raster_size(), None)
        .unwrap();
    buf.data()
        .iter()
        .map(|&q| {
            if q & 1 == 1 || q == 0 {
                255
            } else if q & (1 << 3) != 0 || q & (1 << 1) != 0 {
                1
            } else if q & (1 << 4) != 0 {
                2
            } else {
                0
            }
        })
        .collect()
}

#[test]
fn landsat_c2l2_folders_run_with_their_own_bands_and_scaling_and_agree_with_cfmask() {
    for name in SCENES {
        let dir = shared_scene(name);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let summary = run(&s(&dir), &out, &[]);
        let sensor = &summary["scene"]["sensor"];
        assert_eq!(sensor["sensor"], "landsat-8", "{sensor}");
        assert_eq!(sensor["level"], "SR");
        assert!(
            sensor["description"]
                .as_str()
                .unwrap()
                .contains("Collection 2 Level-2 surface reflectance")
        );
        let want = [
            ("blue", "SR_B2"),
            ("green", "SR_B3"),
            ("red", "SR_B4"),
            ("nir", "SR_B5"),
            ("swir16", "SR_B6"),
            ("swir22", "SR_B7"),
        ];
        let bands = summary["scene"]["bands"].as_array().unwrap();
        for ((model_band, file), b) in want.iter().zip(bands) {
            assert_eq!(b["model_band"], *model_band);
            assert!(
                b["source"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("_{file}.TIF"))
            );
            let scaling = b["scaling"].as_str().unwrap();
            assert!(
                scaling.contains("value x 0.0000275 - 0.2") && scaling.contains("_MTL.txt"),
                "{scaling}"
            );
            // Never the Sentinel-2 rule DN / 10000.
            assert_eq!(b["rescale"]["scale"], 2.75e-5);
            assert_eq!(b["rescale"]["add"], -0.2);
            assert_eq!(b["nodata"], 0.0);
        }
        // The run names the resolution gap (trained at 30 m, run at 445 m).
        assert!(
            summary["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains("trained at about 30 m")),
            "{}",
            summary["warnings"]
        );
        // Against the scene's own cloud mask (CFMask, QA_PIXEL bits 1 and 3; shadow bit 4).
        let classes = out.join("run.classes.tif");
        let (ours, _, _) = read_u8(&classes, 1);
        let qa = qa_on_grid(&dir, &classes, tmp.path());
        let both: Vec<(u8, u8)> = ours
            .iter()
            .zip(&qa)
            .filter(|(o, q)| **o != 255 && **q != 255)
            .map(|(o, q)| (*o, *q))
            .collect();
        let n = both.len() as f64;
        let frac = |f: &dyn Fn(&(u8, u8)) -> bool| both.iter().filter(|x| f(x)).count() as f64 / n;
        let ours_cloud = frac(&|x| x.0 == 1);
        let qa_cloud = frac(&|x| x.1 == 1);
        let agree = frac(&|x| (x.0 == 1) == (x.1 == 1));
        eprintln!(
            "{name}: {} valid px; cloud: eoinfer {:.1} %, CFMask {:.1} %; cloud / not cloud agree on {:.1} %; shadow: eoinfer {:.1} %, CFMask {:.1} %",
            both.len(),
            100.0 * ours_cloud,
            100.0 * qa_cloud,
            100.0 * agree,
            100.0 * frac(&|x| x.0 == 2),
            100.0 * frac(&|x| x.1 == 2)
        );
        assert!(n > 100_000.0);
        assert!(agree > 0.8, "{name}: cloud agreement {agree}");
        assert!(
            (ours_cloud - qa_cloud).abs() < 0.15,
            "{name}: {ours_cloud} vs {qa_cloud}"
        );
    }
}

#[test]
fn a_landsat_stac_item_alone_gives_the_same_result_as_the_folder() {
    let dir = shared_scene(SCENES[0]);
    let id = product_id(&dir);
    let tmp = tempfile::tempdir().unwrap();
    // The band files under names that say nothing, and the MTL: only the Item says what
    // they are (its eo:bands) and how to scale them (its MTL asset).
    let assets = tmp.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    let mut item = json(&std::fs::read_to_string(dir.join(format!("{id}_SR_stac.json"))).unwrap());
    let mut kept = serde_json::Map::new();
    for (key, asset) in item["assets"].as_object().unwrap() {
        let local = dir.join(format!("{id}_{key}"));
        if !local.is_file() {
            continue;
        }
        let renamed = format!("asset-{}", kept.len());
        let ext = key.rsplit('.').next().unwrap();
        let target = assets.join(format!("{renamed}.{ext}"));
        std::fs::copy(&local, &target).unwrap();
        let mut a = asset.clone();
        a["href"] = format!("assets/{renamed}.{ext}").into();
        kept.insert(key.clone(), a);
    }
    assert!(kept.contains_key("MTL.txt") && kept.contains_key("SR_B5.TIF"));
    item["assets"] = kept.into();
    let item_path = tmp.path().join("item.json");
    std::fs::write(&item_path, serde_json::to_string(&item).unwrap()).unwrap();

    let by_item = run(&s(&item_path), &tmp.path().join("a"), &[]);
    run(&s(&dir), &tmp.path().join("b"), &[]);
    let sensor = &by_item["scene"]["sensor"];
    assert_eq!(sensor["sensor"], "landsat-8", "{sensor}");
    assert!(
        sensor["recognised_from"]
            .as_str()
            .unwrap()
            .contains("STAC Item")
    );
    for b in by_item["scene"]["bands"].as_array().unwrap() {
        let scaling = b["scaling"].as_str().unwrap();
        assert!(scaling.contains("value x 0.0000275 - 0.2"), "{scaling}");
        assert!(scaling.contains("asset-"), "{scaling}");
    }
    assert_eq!(
        by_item["scene"]["bands"][3]["source"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next(),
        Some(kept_name(&item, "SR_B5.TIF").as_str())
    );
    let (a, _, _) = read_u8(&tmp.path().join("a/run.classes.tif"), 1);
    let (b, _, _) = read_u8(&tmp.path().join("b/run.classes.tif"), 1);
    assert_eq!(a, b, "the Item and the folder give different class maps");
}

fn kept_name(item: &serde_json::Value, key: &str) -> String {
    item["assets"][key]["href"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// A Level-1 product made of the scene's files under Level-1 names with its MTL (which
/// carries the Level-1 rescaling too); `bands` are the band numbers to lay out (the DN are
/// the Level-2 ones: this checks the metadata path, not the physics).
fn level1_folder(dir: &Path, target: &Path, bands: &[(u32, u32)]) -> String {
    let id = product_id(dir);
    let l1 = id.replace("_L2SP_", "_L1TP_");
    std::fs::create_dir_all(target).unwrap();
    std::fs::copy(
        dir.join(format!("{id}_MTL.txt")),
        target.join(format!("{l1}_MTL.txt")),
    )
    .unwrap();
    for (name, from) in bands {
        std::os::unix::fs::symlink(
            dir.join(format!("{id}_SR_B{from}.TIF")),
            target.join(format!("{l1}_B{name}.TIF")),
        )
        .unwrap();
    }
    l1
}

#[test]
fn landsat_level1_bands_are_toa_reflectance_from_the_mtl_and_the_panchromatic_band_is_never_nir() {
    let dir = shared_scene(SCENES[0]);
    let tmp = tempfile::tempdir().unwrap();
    let l1 = tmp.path().join("l1");
    level1_folder(&dir, &l1, &[(2, 2), (3, 3), (4, 4), (5, 5), (8, 4)]);
    let out = eoinfer([
        "predict",
        "--model",
        &s(&manifest("ukis-csmask-4b-l1c.json")),
        "--scene",
        &s(&l1),
        "--out",
        &s(&tmp.path().join("out")),
        "--resolution",
        "445",
        "--json",
    ]);
    let summary = json(&ok_stdout(&out));
    assert_eq!(summary["scene"]["sensor"]["level"], "TOA");
    let sin = 57.087_273_07_f64.to_radians().sin();
    let nir = &summary["scene"]["bands"][3];
    assert!(
        nir["source"].as_str().unwrap().ends_with("_B5.TIF"),
        "{nir}"
    );
    let scale = nir["rescale"]["scale"].as_f64().unwrap();
    let add = nir["rescale"]["add"].as_f64().unwrap();
    assert!((scale - 2.0e-5 / sin).abs() < 1e-12, "{scale}");
    assert!((add + 0.1 / sin).abs() < 1e-9, "{add}");
    let scaling = nir["scaling"].as_str().unwrap();
    assert!(
        scaling.contains("LEVEL1_RADIOMETRIC_RESCALING")
            && scaling.contains("sin(SUN_ELEVATION 57.08727307)"),
        "{scaling}"
    );

    // Without B5 the model's nir is missing: the panchromatic B8 does not stand in for it.
    let no_nir = tmp.path().join("no-nir");
    level1_folder(&dir, &no_nir, &[(2, 2), (3, 3), (4, 4), (8, 4)]);
    fails(
        &manifest("ukis-csmask-4b-l1c.json"),
        &s(&no_nir),
        &["--resolution", "445"],
        &["needs band nir", "_B8 (pan)"],
    );

    // A Level-1 band without its MTL cannot be converted: refused, naming the file to add.
    let bare = tmp.path().join("bare");
    let l1_id = level1_folder(&dir, &bare, &[(2, 2), (3, 3), (4, 4), (5, 5)]);
    std::fs::remove_file(bare.join(format!("{l1_id}_MTL.txt"))).unwrap();
    fails(
        &manifest("ukis-csmask-4b-l1c.json"),
        &s(&bare),
        &["--resolution", "445"],
        &["holds integers", &format!("{l1_id}_MTL.txt")],
    );
}

#[test]
fn a_landsat_stack_in_one_file_matches_its_bands_only_through_band_mapping() {
    // One file of a Landsat product holding B2, B3, B4, B5 and the panchromatic B8: its band
    // descriptions are Landsat numbers, which must not match Sentinel-2's B02 .. B08.
    let dir = shared_scene(SCENES[0]);
    let id = product_id(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let vrt = tmp.path().join("stack.vrt");
    let st = Command::new("gdalbuildvrt")
        .args(["-q", "-separate"])
        .arg(&vrt)
        .args([2, 3, 4, 5, 4].map(|b| dir.join(format!("{id}_SR_B{b}.TIF"))))
        .status()
        .unwrap();
    assert!(st.success());
    let stack = tmp
        .path()
        .join(format!("{}_stack.tif", id.replace("_L2SP_", "_L1TP_")));
    let st = Command::new("gdal_translate")
        .args(["-q"])
        .arg(&vrt)
        .arg(&stack)
        .status()
        .unwrap();
    assert!(st.success());
    {
        let ds = gdal::Dataset::open_ex(
            &stack,
            gdal::DatasetOptions {
                open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                ..Default::default()
            },
        )
        .unwrap();
        for (i, b) in ["B2", "B3", "B4", "B5", "B8"].iter().enumerate() {
            gdal::Metadata::set_description(&mut ds.rasterband(i + 1).unwrap(), b).unwrap();
        }
    }
    let model = manifest("ukis-csmask-4b-l1c.json");
    let flags = [
        "--resolution",
        "445",
        "--scale",
        "0.00002",
        "--offset",
        "-0.1",
    ];
    fails(
        &model,
        &s(&stack),
        &flags,
        &["needs band blue", "5 (B8)", "--bands blue="],
    );
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        s(&model),
        "--scene".into(),
        s(&stack),
        "--out".into(),
        s(&tmp.path().join("out")),
        "--bands".into(),
        "blue=B2,green=B3,red=B4,nir=B5".into(),
        "--json".into(),
    ];
    args.extend(flags.iter().map(|f| (*f).to_string()));
    let summary = json(&ok_stdout(&eoinfer(&args)));
    assert_eq!(summary["scene"]["sensor"]["sensor"], "landsat-8");
    assert_eq!(summary["scene"]["bands"][3]["source_band"], 4);
}

#[test]
fn a_model_for_another_product_is_refused_unless_accepted_with_a_warning() {
    let dir = shared_scene(SCENES[1]);
    // An L1C (top-of-atmosphere) model on Landsat surface reflectance.
    fails(
        &manifest("ukis-csmask-6b-l1c.json"),
        &s(&dir),
        &["--resolution", "445"],
        &[
            "does not fit scene",
            "takes top-of-atmosphere reflectance",
            "surface reflectance",
            "--accept-product-mismatch",
        ],
    );
    // A Sentinel-2 model (OlmoEarth) on Landsat.
    fails(
        &manifest("olmoearth/olmoearth-v1-nano.json"),
        &s(&dir),
        &["--resolution", "445"],
        &["made for sentinel-2", "Landsat 8 OLI"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = eoinfer([
        "predict",
        "--model",
        &s(&manifest("ukis-csmask-6b-l1c.json")),
        "--scene",
        &s(&dir),
        "--out",
        &s(tmp.path()),
        "--resolution",
        "445",
        "--accept-product-mismatch",
        "--json",
    ]);
    let summary = json(&ok_stdout(&out));
    assert!(
        summary["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("--accept-product-mismatch")),
        "{}",
        summary["warnings"]
    );
}

#[test]
fn a_coarse_scene_is_not_upsampled_without_being_asked() {
    let dir = shared_scene(SCENES[0]);
    fails(
        &manifest("ukis-csmask-6b-l2a.json"),
        &s(&dir),
        &[],
        &[
            "444.78515625 m pixels",
            "the model's resolution is 30 m",
            "--resolution 444.78515625",
            "--allow-upsample",
        ],
    );
}

/// The demo scene's band files under the names of another acquisition date.
fn demo_renamed(target: &Path, date: &str, bands: &[&str]) -> PathBuf {
    std::fs::create_dir_all(target).unwrap();
    for b in bands {
        std::os::unix::fs::symlink(
            demo_scene().join(format!("T33UUU_20170216T102101_{b}.jp2")),
            target.join(format!("T33UUU_{date}T102101_{b}.jp2")),
        )
        .unwrap();
    }
    target.to_path_buf()
}

const SIX: [&str; 6] = ["B02", "B03", "B04", "B08", "B11", "B12"];

#[test]
fn sentinel2_without_a_stated_baseline_is_read_by_its_date_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // After 2022-01-25 the offset may be -1000: refused without metadata or --s2-offset.
    let late = demo_renamed(&tmp.path().join("late"), "20230216", &SIX);
    fails(
        &manifest("ukis-csmask-6b-l1c.json"),
        &s(&late),
        &[],
        &[
            "acquired on 2023-02-16",
            "--s2-offset -1000",
            "--s2-offset 0",
        ],
    );
    // The demo (2017) is read without offset, and the summary says why.
    let out = eoinfer([
        "predict",
        "--model",
        &s(&manifest("ukis-csmask-6b-l1c.json")),
        "--scene",
        &s(&demo_scene()),
        "--out",
        &s(&tmp.path().join("demo")),
        "--json",
    ]);
    let summary = json(&ok_stdout(&out));
    assert_eq!(summary["scene"]["sensor"]["sensor"], "sentinel-2");
    assert_eq!(summary["scene"]["sensor"]["level"], "TOA");
    assert!(
        summary["scene"]["s2_offset_source"]
            .as_str()
            .unwrap()
            .contains("inferred from the acquisition date 2017-02-16")
    );
    assert!(
        summary["scene"]["bands"][0]["scaling"]
            .as_str()
            .unwrap()
            .starts_with("Sentinel-2 DN: value x 0.0001")
    );
    assert!(
        summary["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("before baseline 04.00 began"))
    );
    // --s2-offset states it: the late scene runs.
    let out = eoinfer([
        "predict",
        "--model",
        &s(&manifest("ukis-csmask-6b-l1c.json")),
        "--scene",
        &s(&late),
        "--out",
        &s(&tmp.path().join("late-out")),
        "--s2-offset",
        "-1000",
        "--json",
    ]);
    let summary = json(&ok_stdout(&out));
    assert_eq!(summary["scene"]["s2_offset_source"], "--s2-offset");
}

/// The demo's six bands in one GeoTIFF of `data_type` at 20 m, named B02 ... B12, with no
/// scale metadata (`scale`: values multiplied by it).
fn bare_stack(path: &Path, data_type: &str, scale: Option<&str>) {
    let vrt = path.with_extension("vrt");
    let st = Command::new("gdalbuildvrt")
        .args(["-q", "-separate", "-resolution", "highest"])
        .arg(&vrt)
        .args(SIX.map(|b| demo_scene().join(format!("T33UUU_20170216T102101_{b}.jp2"))))
        .status()
        .unwrap();
    assert!(st.success());
    let mut cmd = Command::new("gdal_translate");
    cmd.args(["-q", "-ot", data_type, "-outsize", "50%", "50%"]);
    if let Some(k) = scale {
        cmd.args(["-scale", "0", "1", "0", k]);
    }
    let st = cmd.arg(&vrt).arg(path).status().unwrap();
    assert!(st.success());
    let ds = gdal::Dataset::open_ex(
        path,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
            ..Default::default()
        },
    )
    .unwrap();
    for (i, b) in SIX.iter().enumerate() {
        gdal::Metadata::set_description(&mut ds.rasterband(i + 1).unwrap(), b).unwrap();
    }
}

#[test]
fn integers_from_no_known_sensor_and_dn_floats_are_refused_with_the_flags_to_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let ints = tmp.path().join("stack.tif");
    bare_stack(&ints, "UInt16", None);
    let l1c = manifest("ukis-csmask-6b-l1c.json");
    fails(
        &l1c,
        &s(&ints),
        &[],
        &[
            "holds integers, but nothing says how they convert to reflectance",
            "no sensor was recognised",
            "--scale",
            "--s2-offset",
        ],
    );
    // --scale states it, and the summary says so.
    let out = eoinfer([
        "predict",
        "--model",
        &s(&l1c),
        "--scene",
        &s(&ints),
        "--out",
        &s(&tmp.path().join("scaled")),
        "--scale",
        "0.0001",
        "--json",
    ]);
    let summary = json(&ok_stdout(&out));
    assert!(
        summary["scene"]["bands"][0]["scaling"]
            .as_str()
            .unwrap()
            .contains("value x 0.0001 [--scale/--offset]")
    );
    // The same DN as float32 (no scale metadata) are taken as reflectance: far out of range.
    let floats = tmp.path().join("floats.tif");
    bare_stack(&floats, "Float32", None);
    fails(
        &l1c,
        &s(&floats),
        &[],
        &[
            "lie far outside what the model was trained on",
            "band blue",
            "median reflectance",
            "--accept-out-of-range",
        ],
    );
    // 1e30 run anyway: the model's output is not a number, which is an error naming a tile;
    // no output is written (the job's own folder .eoinfer holds its lock and journal).
    let huge = tmp.path().join("huge.tif");
    bare_stack(&huge, "Float32", Some("1e30"));
    let out = tmp.path().join("huge-out");
    let o = eoinfer([
        "predict",
        "--model",
        &s(&l1c),
        "--scene",
        &s(&huge),
        "--out",
        &s(&out),
        "--accept-out-of-range",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for want in ["returned NaN for tile", "(row ", "wrong units", "damaged"] {
        assert!(err.contains(want), "stderr lacks {want:?}: {err}");
    }
    assert_eq!(files_in(&out), vec![".eoinfer".to_string()]);
}

#[test]
fn a_constant_band_and_a_missing_checksum_are_warnings_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack.tif");
    bare_stack(&stack, "UInt16", None);
    {
        let ds = gdal::Dataset::open_ex(
            &stack,
            gdal::DatasetOptions {
                open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                ..Default::default()
            },
        )
        .unwrap();
        let mut band = ds.rasterband(4).unwrap();
        let size = band.size();
        let mut buf = gdal::raster::Buffer::new(size, vec![2000_u16; size.0 * size.1]);
        band.write((0, 0), size, &mut buf).unwrap();
    }
    // A manifest copy without its checksum.
    let mut doc = json(&std::fs::read_to_string(manifest("ukis-csmask-6b-l1c.json")).unwrap());
    let onnx = root().join("models/ukis-csmask/model_6b_l1c.onnx");
    doc["assets"]["model"]["href"] = s(&onnx).into();
    doc["assets"]["model"]
        .as_object_mut()
        .unwrap()
        .remove("file:checksum");
    let m = tmp.path().join("model.json");
    std::fs::write(&m, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let out = eoinfer([
        "predict",
        "--model",
        &s(&m),
        "--scene",
        &s(&stack),
        "--out",
        &s(&tmp.path().join("out")),
        "--scale",
        "0.0001",
        "--json",
    ]);
    let summary = json(&ok_stdout(&out));
    let warnings: Vec<&str> = summary["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("band nir") && w.contains("is constant (0.2")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("records no sha256") && w.contains("--write-checksum")),
        "{warnings:?}"
    );
    // Infinite values are masked and counted in a warning naming the band.
    let floats = tmp.path().join("floats.tif");
    bare_stack(&floats, "Float32", Some("0.0001"));
    {
        let ds = gdal::Dataset::open_ex(
            &floats,
            gdal::DatasetOptions {
                open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                ..Default::default()
            },
        )
        .unwrap();
        let mut band = ds.rasterband(1).unwrap();
        let (w, h) = band.size();
        let mut buf = gdal::raster::Buffer::new((w, h / 2), vec![f32::INFINITY; w * (h / 2)]);
        band.write((0, 0), (w, h / 2), &mut buf).unwrap();
    }
    let out = eoinfer([
        "predict",
        "--model",
        &s(&m),
        "--scene",
        &s(&floats),
        "--out",
        &s(&tmp.path().join("inf")),
        "--json",
    ]);
    let summary = json(&ok_stdout(&out));
    assert!(
        summary["warnings"].as_array().unwrap().iter().any(|w| {
            let w = w.as_str().unwrap();
            w.starts_with("band blue") && w.contains("holds infinite values")
        }),
        "{}",
        summary["warnings"]
    );
    assert!(
        summary["counts"]["pixels_valid"].as_u64().unwrap()
            < summary["counts"]["pixels"].as_u64().unwrap()
    );
    // --write-checksum adds it; the next run has no such warning.
    ok(&eoinfer([
        "model",
        "check",
        "--model",
        &s(&m),
        "--write-checksum",
    ]));
    let doc = json(&std::fs::read_to_string(&m).unwrap());
    assert!(
        doc["assets"]["model"]["file:checksum"]
            .as_str()
            .unwrap()
            .starts_with("1220")
    );
}

#[test]
fn messages_name_the_file_the_unit_and_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let l1c = manifest("ukis-csmask-6b-l1c.json");
    // A truncated JP2 in the band folder is named, with GDAL's reason.
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for b in SIX {
        let f = format!("T33UUU_20170216T102101_{b}.jp2");
        if b == "B11" {
            let bytes = std::fs::read(demo_scene().join(&f)).unwrap();
            std::fs::write(broken.join(&f), &bytes[..bytes.len() / 3]).unwrap();
        } else {
            std::os::unix::fs::symlink(demo_scene().join(&f), broken.join(&f)).unwrap();
        }
    }
    let err = fails(&l1c, &s(&broken), &[], &["T33UUU_20170216T102101_B11.jp2"]);
    assert!(!err.contains("error msg: ''"), "{err}");
    // Duplicate --bands keys.
    fails(
        &l1c,
        &s(&demo_scene()),
        &["--bands", "nir=B08,nir=B8A"],
        &["names model band nir twice"],
    );
    // Numeric flags state their range.
    fails(
        &l1c,
        &s(&demo_scene()),
        &["--s2-offset", "1e9"],
        &["from -10000 to 10000"],
    );
    fails(
        &l1c,
        &s(&demo_scene()),
        &["--resolution", "-30"],
        &["is not above 0"],
    );
    fails(
        &l1c,
        &s(&demo_scene()),
        &["--scale", "0"],
        &["other than 0"],
    );
    // A resolution in a geographic CRS is in degrees.
    let geo = tmp.path().join("geo.tif");
    let stack = tmp.path().join("stack.tif");
    bare_stack(&stack, "UInt16", None);
    let st = Command::new("gdalwarp")
        .args(["-q", "-t_srs", "EPSG:4326"])
        .arg(&stack)
        .arg(&geo)
        .status()
        .unwrap();
    assert!(st.success());
    fails(
        &l1c,
        &s(&geo),
        &["--resolution", "30", "--scale", "0.0001"],
        &["30 degrees", "in degrees"],
    );
    // A scene in a .txt list that does not exist is reported as missing.
    let list = tmp.path().join("scenes.txt");
    std::fs::write(&list, "nowhere/T33UUU_20170216T102101.tif\n").unwrap();
    fails(
        &manifest("olmoearth/olmoearth-v1-nano.json"),
        &s(&list),
        &[],
        &["nowhere/T33UUU_20170216T102101.tif does not exist"],
    );
    // s3:// without an endpoint of the user's own would reach the public cloud.
    fails(
        &l1c,
        "/vsis3/some-bucket/scene.tif",
        &[],
        &["public cloud", "AWS_S3_ENDPOINT", "--allow-public-cloud"],
    );
}
