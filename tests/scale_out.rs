//! Regions at scale: AOI grids over several scenes, sharded runs merged, runs killed and
//! resumed, plan hashes, and the deploy manifests. Real scenes, real models, the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    assert_stac_valid, eoinfer, ok, ok_stdout, read_u8, reference_python, root, same_rasters,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MODEL: &str = "models/ukis-csmask-6b-l1c.json";
const BANDS: [&str; 6] = ["B02", "B03", "B04", "B08", "B11", "B12"];

/// A neighbour of the demo scene: its six model bands shifted 12 km east (so the two overlap
/// by 3.36 km), then warped to the next UTM zone (EPSG:32632), dated 2017-03-10. Built once
/// with gdal_translate and gdalwarp under target/test-fixtures.
fn neighbour() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = root().join("target/test-fixtures/neighbour-32632");
        let done = dir.join(".complete");
        if done.exists() {
            return dir;
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scene = common::demo_scene();
        for b in BANDS {
            let src = scene.join(format!("T33UUU_20170216T102101_{b}.jp2"));
            let info = common::gdalinfo(&src);
            let ul = &info["cornerCoordinates"]["upperLeft"];
            let lr = &info["cornerCoordinates"]["lowerRight"];
            let shifted = dir.join(format!("shifted_{b}.vrt"));
            let st = Command::new("gdal_translate")
                .args(["-q", "-of", "VRT", "-a_ullr"])
                .arg((ul[0].as_f64().unwrap() + 12000.0).to_string())
                .arg(ul[1].as_f64().unwrap().to_string())
                .arg((lr[0].as_f64().unwrap() + 12000.0).to_string())
                .arg(lr[1].as_f64().unwrap().to_string())
                .arg(&src)
                .arg(&shifted)
                .status()
                .unwrap();
            assert!(st.success());
            let st = Command::new("gdalwarp")
                .args(["-q", "-t_srs", "EPSG:32632", "-r", "bilinear"])
                .args(["-co", "COMPRESS=DEFLATE"])
                .arg(&shifted)
                .arg(dir.join(format!("T33UUU_20170310T101021_{b}.tif")))
                .status()
                .unwrap();
            assert!(st.success());
            std::fs::remove_file(&shifted).unwrap();
        }
        std::fs::write(&done, b"").unwrap();
        dir
    })
    .clone()
}

/// An AOI polygon (WGS84) over the demo scene and its neighbour: 336000..352000 m east,
/// 5815500..5821600 m north in EPSG:32633, with a slanted north edge.
fn aoi_file(dir: &Path) -> PathBuf {
    let path = dir.join("district.geojson");
    std::fs::write(
        &path,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"district"},"geometry":{"type":"Polygon","coordinates":[[[12.5858136272268,52.4650050832232],[12.8211489928386,52.4695759626434],[12.8187043115042,52.5189862481508],[12.700615456257,52.5221450890378],[12.5831054942552,52.5144072523043],[12.5858136272268,52.4650050832232]]]}}]}"#,
    )
    .unwrap();
    path
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn an_aoi_straddling_two_scenes_in_two_crs_is_one_seamless_grid_with_nodata_outside_the_polygon() {
    let tmp = tempfile::tempdir().unwrap();
    let aoi = aoi_file(tmp.path());
    let demo = common::demo_scene();
    let nb = neighbour();
    // Both scenes in one folder: one scene per file-name stem.
    let both = tmp.path().join("scenes");
    std::fs::create_dir_all(&both).unwrap();
    for b in BANDS {
        let a = format!("T33UUU_20170216T102101_{b}.jp2");
        std::os::unix::fs::symlink(demo.join(&a), both.join(&a)).unwrap();
        let n = format!("T33UUU_20170310T101021_{b}.tif");
        std::os::unix::fs::symlink(nb.join(&n), both.join(&n)).unwrap();
    }
    let run = |scenes: &[&Path], out: &str, name: &str| -> serde_json::Value {
        let mut args = vec![
            "predict".to_string(),
            "--model".into(),
            MODEL.into(),
            "--aoi".into(),
            s(&aoi),
            "--out".into(),
            s(&tmp.path().join(out)),
            "--name".into(),
            name.into(),
            "--json".into(),
        ];
        for sc in scenes {
            args.push("--scene".into());
            args.push(s(sc));
        }
        json(&ok_stdout(&eoinfer(&args)))
    };
    let mosaic = run(&[&both], "mosaic", "district");
    let a = run(&[&demo], "a", "a");
    let b = run(&[&nb], "b", "b");

    // The AOI grid: UTM 33N (the centroid's zone), 30 m, origin on whole multiples of 30 m.
    let scenes = mosaic["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 2, "{scenes:?}");
    assert_eq!(scenes[0]["date"], "2017-03-10", "newest first");
    assert_eq!(scenes[0]["crs"], "EPSG:32632");
    assert_eq!(scenes[0]["warped"], true);
    assert_eq!(scenes[1]["crs"], "EPSG:32633");
    assert_eq!(scenes[1]["warped"], false);
    let classes = tmp.path().join("mosaic/district.classes.tif");
    let out = Command::new(reference_python())
        .arg(root().join("tests/reference/check_aoi.py"))
        .arg(&aoi)
        .arg(&classes)
        .arg(tmp.path().join("a/a.classes.tif"))
        .arg(tmp.path().join("b/b.classes.tif"))
        .output()
        .unwrap();
    let check = json(&ok_stdout(&out));
    assert_eq!(check["crs"], "EPSG:32633", "{check}");
    for v in check["origin"].as_array().unwrap() {
        assert_eq!(v.as_f64().unwrap() % 30.0, 0.0, "{check}");
    }
    assert_eq!(check["pixel"], serde_json::json!([30.0, -30.0]));
    // 16 km x 6.1 km at 30 m.
    assert_eq!(check["shape"], serde_json::json!([205, 535]), "{check}");
    // Seamless: every pixel inside the polygon has a class, none outside.
    assert!(check["inside"].as_u64().unwrap() > 90_000, "{check}");
    assert_eq!(check["inside_nodata"], 0, "{check}");
    assert!(check["outside"].as_u64().unwrap() > 5_000, "{check}");
    assert_eq!(check["outside_valid"], 0, "{check}");
    // Where one scene alone covers the AOI, the mosaic is that scene's run (they differ only
    // where tiles see the other scene across the seam).
    assert!(check["a_only"].as_u64().unwrap() > 30_000, "{check}");
    assert!(check["b_only"].as_u64().unwrap() > 30_000, "{check}");
    assert!(check["a_only_agree"].as_f64().unwrap() > 0.95, "{check}");
    assert!(check["b_only_agree"].as_f64().unwrap() > 0.98, "{check}");
    // Counts cover the AOI only.
    let valid = mosaic["counts"]["pixels_valid"].as_u64().unwrap();
    assert_eq!(valid, check["inside"].as_u64().unwrap());
    assert!(a["counts"]["pixels_valid"].as_u64().unwrap() < valid);
    assert!(b["counts"]["pixels_valid"].as_u64().unwrap() < valid);
    // The STAC Item lists both inputs and spans both dates.
    let item =
        json(&std::fs::read_to_string(tmp.path().join("mosaic/district.item.json")).unwrap());
    assert_eq!(
        item["properties"]["start_datetime"], "2017-02-16T00:00:00Z",
        "{item}"
    );
    assert_eq!(
        item["properties"]["end_datetime"], "2017-03-10T23:59:59Z",
        "{item}"
    );
}

#[test]
fn where_scenes_overlap_the_scene_with_the_highest_priority_gives_the_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = common::demo_scene();
    let nb = neighbour();
    // A box inside the overlap, given in the scenes' UTM zone.
    let run = |scenes: &[&Path], name: &str| {
        let mut args = vec![
            "predict".to_string(),
            "--model".into(),
            MODEL.into(),
            "--aoi".into(),
            "342600,5815200,345000,5821500".into(),
            "--aoi-crs".into(),
            "EPSG:32633".into(),
            "--resolution".into(),
            "10".into(),
            "--out".into(),
            s(tmp.path()),
            "--name".into(),
            name.into(),
        ];
        for sc in scenes {
            args.push("--scene".into());
            args.push(s(sc));
        }
        ok(&eoinfer(&args));
        read_u8(&tmp.path().join(format!("{name}.classes.tif")), 1).0
    };
    let mosaic = run(&[&demo, &nb], "mosaic");
    let newest = run(&[&nb], "newest");
    let oldest = run(&[&demo], "oldest");
    assert_eq!(mosaic.len(), 240 * 630);
    assert!(mosaic.iter().all(|&c| c != 255));
    // Newest first (neither has a cloud cover in its metadata): the mosaic is the newest
    // scene's run pixel for pixel, and not the other's.
    assert_eq!(mosaic, newest);
    let differ = mosaic.iter().zip(&oldest).filter(|(a, b)| a != b).count();
    assert!(differ > 1000, "{differ}");
}

fn demo_args(out: &Path) -> Vec<String> {
    vec![
        "--model".into(),
        MODEL.into(),
        "--scene".into(),
        s(&common::demo_scene()),
        "--out".into(),
        s(out),
        "--name".into(),
        "run".into(),
        "--resolution".into(),
        "10".into(),
        "--block-rows".into(),
        "1".into(),
        "--probabilities".into(),
    ]
}

fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    base.extend(extra.iter().map(|s| (*s).to_string()));
    base
}

/// The uninterrupted one-process run all others are compared with.
fn one_process() -> &'static (PathBuf, serde_json::Value) {
    static RUN: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = root().join("target/test-fixtures/one-process");
        let _ = std::fs::remove_dir_all(&dir);
        let args = [
            vec!["predict".to_string()],
            demo_args(&dir),
            vec!["--json".into()],
        ]
        .concat();
        let summary = json(&ok_stdout(&eoinfer(&args)));
        assert_eq!(summary["job"]["blocks"], 4);
        assert_eq!(summary["job"]["blocks_run"], 4);
        (dir, summary)
    })
}

/// The tiles GeoParquet of two runs as sets of rows (pyarrow).
fn same_rows(a: &Path, b: &Path) {
    let script = "import sys, json, pyarrow.parquet as pq\n\
        t = [pq.read_table(p).to_pylist() for p in sys.argv[1:3]]\n\
        key = lambda r: json.dumps(r, sort_keys=True, default=str)\n\
        print(json.dumps({'rows': [len(x) for x in t], 'equal': sorted(map(key, t[0])) == sorted(map(key, t[1]))}))";
    let out = Command::new(reference_python())
        .args(["-c", script])
        .arg(a.join("run.tiles.parquet"))
        .arg(b.join("run.tiles.parquet"))
        .output()
        .unwrap();
    let r = json(&ok_stdout(&out));
    assert_eq!(r["equal"], true, "{r}");
    assert_eq!(r["rows"][0], 28, "{r}");
}

#[test]
fn three_concurrent_shards_merge_to_the_pixels_and_rows_of_one_process() {
    let (reference, _) = one_process();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sharded");
    let plan = json(&ok_stdout(&eoinfer(
        [
            vec!["plan".into()],
            demo_args(&out),
            vec!["--shards".into(), "3".into(), "--json".into()],
        ]
        .concat(),
    )));
    assert_eq!(
        plan["shards"],
        serde_json::json!([{"start": 0, "end": 1}, {"start": 1, "end": 2}, {"start": 2, "end": 4}])
    );
    assert_eq!(plan["plan_hash"].as_str().unwrap().len(), 64);
    // Three processes at once, one thread each, each told its index the way each engine
    // does it.
    let vars = [
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "AWS_BATCH_JOB_ARRAY_INDEX",
    ];
    let children: Vec<_> = vars
        .iter()
        .enumerate()
        .map(|(i, var)| {
            Command::new(env!("CARGO_BIN_EXE_eoinfer"))
                .args(
                    [
                        vec!["predict".into()],
                        demo_args(&out),
                        vec![
                            "--shard".into(),
                            "auto/3".into(),
                            "--threads".into(),
                            "1".into(),
                            "--json".into(),
                        ],
                    ]
                    .concat(),
                )
                .current_dir(root())
                .env_remove("ORT_DYLIB_PATH")
                .env_remove("JOB_COMPLETION_INDEX")
                .env_remove("SLURM_ARRAY_TASK_ID")
                .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
                .env(var, i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut halo_runs = 0;
    for (i, c) in children.into_iter().enumerate() {
        let r = json(&ok_stdout(&c.wait_with_output().unwrap()));
        assert_eq!(r["shard"], format!("{i}/3"));
        halo_runs += r["job"]["tiles_run"].as_u64().unwrap();
    }
    // Shards 1 and 2 also ran the tile row above them (their halo).
    assert!(halo_runs > 28, "{halo_runs}");
    // Before the merge there are no final outputs.
    assert!(!out.join("run.classes.tif").exists());
    let summary = json(&ok_stdout(&eoinfer(["merge", &s(&out), "--json"])));
    assert_eq!(summary["counts"]["tiles"], 28);
    assert_eq!(
        summary["job"]["processes"],
        serde_json::json!(["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"])
    );
    same_rasters(reference, &out);
    same_rows(reference, &out);
    // The preview of the merged run is the one-process preview, byte for byte (the shards
    // rendered its input once, under the plan's hash), and every document is valid.
    assert_eq!(
        std::fs::read(out.join("run.preview.png")).unwrap(),
        std::fs::read(reference.join("run.preview.png")).unwrap()
    );
    assert_stac_valid(&out);
    // The parts are gone once merged; merging again is a no-op.
    assert!(!out.join(".eoinfer/run/parts").exists());
    let again = ok(&eoinfer(["merge", &s(&out)]));
    assert!(again.contains("nothing to do"), "{again}");
}

#[test]
fn column_panels_write_the_pixels_and_rows_of_one_panel_alone_and_in_shards() {
    let (reference, _) = one_process();
    let tmp = tempfile::tempdir().unwrap();
    // Panels of 500 px: the 1536 px wide grid is 3 panels of 4 blocks each.
    let panels = |out: &Path, extra: &[&str]| {
        [
            vec!["predict".into()],
            demo_args(out),
            vec!["--panel-width".into(), "500".into(), "--json".into()],
            extra.iter().map(|e| (*e).to_string()).collect(),
        ]
        .concat()
    };
    let one = tmp.path().join("one");
    let summary = json(&ok_stdout(&eoinfer(panels(&one, &[]))));
    assert_eq!(summary["parameters"]["panels"], 3);
    assert_eq!(summary["job"]["blocks"], 12);
    // One process runs every tile once: a panel's halo tiles come from the panel before.
    assert_eq!(summary["job"]["tiles_run_all_processes"], 28);
    same_rasters(reference, &one);
    same_rows(reference, &one);
    // Three shards: a shard starting inside a panel row runs that panel's halo tiles itself.
    let out = tmp.path().join("sharded");
    let plan: Vec<String> = [
        vec!["plan".into()],
        demo_args(&out),
        vec![
            "--panel-width".into(),
            "500".into(),
            "--shards".into(),
            "3".into(),
        ],
    ]
    .concat();
    ok(&eoinfer(&plan));
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_eoinfer"))
                .args(panels(
                    &out,
                    &["--shard", &format!("{i}/3"), "--threads", "1"],
                ))
                .current_dir(root())
                .env_remove("ORT_DYLIB_PATH")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok_stdout(&c.wait_with_output().unwrap());
    }
    let merged = json(&ok_stdout(&eoinfer(["merge", &s(&out), "--json"])));
    assert!(merged["job"]["tiles_run_all_processes"].as_u64().unwrap() > 28);
    same_rasters(reference, &out);
    same_rows(reference, &out);
}

#[test]
fn a_run_killed_early_midway_or_while_writing_resumes_to_the_same_outputs_with_less_work() {
    let (reference, full) = one_process();
    let full_runs = full["job"]["tiles_run"].as_u64().unwrap();
    for (moment, blocks_done) in [("early", 1), ("midway", 2), ("while writing", 4)] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let journal = out.join(".eoinfer/run");
        let args = [
            vec!["predict".into()],
            demo_args(&out),
            vec!["--vectors".into(), "--json".into()],
        ]
        .concat();
        let mut child = Command::new(env!("CARGO_BIN_EXE_eoinfer"))
            .args(&args)
            .current_dir(root())
            .env_remove("ORT_DYLIB_PATH")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while common::block_lines(&journal) < blocks_done {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{moment}: the run ended before the kill"
            );
            assert!(start.elapsed() < Duration::from_secs(120));
            std::thread::sleep(Duration::from_millis(2));
        }
        // kill -9.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !out.join("run.summary.json").exists(),
            "{moment}: killed too late"
        );
        let done = common::block_lines(&journal);
        assert!(done >= blocks_done && done <= 4, "{moment}: {done}");
        let rerun = json(&ok_stdout(&eoinfer(&args)));
        assert_eq!(rerun["job"]["blocks_already_done"], done as u64, "{moment}");
        assert_eq!(rerun["job"]["blocks_run"], 4 - done as u64, "{moment}");
        let runs = rerun["job"]["tiles_run"].as_u64().unwrap();
        assert!(runs < full_runs, "{moment}: {runs} >= {full_runs}");
        // Each block is journalled once over both processes.
        assert_eq!(common::block_lines(&journal), 4, "{moment}");
        same_rasters(reference, &out);
        same_rows(reference, &out);
        // The preview too: the blocks the first process finished saved their samples.
        assert_eq!(
            std::fs::read(out.join("run.preview.png")).unwrap(),
            std::fs::read(reference.join("run.preview.png")).unwrap(),
            "{moment}"
        );
        assert!(out.join("run.polygons.gpkg").exists());
        let left: Vec<String> = common::files_in(&out)
            .into_iter()
            .filter(|f| f.ends_with(".partial") || f.contains(".staged"))
            .collect();
        assert!(left.is_empty(), "{moment}: {left:?}");
    }
}

#[test]
fn a_rerun_with_other_parameters_is_refused_unless_forced_and_a_finished_rerun_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let base = vec![
        "predict".to_string(),
        "--model".into(),
        MODEL.into(),
        "--scene".into(),
        s(&common::demo_scene()),
        "--out".into(),
        s(tmp.path()),
        "--name".into(),
        "run".into(),
    ];
    ok(&eoinfer(&base));
    let journal = tmp.path().join(".eoinfer/run");
    let blocks = common::block_lines(&journal);
    let classes = tmp.path().join("run.classes.tif");
    let modified = std::fs::metadata(&classes).unwrap().modified().unwrap();

    let again = ok(&eoinfer(&base));
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(common::block_lines(&journal), blocks);
    assert_eq!(
        std::fs::metadata(&classes).unwrap().modified().unwrap(),
        modified
    );

    let other = eoinfer(with(base.clone(), &["--overlap", "64"]));
    assert_eq!(other.status.code(), Some(2));
    let err = String::from_utf8_lossy(&other.stderr);
    for needle in ["plan", "tiling", "--force"] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    // Nothing was touched.
    assert_eq!(
        std::fs::metadata(&classes).unwrap().modified().unwrap(),
        modified
    );
    let forced = json(&ok_stdout(&eoinfer(with(
        base,
        &["--overlap", "64", "--force", "--json"],
    ))));
    assert_eq!(forced["parameters"]["tiling"]["overlap"], 64);
    assert_eq!(forced["job"]["blocks_already_done"], 0);
}

#[test]
fn merging_before_every_shard_finished_names_the_missing_blocks_and_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("partial");
    ok(&eoinfer(
        [
            vec!["predict".into()],
            demo_args(&out),
            vec!["--shard".into(), "0/3".into()],
        ]
        .concat(),
    ));
    let m = eoinfer(["merge", &s(&out)]);
    assert_eq!(m.status.code(), Some(2));
    let err = String::from_utf8_lossy(&m.stderr);
    assert!(err.contains("blocks 1, 2, 3 of 4"), "{err}");
    assert!(err.contains("shards 1/3, 2/3"), "{err}");
    assert!(!out.join("run.classes.tif").exists());
}

#[test]
fn bad_shards_and_aois_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--shard", "3/3"], "not below 3"),
        (&["--shard", "x"], "pass i/N"),
        (&["--shard", "auto/4"], "JOB_COMPLETION_INDEX"),
        (
            &["--shard", "0/2", "--force"],
            "--force cannot be used with --shard",
        ),
        (&["--aoi", "10,50,9,51"], "minx < maxx"),
        (
            &["--aoi", "13.0,52.0,13.1,52.05", "--crs", "EPSG:4326"],
            "geographic",
        ),
    ];
    for (extra, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_eoinfer"))
            .args(with(
                vec![
                    "predict".into(),
                    "--model".into(),
                    MODEL.into(),
                    "--scene".into(),
                    s(&common::demo_scene()),
                    "--out".into(),
                    s(tmp.path()),
                ],
                extra,
            ))
            .current_dir(root())
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    // An AOI away from every scene.
    let out = eoinfer([
        "predict",
        "--model",
        MODEL,
        "--scene",
        &s(&common::demo_scene()),
        "--aoi",
        "2.0,48.0,2.1,48.1",
        "--out",
        &s(tmp.path()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not overlap"));
    assert!(
        common::files_in(tmp.path()).is_empty(),
        "{:?}",
        common::files_in(tmp.path())
    );
}

#[test]
fn the_kubernetes_manifests_validate_offline_and_a_broken_one_does_not() {
    let validate = reference_python().with_file_name("kubernetes-validate");
    let manifests: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert_eq!(manifests.len(), 4);
    let out = Command::new(&validate)
        .arg("--strict")
        .args(&manifests)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("passed").count(), 4, "{text}");
    // The Indexed Job's completions match --shard auto/N.
    let job = std::fs::read_to_string(root().join("deploy/kubernetes/predict-job.yaml")).unwrap();
    assert!(job.contains("completionMode: Indexed"));
    assert!(job.contains("completions: 8") && job.contains("--shard=auto/8"));
    // A typo in a field fails.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(&broken, job.replace("completionMode", "completionMod")).unwrap();
    let out = Command::new(&validate)
        .arg("--strict")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_run_whose_input_fails_midway_journals_only_the_blocks_it_finished() {
    let tmp = tempfile::tempdir().unwrap();
    // The six model bands in one uncompressed GeoTIFF, cut off after 40 % of its bytes: the
    // reader fails in the lower part of the scene.
    let tif = tmp.path().join("stack.tif");
    common::demo_stack(&tif, &["TILED=NO"]);
    let f = std::fs::OpenOptions::new().write(true).open(&tif).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len * 2 / 5).unwrap();
    drop(f);
    let out = tmp.path().join("out");
    let r = eoinfer([
        "predict",
        "--model",
        MODEL,
        "--scene",
        &s(&tif),
        "--bands",
        "B02=1,B03=2,B04=3,B08=4,B11=5,B12=6",
        "--resolution",
        "10",
        "--block-rows",
        "1",
        "--out",
        &s(&out),
        "--name",
        "run",
    ]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("stack.tif"), "{err}");
    // Blocks 0 (rows 0..224) and 1 (..448) come from the readable 40 %; at most those are
    // journalled, each with its parts on disk, and nothing past the failure.
    let work = out.join(".eoinfer/run");
    let done = common::block_lines(&work);
    assert!(done <= 1, "{done} blocks journalled");
    assert!(!out.join("run.classes.tif").exists());
    let parts: Vec<String> = common::files_in(&work.join("parts"))
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .filter(|f| {
            Path::new(f)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("tif"))
        })
        .collect();
    assert_eq!(parts.len(), done, "{parts:?}");
}
