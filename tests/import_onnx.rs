//! `eoinfer model import-onnx`: a model that carries its contract in ONNX custom metadata
//! (the QGIS Deepness / GeoDeep keys) runs with one command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::Command;

#[test]
fn a_model_described_by_onnx_metadata_imports_and_runs_on_an_rgb_geotiff() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("tiny.onnx");
    let st = Command::new(reference_python())
        .arg(root().join("tests/reference/make_deepness_model.py"))
        .arg(&onnx)
        .status()
        .unwrap();
    assert!(st.success());
    let out = eoinfer(["model", "import-onnx", onnx.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&ok_stdout(&out)).unwrap();
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("taken as red, green, blue")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("sensor and product level")));
    let manifest = tmp.path().join("tiny.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let p = &doc["properties"];
    assert_eq!(p["gsd"], 10.0, "resolution 1000 cm/px is 10 m");
    assert_eq!(p["eoinfer:tile_size"], 64);
    assert_eq!(p["eoinfer:overlap"], 16, "25 % of 64 px");
    assert_eq!(
        p["mlm:output"][0]["classification:classes"][1]["name"],
        "bare"
    );
    assert_eq!(
        p["mlm:input"][0]["value_scaling"][0],
        serde_json::json!({"type": "z-score", "mean": 0.3, "stddev": 0.2})
    );
    // The manifest is valid STAC MLM and matches its ONNX file.
    ok(&eoinfer([
        "model",
        "check",
        "--model",
        manifest.to_str().unwrap(),
    ]));

    // An 8-bit RGB GeoTIFF (red, green, blue colour interpretation) made from the demo scene.
    let demo = demo_scene();
    let vrt = tmp.path().join("rgb.vrt");
    let st = Command::new("gdalbuildvrt")
        .args(["-q", "-separate"])
        .arg(&vrt)
        .args(["B04", "B03", "B02"].map(|b| demo.join(format!("T33UUU_20170216T102101_{b}.jp2"))))
        .status()
        .unwrap();
    assert!(st.success());
    let rgb = tmp.path().join("rgb.tif");
    let st = Command::new("gdal_translate")
        .args(["-q", "-ot", "Byte", "-scale", "0", "3000", "0", "255"])
        .args(["-colorinterp", "red,green,blue"])
        .arg(&vrt)
        .arg(&rgb)
        .status()
        .unwrap();
    assert!(st.success());
    let run = tmp.path().join("out");
    let out = eoinfer([
        "predict",
        "--model",
        manifest.to_str().unwrap(),
        "--scene",
        rgb.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--name",
        "run",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&ok_stdout(&out)).unwrap();
    assert!(
        summary["scene"]["bands"][0]["scaling"]
            .as_str()
            .unwrap()
            .contains("Deepness convention: 8-bit values / 255")
    );
    // The model calls a pixel "bare" (1) exactly where red exceeds green.
    let (classes, w, h) = read_u8(&run.join("run.classes.tif"), 1);
    let (red, _, _) = read_u8(&rgb, 1);
    let (green, _, _) = read_u8(&rgb, 2);
    assert_eq!((w, h), (1536, 768));
    let wrong = (0..w * h)
        .filter(|&i| classes[i] != u8::from(red[i] > green[i]))
        .count();
    assert_eq!(wrong, 0, "{wrong} pixels differ from red > green");
}
