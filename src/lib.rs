//! # eoinfer
//!
//! Earth-observation inference from one Rust binary: satellite rasters are read with GDAL,
//! cut into tiles, run through ONNX models with ONNX Runtime, blended back together and
//! written as Cloud-Optimized GeoTIFF and GeoParquet. The data never leaves the machine.
//!
//! Data flow: scene -> grid of windows -> reader (one GDAL handle) -> normalise -> batch ->
//! inference (one thread owns the ONNX Runtime session) -> blend (rolling band of rows) ->
//! writers. Stages are joined by bounded channels; memory follows the scene's width only.

pub mod blend;
pub mod cli;
pub mod embed;
pub mod error;
pub mod grid;
pub mod model;
pub mod normalize;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod scene;
pub mod util;

pub use error::Error;

/// GDAL settings for a run: a bounded block cache (unless `GDAL_CACHEMAX` is set) so memory
/// does not grow with the scene, and GDAL's own error messages routed to the log (eoinfer
/// reports errors itself, with the file and the fix).
pub fn configure_gdal() {
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        let _ = gdal::config::set_config_option("GDAL_CACHEMAX", "128");
    }
    gdal::config::set_error_handler(|class, code, msg| {
        tracing::debug!(target: "gdal", ?class, code, "{msg}");
    });
}
