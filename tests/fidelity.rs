//! Fidelity against the model authors' own code: ukis-csmask's Python `CSmask` runs on
//! exactly the pixels `eoinfer predict` reads (the stack `eoinfer prepare` writes), and the
//! class maps are compared pixel by pixel. Figures are printed (run with --nocapture).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;

struct Agreement {
    reference_scheme: f64,
    default_scheme: f64,
    valid: usize,
}

fn compare(model: &str, level: &str, scene: &Path, extra: &[&str]) -> Agreement {
    let dir = tempfile::tempdir().unwrap();
    let model = manifest(model);
    let stack = dir.path().join("stack.tif");
    let mut args = vec![
        "prepare",
        "--model",
        model.to_str().unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--out",
        stack.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&eoinfer(&args));

    let reference = dir.path().join("reference.u8");
    let py = std::process::Command::new(reference_python())
        .arg(root().join("tests/reference/csmask_reference.py"))
        .arg(&stack)
        .arg("blue,green,red,nir,swir16,swir22")
        .arg(level)
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "CSmask failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let reference = std::fs::read(&reference).unwrap();

    let mut maps = Vec::new();
    for tiling in ["reference", "blended"] {
        let out = dir.path().join(tiling);
        let mut args = vec![
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--scene",
            scene.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--name",
            "run",
            "--tiling",
            tiling,
        ];
        args.extend_from_slice(extra);
        ok(&eoinfer(&args));
        let (px, _, _) = read_u8(&out.join("run.classes.tif"), 1);
        assert_eq!(px.len(), reference.len());
        maps.push(px);
    }
    let valid: Vec<usize> = (0..reference.len())
        .filter(|&i| reference[i] != 255)
        .collect();
    let agree = |m: &[u8]| {
        valid.iter().filter(|&&i| m[i] == reference[i]).count() as f64 / valid.len() as f64
    };
    Agreement {
        reference_scheme: agree(&maps[0]),
        default_scheme: agree(&maps[1]),
        valid: valid.len(),
    }
}

#[test]
fn demo_scene_matches_ukis_csmask_with_the_reference_tiling() {
    let a = compare("ukis-csmask-6b-l1c.json", "l1c", &demo_scene(), &[]);
    println!(
        "T33UUU L1C, 6-band L1C model, 30 m, {} valid px: reference tiling agrees with CSmask on {:.4} %, default blended tiling on {:.4} %",
        a.valid,
        a.reference_scheme * 100.0,
        a.default_scheme * 100.0
    );
    assert!(a.valid > 100_000);
    assert!(
        a.reference_scheme >= 0.999,
        "agreement {:.5} < 99.9 %",
        a.reference_scheme
    );
}

#[test]
fn earth_search_l2a_scene_at_100_m_matches_ukis_csmask_with_the_reference_tiling() {
    let scene = shared_scene("s2_l2a_T29RKH_20200219_earthsearch/original_cogs");
    let a = compare(
        "ukis-csmask-6b-l2a.json",
        "l2a",
        &scene,
        &["--resolution", "100"],
    );
    println!(
        "T29RKH L2A, 6-band L2A model, 100 m, {} valid px: reference tiling agrees with CSmask on {:.4} %, default blended tiling on {:.4} %",
        a.valid,
        a.reference_scheme * 100.0,
        a.default_scheme * 100.0
    );
    assert!(a.valid > 1_000_000);
    assert!(
        a.reference_scheme >= 0.999,
        "agreement {:.5} < 99.9 %",
        a.reference_scheme
    );
}
