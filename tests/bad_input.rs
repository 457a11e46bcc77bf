//! Bad input: each case names the problem and the fix, exits with 2 and leaves no output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn l1c() -> PathBuf {
    manifest("ukis-csmask-6b-l1c.json")
}

/// A 6-band float32 GeoTIFF with the model's band names, optionally georeferenced.
fn small_stack(path: &Path, geo: bool, crs: bool, value: f32) {
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver
        .create_with_band_type::<f32, _>(path, 300, 280, 6)
        .unwrap();
    if geo {
        ds.set_geo_transform(&[330_000.0, 30.0, 0.0, 5_822_040.0, 0.0, -30.0])
            .unwrap();
    }
    if crs {
        ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32633).unwrap())
            .unwrap();
    }
    for (i, name) in ["blue", "green", "red", "nir", "swir16", "swir22"]
        .iter()
        .enumerate()
    {
        let mut b = ds.rasterband(i + 1).unwrap();
        gdal::Metadata::set_description(&mut b, name).unwrap();
        b.set_no_data_value(Some(-1.0)).unwrap();
        let mut buf = gdal::raster::Buffer::new((300, 280), vec![value; 300 * 280]);
        b.write((0, 0), (300, 280), &mut buf).unwrap();
    }
}

#[test]
fn a_missing_scene_is_named() {
    fails(
        &l1c(),
        "/nonexistent/scene.tif",
        &[],
        &[
            "scene /nonexistent/scene.tif does not exist",
            "folder of per-band files",
        ],
    );
}

#[test]
fn a_file_that_is_not_a_raster_is_named() {
    let scene = root().join("Cargo.toml");
    fails(
        &l1c(),
        scene.to_str().unwrap(),
        &[],
        &["is not a raster GDAL can read", "GeoTIFF"],
    );
}

#[test]
fn a_band_the_model_needs_but_the_scene_lacks_is_named_with_what_the_scene_has() {
    let dir = tempfile::tempdir().unwrap();
    for b in ["B02", "B03", "B04", "B08"] {
        let f = format!("T33UUU_20170216T102101_{b}.jp2");
        std::os::unix::fs::symlink(demo_scene().join(&f), dir.path().join(&f)).unwrap();
    }
    fails(
        &l1c(),
        dir.path().to_str().unwrap(),
        &[],
        &[
            "needs band swir16 (B11)",
            "T33UUU_20170216T102101_B08",
            "--bands swir16=",
        ],
    );
}

#[test]
fn a_scene_without_geotransform_or_crs_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let nogeo = dir.path().join("nogeo.tif");
    small_stack(&nogeo, false, false, 0.1);
    fails(
        &l1c(),
        nogeo.to_str().unwrap(),
        &[],
        &["has no geotransform", "gdalwarp"],
    );
    let nocrs = dir.path().join("nocrs.tif");
    small_stack(&nocrs, true, false, 0.1);
    fails(
        &l1c(),
        nocrs.to_str().unwrap(),
        &[],
        &["has no coordinate reference system", "-a_srs"],
    );
}

#[test]
fn a_manifest_that_is_not_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("broken.json");
    std::fs::write(&m, "{ this is not json").unwrap();
    fails(
        &m,
        demo_scene().to_str().unwrap(),
        &[],
        &["is not valid STAC MLM JSON", "broken.json"],
    );
}

fn manifest_with_onnx(dir: &Path, onnx: &Path) -> PathBuf {
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(l1c()).unwrap()).unwrap();
    m["assets"]["model"]["href"] = serde_json::json!(onnx.display().to_string());
    let p = dir.join("m.json");
    std::fs::write(&p, m.to_string()).unwrap();
    p
}

#[test]
fn a_manifest_that_does_not_match_its_onnx_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // The 6-band manifest pointed at the 4-band model.
    let m = manifest_with_onnx(
        dir.path(),
        &root().join("models/ukis-csmask/model_4b_l1c.onnx"),
    );
    fails(
        &m,
        demo_scene().to_str().unwrap(),
        &[],
        &["does not match the ONNX model", "input shape", "6", "4"],
    );
}

#[test]
fn a_corrupt_onnx_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.onnx");
    let real = std::fs::read(root().join("models/ukis-csmask/model_6b_l1c.onnx")).unwrap();
    std::fs::write(&bad, &real[..real.len() / 3]).unwrap();
    let m = manifest_with_onnx(dir.path(), &bad);
    fails(
        &m,
        demo_scene().to_str().unwrap(),
        &[],
        &["cannot load the model", "corrupt"],
    );
}

#[test]
fn an_output_folder_that_cannot_be_written_is_named() {
    let o = eoinfer([
        "predict",
        "--model",
        l1c().to_str().unwrap(),
        "--scene",
        demo_scene().to_str().unwrap(),
        "--out",
        "/proc/eoinfer-cannot-write-here",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("output folder /proc/eoinfer-cannot-write-here is not writable")
            && err.contains("--out"),
        "{err}"
    );
}

#[test]
fn a_missing_onnx_runtime_is_explained_in_one_paragraph() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_eoinfer"))
        .args([
            "predict",
            "--model",
            l1c().to_str().unwrap(),
            "--scene",
            demo_scene().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so does not exist"),
        "{err}"
    );
    assert!(files_in(&out).is_empty());
}

#[test]
fn a_band_mapping_to_a_band_the_scene_lacks_is_named() {
    fails(
        &l1c(),
        demo_scene().to_str().unwrap(),
        &["--bands", "swir16=B99"],
        &["--bands maps swir16 to B99", "T33UUU_20170216T102101_B11"],
    );
    fails(
        &l1c(),
        demo_scene().to_str().unwrap(),
        &["--bands", "thermal=B10"],
        &["thermal, which is not an input band of the model", "swir22"],
    );
}

#[test]
fn an_entirely_nodata_scene_is_not_an_error_and_gives_an_all_nodata_map() {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("empty.tif");
    small_stack(&scene, true, true, -1.0);
    let out = dir.path().join("out");
    let o = eoinfer([
        "predict",
        "--model",
        l1c().to_str().unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "30",
    ]);
    let err = ok(&o);
    assert!(err.contains("no valid pixel"), "{err}");
    let (px, w, h) = read_u8(&out.join("empty.classes.tif"), 1);
    assert_eq!((w, h), (300, 280));
    assert!(px.iter().all(|&v| v == 255));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("empty.summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["counts"]["tiles_inferred"], 0);
    assert_eq!(summary["counts"]["pixels_valid"], 0);
}

#[test]
fn a_gpu_device_without_cuda_support_fails_loudly_instead_of_falling_back() {
    fails(
        &l1c(),
        demo_scene().to_str().unwrap(),
        &["--device", "cuda:0"],
        &["--device cuda:0", "CUDA"],
    );
    // TensorRT: the same, naming the feature and the libraries it needs.
    fails(
        &l1c(),
        demo_scene().to_str().unwrap(),
        &["--device", "tensorrt:0"],
        &[
            "--device tensorrt:0",
            "TensorRT",
            "--features tensorrt",
            "LD_LIBRARY_PATH",
        ],
    );
}
