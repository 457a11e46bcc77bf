//! Memory independent of the scene's width: blocks span one column panel (by default 4096 px
//! for one scene, 2048 px for a time series), so a scene 4x as wide must not need much more
//! memory. Scenes 2048 and 8192 px
//! wide and a few tile rows high are mosaicked from the real demo scene with GDAL VRTs; each
//! run's own peak RSS comes from `wait4`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// The demo scene's 13 bands and their resolutions.
const BANDS: [(&str, usize); 13] = [
    ("B01", 60),
    ("B02", 10),
    ("B03", 10),
    ("B04", 10),
    ("B05", 20),
    ("B06", 20),
    ("B07", 20),
    ("B08", 10),
    ("B8A", 20),
    ("B09", 60),
    ("B10", 60),
    ("B11", 20),
    ("B12", 20),
];

/// A folder of per-band VRTs named like the demo scene's files (the date 2017-02-`day`)
/// that tile the demo scene's band files over `width` x `height` px at 10 m, every value
/// shifted by `day` so that the dates differ.
fn mosaic(dir: &Path, (width, height): (usize, usize), bands: &[&str], day: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (band, res) in BANDS.iter().filter(|(b, _)| bands.contains(b)) {
        let src = demo_scene().join(format!("T33UUU_20170216T102101_{band}.jp2"));
        let (sw, sh) = (15_360 / res, 7_680 / res);
        let (w, h) = ((width * 10).div_ceil(*res), (height * 10).div_ceil(*res));
        let mut xml = format!(
            "<VRTDataset rasterXSize=\"{w}\" rasterYSize=\"{h}\">\n<SRS>EPSG:32633</SRS>\n<GeoTransform>300000, {res}, 0, 5800020, 0, -{res}</GeoTransform>\n<VRTRasterBand dataType=\"UInt16\" band=\"1\">\n"
        );
        for ty in 0..h.div_ceil(sh) {
            for tx in 0..w.div_ceil(sw) {
                writeln!(
                    xml,
                    "<ComplexSource><SourceFilename>{}</SourceFilename><SourceBand>1</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{sw}\" ySize=\"{sh}\"/><DstRect xOff=\"{}\" yOff=\"{}\" xSize=\"{sw}\" ySize=\"{sh}\"/><ScaleOffset>{day}</ScaleOffset></ComplexSource>",
                    src.display(),
                    tx * sw,
                    ty * sh
                )
                .unwrap();
            }
        }
        xml.push_str("</VRTRasterBand>\n</VRTDataset>\n");
        std::fs::write(
            dir.join(format!("T33UUU_201702{day:02}T102101_{band}.vrt")),
            xml,
        )
        .unwrap();
    }
}

/// Runs eoinfer with `args` and returns its summary and its own peak RSS in MiB.
fn run_peak(args: &[String]) -> (serde_json::Value, f64) {
    let child = Command::new(env!("CARGO_BIN_EXE_eoinfer"))
        .args(args)
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads while wait4 waits, so a full pipe cannot block the child.
    let mut child = child;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(r, pid);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "eoinfer failed:\n{err}"
    );
    (
        serde_json::from_str(&out).unwrap(),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs `predict` with `extra` on each scene width and returns the peak RSS per width.
fn peaks(model: &str, bands: &[&str], dates: usize, height: usize, extra: &[&str]) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for width in [2048, 8192] {
        let mut args: Vec<String> = ["predict", "--model", model, "--json"]
            .iter()
            .map(ToString::to_string)
            .collect();
        for day in 1..=dates {
            let scene = dir.path().join(format!("w{width}-d{day}"));
            mosaic(&scene, (width, height), bands, day);
            args.extend(["--scene".to_string(), s(&scene)]);
        }
        let out = dir.path().join(format!("out{width}"));
        args.extend(["--out".to_string(), s(&out), "--name".into(), "run".into()]);
        args.extend(extra.iter().map(ToString::to_string));
        let t0 = std::time::Instant::now();
        let (summary, peak) = run_peak(&args);
        println!(
            "{width} x {height} px, {dates} date(s): peak RSS {peak:.0} MiB, {:.1} s, {} blocks in {} panel(s)",
            t0.elapsed().as_secs_f64(),
            summary["job"]["blocks"],
            summary["parameters"]["panels"]
        );
        assert_eq!(summary["grid"]["width"].as_u64(), Some(width as u64));
        peaks.push(peak);
    }
    println!("ratio {:.3}", peaks[1] / peaks[0]);
    assert!(
        peaks[1] <= peaks[0] * 1.3,
        "peak RSS grew from {:.0} MiB to {:.0} MiB with the width (more than 1.3x)",
        peaks[0],
        peaks[1]
    );
    peaks
}

#[test]
fn a_segmentation_run_needs_no_more_memory_on_a_4x_wider_scene() {
    let model = manifest("ukis-csmask-6b-l1c.json");
    peaks(
        &s(&model),
        &["B02", "B03", "B04", "B08", "B11", "B12"],
        1,
        768,
        &["--resolution", "10", "--probabilities"],
    );
}

#[test]
fn a_twelve_date_embedding_run_needs_no_more_memory_on_a_4x_wider_scene() {
    let model = manifest("olmoearth/olmoearth-v1-nano.json");
    let bands: Vec<&str> = BANDS.iter().map(|(b, _)| *b).collect();
    // Two rows of 64 px tiles without overlap keep the run short (about 0.2 s per tile of
    // 12 dates here); memory is held per row of tiles, so more rows would not change it.
    // OlmoEarth takes L2A; the demo's L1C is fine for measuring memory.
    peaks(
        &s(&model),
        &bands,
        12,
        128,
        &["--overlap", "0", "--accept-product-mismatch"],
    );
}
