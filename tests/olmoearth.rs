//! OlmoEarth encoders exported by models/olmoearth/export.py (v1 Nano and v1.2 Nano, random
//! seeded weights, committed with their manifests and golden data): ONNX Runtime driven from
//! Rust reproduces PyTorch's embeddings on a real 12-month WorldCereal window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn check(model: &str, golden: &std::path::Path) -> std::process::Output {
    eoinfer([
        "model",
        "check",
        "--model",
        root()
            .join("models/olmoearth")
            .join(format!("{model}.json"))
            .to_str()
            .unwrap(),
        "--golden",
        golden.to_str().unwrap(),
    ])
}

#[test]
fn committed_olmoearth_nano_models_match_pytorch_on_the_golden_window() {
    for model in [
        "olmoearth-v1-nano",
        "olmoearth-v1_2-nano",
        "olmoearth-v1-nano-s1",
    ] {
        let golden = root().join("models/olmoearth/golden").join(model);
        let out = check(model, &golden);
        ok(&out);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let g = &report["golden"];
        let (cos, max_abs) = (
            g["min_cosine"].as_f64().unwrap(),
            g["max_abs"].as_f64().unwrap(),
        );
        println!(
            "{model}: {} patches, min cosine {cos:.12}, max abs {max_abs:.3e} (ONNX Runtime from Rust vs PyTorch)",
            g["patches"]
        );
        let shape = if model.ends_with("-seg") {
            serde_json::json!([1, 4, 64, 64])
        } else {
            serde_json::json!([1, 128, 8, 8])
        };
        assert_eq!(g["shape"], shape);
        assert!(cos >= 0.99999, "{model}: cosine {cos}");
        assert!(max_abs <= 1e-4, "{model}: max abs {max_abs}");
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root()
                    .join("models/olmoearth")
                    .join(format!("{model}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["properties"]["eoinfer:random_weights"], true);
        assert_eq!(manifest["properties"]["eoinfer:patch_size"], 8);
        assert_eq!(
            report["sha256"].as_str().unwrap(),
            &manifest["assets"]["model"]["file:checksum"]
                .as_str()
                .unwrap()[4..]
        );
    }
}

#[test]
fn a_golden_output_that_differs_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("models/olmoearth/golden/olmoearth-v1-nano");
    for f in ["golden.json", "s2.bin", "timestamps.bin", "features.bin"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut features = std::fs::read(dir.path().join("features.bin")).unwrap();
    let v = f32::from_le_bytes(features[..4].try_into().unwrap()) + 0.01;
    features[..4].copy_from_slice(&v.to_le_bytes());
    std::fs::write(dir.path().join("features.bin"), features).unwrap();
    let out = check("olmoearth-v1-nano", dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("golden check failed"));
}

/// Monthly VRTs of the golden window (x 0..64, y 0..64) of the WorldCereal NetCDF.
fn worldcereal_months(dir: &std::path::Path) {
    worldcereal_s2(dir, 64, &ALL_MONTHS);
}

/// Sentinel-1 of the golden window in dB, one 2-band (vv, vh) GeoTIFF per month.
fn worldcereal_s1_months(dir: &std::path::Path) {
    worldcereal_s1(dir, 64, &ALL_MONTHS, false);
}

/// The same in linear power (`linear`) instead of dB.
fn worldcereal_s1_months_in(dir: &std::path::Path, linear: bool) {
    worldcereal_s1(dir, 64, &ALL_MONTHS, linear);
}

fn s1_model() -> String {
    root()
        .join("models/olmoearth/olmoearth-v1-nano-s1.json")
        .display()
        .to_string()
}

#[test]
fn sentinel1_in_linear_power_or_in_its_acquisition_geometry_is_refused_with_the_fix() {
    let scenes = tempfile::tempdir().unwrap();
    worldcereal_months(scenes.path());
    worldcereal_s1_months_in(scenes.path(), true);
    let scene = scenes.path().to_str().unwrap();
    // The window's December composite is 65535 (missing) everywhere: accepted here.
    fails(
        std::path::Path::new(&s1_model()),
        scene,
        &["--accept-out-of-range"],
        &[
            "looks like linear power",
            "the model takes dB",
            "10*log10(A)",
        ],
    );
    // A real Sentinel-1 raster whose geotransform is replaced by GCPs in longitude/latitude.
    worldcereal_s1_months_in(scenes.path(), false);
    let first = scenes.path().join("worldcereal_s1_20201101.tif");
    let ds = gdal::Dataset::open(&first).unwrap();
    let gt = ds.geo_transform().unwrap();
    let utm = gdal::spatial_ref::SpatialRef::from_epsg(32631).unwrap();
    let mut wgs = gdal::spatial_ref::SpatialRef::from_epsg(4326).unwrap();
    wgs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let t = gdal::spatial_ref::CoordTransform::new(&utm, &wgs).unwrap();
    let mut cmd = std::process::Command::new("gdal_translate");
    cmd.args(["-q", "-a_srs", "EPSG:4326"]);
    for (px, py) in [(0.0, 0.0), (64.0, 0.0), (0.0, 64.0), (64.0, 64.0)] {
        let mut x = [gt[0] + px * gt[1]];
        let mut y = [gt[3] + py * gt[5]];
        t.transform_coords(&mut x, &mut y, &mut [0.0]).unwrap();
        cmd.arg("-gcp")
            .args([px, py, x[0], y[0]].iter().map(ToString::to_string));
    }
    drop(ds);
    let gcps = scenes.path().join("gcps.tif");
    assert!(cmd.arg(&first).arg(&gcps).status().unwrap().success());
    std::fs::rename(&gcps, &first).unwrap();
    fails(
        std::path::Path::new(&s1_model()),
        scene,
        &["--accept-out-of-range"],
        &[
            "worldcereal_s1_20201101.tif has ground control points but no geotransform",
            "gdalwarp -t_srs EPSG:32631 -tps",
            "--warp-gcps",
        ],
    );
    // Asked for, it is warped by its GCPs, with a warning.
    let out = tempfile::tempdir().unwrap();
    let o = eoinfer([
        "predict",
        "--model",
        &s1_model(),
        "--scene",
        scene,
        "--out",
        out.path().to_str().unwrap(),
        "--warp-gcps",
        "--accept-out-of-range",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&ok_stdout(&o)).unwrap();
    assert_eq!(summary["counts"]["time_steps"], 12);
    assert!(
        summary["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("was warped by its 4 ground control points")),
        "{}",
        summary["warnings"]
    );
}

#[test]
fn predict_reproduces_pytorch_embeddings_on_the_real_worldcereal_window() {
    let scenes = tempfile::tempdir().unwrap();
    worldcereal_months(scenes.path());
    worldcereal_s1_months(scenes.path());
    for model in [
        "olmoearth-v1-nano",
        "olmoearth-v1_2-nano",
        "olmoearth-v1-nano-s1",
    ] {
        let out = tempfile::tempdir().unwrap();
        let o = eoinfer([
            "predict",
            "--model",
            root()
                .join("models/olmoearth")
                .join(format!("{model}.json"))
                .to_str()
                .unwrap(),
            "--scene",
            scenes.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--name",
            "wc",
            "--json",
            // The window's December composite is 65535 (WorldCereal's missing value, not its
            // NetCDF nodata 32769) everywhere; PyTorch's golden run was fed it as it is.
            "--accept-out-of-range",
        ]);
        ok(&o);
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["counts"]["time_steps"], 12);
        assert!(
            summary["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains("median reflectance 6.5535")),
            "{}",
            summary["warnings"]
        );
        let reference = read_f32_file(
            &root()
                .join("models/olmoearth/golden")
                .join(model)
                .join("features.bin"),
        );
        let cog = out.path().join("wc.embeddings.tif");
        let bands = common::read_f32_bands(&cog);
        let (mut max_abs, mut min_cos) = (0.0_f64, f64::INFINITY);
        for p in 0..64 {
            let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
            for (d, band) in bands.iter().enumerate() {
                let (x, y) = (f64::from(band[p]), f64::from(reference[d * 64 + p]));
                max_abs = max_abs.max((x - y).abs());
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            min_cos = min_cos.min(dot / (na * nb).sqrt());
        }
        println!(
            "{model}: eoinfer predict vs PyTorch on the 12-month WorldCereal window: min cosine {min_cos:.9}, max abs {max_abs:.3e}"
        );
        assert!(min_cos >= 0.99999, "{model}: cosine {min_cos}");
        assert!(max_abs <= 1e-4, "{model}: max abs {max_abs}");
    }
}

#[test]
fn a_five_date_series_gives_an_embeddings_cog_and_geoparquet_on_the_patch_grid() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let scene = shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100");
    let out = tempfile::tempdir().unwrap();
    let o = eoinfer([
        "predict",
        "--model",
        root()
            .join("models/olmoearth/olmoearth-v1-nano.json")
            .to_str()
            .unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dates: Vec<String> = summary["time_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}-{:02}-{:02}",
                t["date"]["year"],
                t["date"]["month"].as_u64().unwrap(),
                t["date"]["day"].as_u64().unwrap()
            )
        })
        .collect();
    assert_eq!(
        dates,
        [
            "2015-07-11",
            "2015-07-31",
            "2015-08-20",
            "2015-08-30",
            "2015-09-09"
        ]
    );

    // The COG: one pixel per 8 x 8 px patch, starting at the scene's origin.
    let cog = out
        .path()
        .join("s2_l1c_timeseries_eolearn_slovenia_101x100.embeddings.tif");
    let info = gdalinfo(&cog);
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG");
    assert_eq!(info["bands"].as_array().unwrap().len(), 128);
    assert_eq!(
        info["size"],
        serde_json::json!([13, 13]),
        "ceil(100 / 8) x ceil(101 / 8) patches"
    );
    let scene_info = gdalinfo(&scene.join("S2_L1C_20150711_13band.tif"));
    let gt = info["geoTransform"].as_array().unwrap();
    assert!(
        (gt[0].as_f64().unwrap() - scene_info["geoTransform"][0].as_f64().unwrap()).abs() < 1e-6
    );
    assert!(
        (gt[3].as_f64().unwrap() - scene_info["geoTransform"][3].as_f64().unwrap()).abs() < 1e-6
    );
    assert_eq!(gt[1], 80.0);
    assert_eq!(gt[5], -80.0);
    assert!(
        info["coordinateSystem"]["wkt"]
            .as_str()
            .unwrap()
            .contains("ID[\"EPSG\",32633]]")
    );

    // The GeoParquet: one row per patch, its polygon the COG pixel, its embedding the pixel's values.
    let table = out
        .path()
        .join("s2_l1c_timeseries_eolearn_slovenia_101x100.embeddings.parquet");
    let reader = SerializedFileReader::new(std::fs::File::open(&table).unwrap()).unwrap();
    let geo = geo_metadata(&table);
    assert_eq!(geo["columns"]["geometry"]["crs"]["id"]["code"], 32633);
    let bands = common::read_f32_bands(&cog);
    let (x0, y0) = (gt[0].as_f64().unwrap(), gt[3].as_f64().unwrap());
    let mut rows = 0;
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let get = |name: &str| {
            row.get_column_iter()
                .find(|(n, _)| n.as_str() == name)
                .unwrap()
                .1
                .clone()
        };
        let (Field::Int(r), Field::Int(c)) = (get("patch_row"), get("patch_col")) else {
            panic!()
        };
        let (Field::Double(cx), Field::Double(cy)) = (get("center_x"), get("center_y")) else {
            panic!()
        };
        assert!((cx - (x0 + (f64::from(c) + 0.5) * 80.0)).abs() < 1e-6);
        assert!((cy - (y0 - (f64::from(r) + 0.5) * 80.0)).abs() < 1e-6);
        let (Field::Double(lon), Field::Double(lat)) = (get("lon"), get("lat")) else {
            panic!()
        };
        assert!(
            (14.0..15.0).contains(&lon) && (45.5..46.5).contains(&lat),
            "centre {lon}, {lat} is in Slovenia"
        );
        let Field::ListInternal(list) = get("embedding") else {
            panic!("embedding is a list")
        };
        assert_eq!(list.len(), 128);
        let p = r as usize * 13 + c as usize;
        for (d, v) in list.elements().iter().enumerate() {
            let Field::Float(v) = v else { panic!() };
            assert!((v - bands[d][p]).abs() <= 1e-6 * v.abs().max(1.0));
        }
        let Field::Bytes(wkb) = get("geometry") else {
            panic!()
        };
        assert_eq!(wkb.len(), 93);
        rows += 1;
    }
    assert_eq!(rows, 169);

    // geopandas reads it with its CRS; DuckDB runs a similarity search over it.
    let seen = check_parquet("-", table.to_str().unwrap());
    assert_eq!(seen["embeddings"]["rows"], 169);
    assert_eq!(seen["embeddings"]["epsg"], 32633);
    assert_eq!(seen["embeddings"]["dim"], 128);
    assert_eq!(
        seen["embeddings"]["geom_types"],
        serde_json::json!(["Polygon"])
    );
    assert_eq!(seen["embeddings"]["area_m2"], serde_json::json!([6400.0]));
    assert_eq!(
        seen["embeddings"]["duckdb_top"][0],
        serde_json::json!([0, 0, 1.0])
    );
}

fn embed(
    model: &str,
    scenes: &[&str],
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let manifest = root()
        .join("models/olmoearth")
        .join(format!("{model}.json"));
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        manifest.display().to_string(),
    ];
    for s in scenes {
        args.push("--scene".into());
        args.push((*s).to_string());
    }
    args.extend([
        "--out".into(),
        out.display().to_string(),
        "--name".into(),
        "run".into(),
    ]);
    args.extend(extra.iter().map(|s| (*s).to_string()));
    eoinfer(&args)
}

#[test]
fn a_series_from_a_list_file_a_stac_item_collection_or_repeated_scenes_gives_the_same_embeddings() {
    let scene = shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100");
    let dir = tempfile::tempdir().unwrap();
    let dates = ["20150909", "20150711", "20150820", "20150731", "20150830"]; // deliberately unsorted
    let files: Vec<String> = dates
        .iter()
        .map(|d| {
            scene
                .join(format!("S2_L1C_{d}_13band.tif"))
                .display()
                .to_string()
        })
        .collect();
    // Reference: the folder of dated files.
    ok(&embed(
        "olmoearth-v1_2-nano",
        &[scene.to_str().unwrap()],
        &dir.path().join("folder"),
        &[],
    ));
    let reference = common::read_f32_bands(&dir.path().join("folder/run.embeddings.tif"));

    let list = dir.path().join("scenes.txt");
    std::fs::write(&list, files.join("\n")).unwrap();
    let items: Vec<serde_json::Value> = dates
        .iter()
        .zip(&files)
        .map(|(d, f)| {
            serde_json::json!({
                "type": "Feature", "stac_version": "1.0.0", "id": format!("S2_{d}"),
                "properties": {"datetime": format!("{}-{}-{}T10:00:00Z", &d[..4], &d[4..6], &d[6..])},
                "assets": {"bands": {"href": f, "type": "image/tiff"}}
            })
        })
        .collect();
    let stac = dir.path().join("items.json");
    std::fs::write(
        &stac,
        serde_json::json!({"type": "FeatureCollection", "features": items}).to_string(),
    )
    .unwrap();
    let repeated: Vec<&str> = files.iter().map(String::as_str).collect();
    for (what, scenes) in [
        ("list", vec![list.to_str().unwrap()]),
        ("stac", vec![stac.to_str().unwrap()]),
        ("repeated", repeated),
    ] {
        let out = dir.path().join(what);
        let o = embed("olmoearth-v1_2-nano", &scenes, &out, &["--json"]);
        ok(&o);
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["counts"]["time_steps"], 5, "{what}");
        assert_eq!(
            summary["time_steps"][0]["date"]["day"], 11,
            "{what}: sorted by date"
        );
        assert_eq!(
            common::read_f32_bands(&out.join("run.embeddings.tif")),
            reference,
            "{what}"
        );
    }
}

#[test]
fn a_time_step_without_a_date_is_named_and_dates_can_be_given() {
    let months = tempfile::tempdir().unwrap();
    worldcereal_months(months.path());
    let undated = tempfile::tempdir().unwrap();
    let mut scenes = Vec::new();
    for (i, f) in ["worldcereal_20201101.vrt", "worldcereal_20201201.vrt"]
        .iter()
        .enumerate()
    {
        let to = undated.path().join(format!("month_{}.vrt", ["a", "b"][i]));
        std::fs::copy(months.path().join(f), &to).unwrap();
        scenes.push(to.display().to_string());
    }
    let refs: Vec<&str> = scenes.iter().map(String::as_str).collect();
    let out = undated.path().join("out");
    let o = embed("olmoearth-v1-nano", &refs, &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot find the acquisition date of") && err.contains("--dates"),
        "{err}"
    );
    assert!(files_in(&out).is_empty());
    ok(&embed(
        "olmoearth-v1-nano",
        &refs,
        &out,
        &["--dates", "2020-11-01,2020-12-01", "--accept-out-of-range"],
    ));
    assert!(out.join("run.embeddings.parquet").is_file());
}

#[test]
fn models_lists_every_manifest_and_whether_its_onnx_file_is_there() {
    let o = eoinfer(["models", "--json"]);
    ok(&o);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for id in [
        "olmoearth-v1-nano",
        "olmoearth-v1_2-nano",
        "ukis-csmask-6b-l1c",
        "ukis-csmask-4b-l2a",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["onnx_present"] == true)
    );
    let dir = tempfile::tempdir().unwrap();
    let mut m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/olmoearth/olmoearth-v1-nano.json")).unwrap(),
    )
    .unwrap();
    m["assets"]["model"]["href"] = "absent.onnx".into();
    std::fs::write(dir.path().join("m.json"), m.to_string()).unwrap();
    let o = eoinfer(["models", "--dir", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("MISSING") && text.contains("make olmoearth-models"),
        "{text}"
    );
}

#[test]
fn uint8_embeddings_decode_with_their_scale_and_offset_to_within_half_a_step() {
    let scene = shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100");
    let dir = tempfile::tempdir().unwrap();
    ok(&embed(
        "olmoearth-v1-nano",
        &[scene.to_str().unwrap()],
        &dir.path().join("f32"),
        &[],
    ));
    ok(&embed(
        "olmoearth-v1-nano",
        &[scene.to_str().unwrap()],
        &dir.path().join("u8"),
        &["--embedding-dtype", "uint8"],
    ));
    let float = common::read_f32_bands(&dir.path().join("f32/run.embeddings.tif"));
    let cog = dir.path().join("u8/run.embeddings.tif");
    let ds = gdal::Dataset::open(&cog).unwrap();
    assert_eq!(
        ds.rasterband(1).unwrap().band_type(),
        gdal::raster::GdalDataType::UInt8
    );
    for (b, f) in float.iter().enumerate() {
        let band = ds.rasterband(b + 1).unwrap();
        let (scale, offset) = (band.scale().unwrap(), band.offset().unwrap());
        assert_eq!(band.no_data_value(), Some(0.0));
        let mut q = vec![0_u8; f.len()];
        band.read_into_slice::<u8>((0, 0), (13, 13), (13, 13), &mut q, None)
            .unwrap();
        for (&qv, &fv) in q.iter().zip(f) {
            assert!(qv > 0, "valid patches are never the nodata value");
            let decoded = f64::from(qv) * scale + offset;
            assert!(
                (decoded - f64::from(fv)).abs() <= scale / 2.0 + 1e-6,
                "band {b}: {decoded} vs {fv} (step {scale})"
            );
        }
    }
}

#[test]
fn a_segmentation_head_on_the_encoder_gives_a_class_map_matching_pytorch() {
    let scenes = tempfile::tempdir().unwrap();
    worldcereal_months(scenes.path());
    let out = tempfile::tempdir().unwrap();
    let o = embed(
        "olmoearth-v1-nano-seg",
        &[scenes.path().to_str().unwrap()],
        out.path(),
        // The golden run fed the missing December composite (65535) too.
        &["--probabilities", "--json", "--accept-out-of-range"],
    );
    ok(&o);
    let logits =
        read_f32_file(&root().join("models/olmoearth/golden/olmoearth-v1-nano-seg/features.bin"));
    let (classes, w, h) = read_u8(&out.path().join("run.classes.tif"), 1);
    assert_eq!((w, h), (64, 64));
    let info = gdalinfo(&out.path().join("run.classes.tif"));
    assert_eq!(
        info["bands"][0]["categories"],
        serde_json::json!(["cropland", "grassland", "forest", "water"])
    );
    let plane = 64 * 64;
    let probs: Vec<Vec<u8>> = (1..=4)
        .map(|b| read_u8(&out.path().join("run.probs.tif"), b).0)
        .collect();
    let mut agree = 0;
    for i in 0..plane {
        let l: Vec<f32> = (0..4).map(|c| logits[c * plane + i]).collect();
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = l.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        let best = (0..4).fold(0, |b, c| if l[c] > l[b] { c } else { b });
        agree += usize::from(usize::from(classes[i]) == best);
        for (c, (p, ec)) in probs.iter().zip(&e).enumerate() {
            let expected = (ec / sum * 255.0).round();
            assert!(
                (f32::from(p[i]) - expected).abs() <= 1.0,
                "probability of class {c} at {i}"
            );
        }
    }
    println!("head class map vs argmax of PyTorch's logits: {agree} / {plane} pixels agree");
    assert!(agree as f64 >= 0.999 * plane as f64);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let total: u64 = summary["counts"]["class_pixels"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, plane as u64);
    assert!(out.path().join("run.tiles.parquet").is_file());
}

#[test]
fn a_time_step_without_valid_pixels_is_left_out_with_a_warning() {
    let scene = shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100");
    let dir = tempfile::tempdir().unwrap();
    // A cloud-masked acquisition: every pixel is nodata.
    let empty = dir.path().join("S2_L1C_20150801_13band.tif");
    let src = gdal::Dataset::open(scene.join("S2_L1C_20150711_13band.tif")).unwrap();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver
        .create_with_band_type::<f32, _>(&empty, 100, 101, 13)
        .unwrap();
    ds.set_geo_transform(&src.geo_transform().unwrap()).unwrap();
    ds.set_spatial_ref(&src.spatial_ref().unwrap()).unwrap();
    for b in 1..=13 {
        let mut band = ds.rasterband(b).unwrap();
        let name = gdal::Metadata::description(&src.rasterband(b).unwrap()).unwrap();
        gdal::Metadata::set_description(&mut band, &name).unwrap();
        band.write(
            (0, 0),
            (100, 101),
            &mut gdal::raster::Buffer::new((100, 101), vec![f32::NAN; 100 * 101]),
        )
        .unwrap();
    }
    drop(ds);
    let scenes = [
        scene.join("S2_L1C_20150711_13band.tif"),
        empty.clone(),
        scene.join("S2_L1C_20150820_13band.tif"),
    ];
    let refs: Vec<&str> = scenes.iter().map(|p| p.to_str().unwrap()).collect();
    let o = embed(
        "olmoearth-v1-nano",
        &refs,
        &dir.path().join("out"),
        &["--json"],
    );
    let err = ok(&o);
    assert!(
        err.contains("2015-08-01") && err.contains("no valid pixel"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["counts"]["time_steps"], 2);
    assert!(
        summary["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("left out")),
        "{}",
        summary["warnings"]
    );
}

#[test]
fn reduced_precision_exports_meet_their_stated_tolerance_and_bfloat16_is_refused_on_the_cpu() {
    // float16: computed in float16 between float32 casts; checked against PyTorch float32 to
    // the tolerance its export measured (golden.json `tolerance`), far looser than 1e-4.
    let model = "olmoearth-v1-nano-fp16";
    let golden = root().join("models/olmoearth/golden").join(model);
    let out = check(model, &golden);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("golden.json")).unwrap())
            .unwrap();
    let (cos, max_abs) = (
        report["golden"]["min_cosine"].as_f64().unwrap(),
        report["golden"]["max_abs"].as_f64().unwrap(),
    );
    println!("{model}: min cosine {cos:.9}, max abs {max_abs:.2e} against PyTorch float32");
    assert!(max_abs <= meta["tolerance"]["max_abs"].as_f64().unwrap());
    assert!(cos >= meta["tolerance"]["min_cosine"].as_f64().unwrap());
    // It is not float32: it differs from PyTorch float32 by more than float32 rounding.
    assert!(max_abs > 1e-5, "{max_abs}");
    // bfloat16 has no CPU kernels in ONNX Runtime: a clear refusal, not a loader error.
    let model = "olmoearth-v1-nano-bf16";
    let out = check(model, &root().join("models/olmoearth/golden").join(model));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot run on cpu")
            && err.contains("bfloat16")
            && err.contains("--device cuda"),
        "{err}"
    );
    // Not a manifest problem: no advice to regenerate it.
    assert!(!err.contains("import-ukis"), "{err}");
}
