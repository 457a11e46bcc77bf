//! The performance and tiling-quality levers: `bench-model` (the limit the benchmark measures
//! against), test-time augmentation, larger tiles on a model made dynamic, and the benchmark
//! harness itself (`scripts/bench.py --smoke`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;

fn summary_of(stdout: &str) -> serde_json::Value {
    let start = stdout.find('{').expect("JSON on stdout");
    serde_json::from_str(&stdout[start..]).expect("valid JSON")
}

#[test]
fn bench_model_runs_exactly_the_tiles_predict_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = manifest("ukis-csmask-6b-l1c.json");
    let scene = demo_scene();
    let common = [
        "--model",
        model.to_str().unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
        "--tiling",
        "reference",
    ];
    let limit = summary_of(&ok_stdout(&eoinfer(
        ["bench-model"].iter().chain(common.iter()).copied(),
    )));
    assert!(
        files_in(dir.path()).is_empty(),
        "bench-model writes nothing"
    );
    let run = summary_of(&ok_stdout(&eoinfer(
        ["predict", "--json"].iter().chain(common.iter()).copied(),
    )));
    assert_eq!(limit["tiles"], run["counts"]["tiles"]);
    assert_eq!(limit["tiles_inferred"], run["counts"]["tiles_inferred"]);
    assert_eq!(limit["runs_per_tile"], 1);
    assert!(limit["inference_s"].as_f64().unwrap() > 0.0);

    let d4 = summary_of(&ok_stdout(&eoinfer(
        ["bench-model", "--tta", "d4"]
            .iter()
            .chain(common.iter())
            .copied(),
    )));
    assert_eq!(d4["runs_per_tile"], 8);
}

/// Writes `src` mirrored left-right, georeferenced like `src`, with the reference venv.
fn mirror(src: &Path, dst: &Path) {
    let code = r#"
import sys, rasterio
with rasterio.open(sys.argv[1]) as s:
    a = s.read()[:, :, ::-1]
    p = s.profile
    d = [s.descriptions[i] for i in range(s.count)]
with rasterio.open(sys.argv[2], "w", **p) as o:
    o.write(a)
    for i, n in enumerate(d, 1):
        o.set_band_description(i, n)
"#;
    let o = std::process::Command::new(reference_python())
        .args(["-c", code])
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn flip_tta_makes_the_class_map_mirror_with_the_scene() {
    // On a scene whose tile grid is symmetric (480 px wide: tiles at 0 and 224), averaging
    // over the flips makes the result equivariant: the mirrored scene gives the mirrored map.
    let dir = tempfile::tempdir().unwrap();
    let model = manifest("ukis-csmask-6b-l1c.json");
    let full = dir.path().join("stack.tif");
    ok(&eoinfer([
        "prepare",
        "--model",
        model.to_str().unwrap(),
        "--scene",
        demo_scene().to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]));
    let crop = dir.path().join("crop.tif");
    let t = std::process::Command::new("gdal_translate")
        .args(["-q", "-srcwin", "16", "0", "480", "256"])
        .arg(&full)
        .arg(&crop)
        .status()
        .unwrap();
    assert!(t.success());
    let mirrored = dir.path().join("mirrored.tif");
    mirror(&crop, &mirrored);

    let mut agreement = Vec::new();
    for tta in ["none", "flip"] {
        let mut maps = Vec::new();
        for (scene, name) in [(&crop, "a"), (&mirrored, "b")] {
            let out = dir.path().join(tta);
            let stdout = ok_stdout(&eoinfer([
                "predict",
                "--model",
                model.to_str().unwrap(),
                "--scene",
                scene.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--name",
                name,
                "--tta",
                tta,
                "--json",
            ]));
            assert_eq!(summary_of(&stdout)["parameters"]["tta"], tta);
            let (px, w, h) = read_u8(&out.join(format!("{name}.classes.tif")), 1);
            assert_eq!((w, h), (480, 256));
            maps.push(px);
        }
        let (a, b) = (&maps[0], &maps[1]);
        let same = (0..256)
            .flat_map(|y| (0..480).map(move |x| (y, x)))
            .filter(|&(y, x)| a[y * 480 + x] == b[y * 480 + 479 - x])
            .count();
        agreement.push(same as f64 / (480.0 * 256.0));
    }
    println!(
        "mirrored scene gives the mirrored class map on {:.4} % of pixels without TTA, {:.4} % with flip TTA",
        agreement[0] * 100.0,
        agreement[1] * 100.0
    );
    assert!(
        agreement[1] >= 0.9999,
        "flip TTA is not equivariant: {:.5}",
        agreement[1]
    );
    assert!(agreement[1] >= agreement[0]);
}

#[test]
fn larger_tiles_need_and_work_with_a_dynamic_model() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = manifest("ukis-csmask-6b-l1c.json");
    let scene = demo_scene();
    let base = |model: &Path, out: &Path| {
        vec![
            "predict".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--scene".into(),
            scene.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--name".into(),
            "run".into(),
        ]
    };
    // The shipped model has a fixed 256 px input: a clear error, no output.
    let out = dir.path().join("fixed");
    let mut args = base(&fixed, &out);
    args.extend(["--tile-size".into(), "512".into()]);
    let o = eoinfer(&args);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fixed at 256") && err.contains("onnx_dynamic_hw.py"),
        "{err}"
    );
    assert!(files_in(&out).iter().all(|f| !f.starts_with("run.")));
    let mut args = base(&fixed, &out);
    args.extend(["--tile-size".into(), "8".into()]);
    let o = eoinfer(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("too small"));

    // The dynamic copy: same output at 256 px, and it runs 512 px tiles.
    let o = std::process::Command::new(reference_python())
        .arg(root().join("scripts/onnx_dynamic_hw.py"))
        .arg(&fixed)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dynamic = root().join("models/ukis-csmask-6b-l1c-dynamic.json");
    let mut maps = Vec::new();
    for (model, tile) in [(&fixed, None), (&dynamic, None), (&dynamic, Some("512"))] {
        let out = dir.path().join(format!(
            "{}-{}",
            model.file_stem().unwrap().to_string_lossy(),
            tile.unwrap_or("256")
        ));
        let mut args = base(model, &out);
        args.push("--json".into());
        if let Some(t) = tile {
            args.extend([
                "--tile-size".into(),
                t.into(),
                "--overlap".into(),
                "64".into(),
            ]);
        }
        let s = summary_of(&ok_stdout(&eoinfer(&args)));
        if tile.is_some() {
            assert_eq!(s["parameters"]["tile_size"], 512);
            assert_eq!(s["counts"]["tiles"], 1);
        }
        maps.push(read_u8(&out.join("run.classes.tif"), 1).0);
    }
    assert_eq!(
        maps[0], maps[1],
        "the dynamic copy changes nothing at 256 px"
    );
    let agree =
        maps[0].iter().zip(&maps[2]).filter(|(a, b)| a == b).count() as f64 / maps[0].len() as f64;
    println!(
        "512 px tiles agree with 256 px tiles on {:.3} % of the demo scene",
        agree * 100.0
    );
    assert!(agree > 0.9, "512 px tiles agree on only {agree:.4}");
}

#[test]
fn the_benchmark_harness_runs() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(reference_python())
        .arg(root().join("scripts/bench.py"))
        .args(["--smoke", "--work"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{stdout}");
    for needle in [
        "Machine: ",
        "| limit: ONNX Runtime alone",
        "| **eoinfer predict** end to end",
        "| peer: ukis-csmask `CSmask` + rasterio",
        "efficiency (limit / eoinfer end to end)",
        "4-tile scene",
        "shift consistency",
        "[default]",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    // The two pipelines agree on the reference tiling.
    let agree: f64 = stdout
        .split("class maps agree on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("agreement figure");
    assert!(agree >= 99.9, "eoinfer and the peer agree on {agree} %");
}
