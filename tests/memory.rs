//! Streaming: peak memory must not grow with the scene. Two scenes are built by mosaicking
//! the real demo scene with GDAL VRTs (2048 x 2048 and 8192 x 8192 px at 10 m, 16x the
//! pixels), both are run, and the larger's peak RSS must be at most 1.3x the smaller's.
//! This file holds one test so its process has no other children (peak RSS comes from
//! `getrusage(RUSAGE_CHILDREN)`, which covers every child the process waited for).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::fmt::Write as _;
use std::path::Path;

/// Per-band VRTs that tile the demo scene's band files over `size` x `size` px at 10 m.
fn mosaic(dir: &Path, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (band, res) in [
        ("B02", 10),
        ("B03", 10),
        ("B04", 10),
        ("B08", 10),
        ("B11", 20),
        ("B12", 20),
    ] {
        let src = demo_scene().join(format!("T33UUU_20170216T102101_{band}.jp2"));
        let (sw, sh) = (15_360 / res, 7_680 / res);
        let n = size * 10 / res;
        let mut xml = format!(
            "<VRTDataset rasterXSize=\"{n}\" rasterYSize=\"{n}\">\n<SRS>EPSG:32633</SRS>\n<GeoTransform>330000, {res}, 0, 5822040, 0, -{res}</GeoTransform>\n<VRTRasterBand dataType=\"UInt16\" band=\"1\">\n"
        );
        for ty in 0..n.div_ceil(sh) {
            for tx in 0..n.div_ceil(sw) {
                writeln!(
                    xml,
                    "<SimpleSource><SourceFilename>{}</SourceFilename><SourceBand>1</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{sw}\" ySize=\"{sh}\"/><DstRect xOff=\"{}\" yOff=\"{}\" xSize=\"{sw}\" ySize=\"{sh}\"/></SimpleSource>",
                    src.display(),
                    tx * sw,
                    ty * sh
                )
                .unwrap();
            }
        }
        xml.push_str("</VRTRasterBand>\n</VRTDataset>\n");
        std::fs::write(dir.join(format!("mosaic_{band}.vrt")), xml).unwrap();
    }
}

fn children_peak_rss_kib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage) },
        0
    );
    usage.ru_maxrss
}

#[test]
fn peak_memory_does_not_grow_with_the_scene() {
    let dir = tempfile::tempdir().unwrap();
    let model = manifest("ukis-csmask-6b-l1c.json");
    let mut peaks = Vec::new();
    for size in [2048, 8192] {
        let scene = dir.path().join(format!("mosaic{size}"));
        mosaic(&scene, size);
        let out = dir.path().join(format!("out{size}"));
        let o = eoinfer([
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--scene",
            scene.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--probabilities",
            // The mosaic VRTs are Sentinel-2 DN of 2017 whose names say nothing.
            "--s2-offset",
            "0",
        ]);
        ok(&o);
        // RUSAGE_CHILDREN is the maximum over all children so far; the small scene runs first.
        peaks.push(children_peak_rss_kib());
        let (px, w, h) = read_u8(&out.join("mosaic.classes.tif"), 1);
        assert_eq!(
            (w, h),
            (
                size * 10 / 30 + usize::from(size * 10 % 30 >= 15),
                size * 10 / 30 + usize::from(size * 10 % 30 >= 15)
            )
        );
        assert!(
            px.iter().all(|&c| c < 3),
            "every pixel has valid input and a class"
        );
    }
    let (small, large) = (peaks[0] as f64 / 1024.0, peaks[1] as f64 / 1024.0);
    println!(
        "peak RSS: 2048 x 2048 px scene {small:.0} MiB, 8192 x 8192 px scene {large:.0} MiB, ratio {:.3}",
        large / small
    );
    assert!(
        large <= small * 1.3,
        "peak RSS grew from {small:.0} MiB to {large:.0} MiB (more than 1.3x)"
    );
}
