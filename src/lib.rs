//! # eoinfer
//!
//! Earth-observation inference from one Rust binary: satellite rasters are read with GDAL,
//! cut into tiles, run through ONNX models with ONNX Runtime, blended back together and
//! written as Cloud-Optimized GeoTIFF and GeoParquet. The data never leaves the machine.
//!
//! Data flow: scene -> grid of windows -> reader (one GDAL handle) -> normalise -> batch ->
//! inference (one thread owns the ONNX Runtime session) -> blend (rolling band of rows) ->
//! writers. Stages are joined by bounded channels; memory follows the scene's width only.

pub mod aoi;
pub mod blend;
pub mod cli;
pub mod error;
pub mod events;
pub mod fingerprint;
pub mod grid;
pub mod interrupt;
pub mod job;
pub mod journal;
pub mod limits;
pub mod lock;
pub mod model;
pub mod monitor;
pub mod normalize;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod postprocess;
pub mod scene;
pub mod source;
pub mod tta;
pub mod util;

pub use error::Error;

/// GDAL settings for a run: a bounded block cache (unless `GDAL_CACHEMAX` is set) so memory
/// does not grow with the scene, and GDAL's own error messages routed to the log (eoinfer
/// reports errors itself, with the file and the fix).
pub fn configure_gdal() {
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        let _ = gdal::config::set_config_option("GDAL_CACHEMAX", "128");
    }
    if std::env::var_os("GDAL_MAX_DATASET_POOL_SIZE").is_none() {
        let pool = dataset_pool_size(raise_open_files());
        let _ = gdal::config::set_config_option("GDAL_MAX_DATASET_POOL_SIZE", &pool.to_string());
    }
    gdal::config::set_error_handler(|class, code, msg| {
        tracing::debug!(target: "gdal", ?class, code, "{msg}");
        if matches!(
            class,
            gdal::errors::CplErrType::Failure | gdal::errors::CplErrType::Fatal
        ) && !msg.trim().is_empty()
        {
            // try_with: no panic across FFI while the thread's locals are torn down.
            let _ = GDAL_ERRORS.try_with(|e| {
                let mut e = e.borrow_mut();
                if e.len() == 4 {
                    e.remove(0);
                }
                e.push(msg.trim().to_string());
            });
        }
    });
}

thread_local! {
    /// GDAL's last error messages on this thread (the handler above keeps them; GDAL's own
    /// last-error slot is often empty by the time an error reaches eoinfer).
    static GDAL_ERRORS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// GDAL's error messages on this thread since the last call, joined (empty when none).
#[must_use]
pub fn take_gdal_errors() -> String {
    GDAL_ERRORS.with(|e| e.borrow_mut().drain(..).collect::<Vec<_>>().join("; "))
}

/// Raises the soft limit of open files to the hard limit (a time series reads hundreds of
/// band files at once); returns the soft limit in force.
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// How many source files GDAL keeps open for VRTs (GDAL's default is 100): a 12-date series
/// of per-band files has 144 or more, and a file closed and reopened loses its decoded
/// blocks, so every tile decoded JPEG 2000 blocks again (measured: 94 s of reading at 12
/// dates with the default, see BENCHMARKS.md). Room is left for the outputs and sockets;
/// GDAL ignores values above 1000.
#[must_use]
pub fn dataset_pool_size(open_files: u64) -> u64 {
    open_files.saturating_sub(128).clamp(100, 1000)
}

/// Returns the heaps' free pages to the system (glibc keeps the pages of freed buffers of a
/// few MiB, allocated and freed on several threads, in its heaps): called between column
/// panels, so what one panel freed does not add to the next one's peak. Without it the peak
/// RSS of a 12-date run crept up panel after panel (450 MiB for one panel, 578 MiB for four;
/// 545 MiB with it). Fixing glibc's mmap threshold instead (every buffer above 512 KiB its
/// own mapping) held the peak at 465 MiB but made a segmentation run 20 % slower: GDAL's
/// blocks and buffers were mapped and faulted in again on every use.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sizes GDAL's block cache for reading `stack` in strips `width` px wide (a column panel,
/// unless `GDAL_CACHEMAX` is set): two 512-row block rows of every source band across the
/// panel, so each
/// compressed block is decoded once even when a pixel-interleaved file is read band by band
/// (measured on a 10980 px wide DEFLATE GeoTIFF: 25.8 s of reading with 128 MB, 9.3 s with
/// 160 MB). At least 128 MB, at most 512 MB. Returns the size in bytes.
#[allow(clippy::must_use_candidate)]
pub fn size_block_cache(stack: &scene::Stack, width: usize) -> u64 {
    let bytes = block_cache_bytes(stack, width);
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        unsafe { gdal_sys::GDALSetCacheMax64(bytes as i64) };
    }
    bytes
}

/// The block cache [`size_block_cache`] gives a run on `stack` (or `GDAL_CACHEMAX`'s).
#[must_use]
pub fn block_cache_bytes(stack: &scene::Stack, width: usize) -> u64 {
    const MIB: f64 = 1024.0 * 1024.0;
    if std::env::var_os("GDAL_CACHEMAX").is_some() {
        return u64::try_from(unsafe { gdal_sys::GDALGetCacheMax64() }).unwrap_or(0);
    }
    let need: f64 = stack
        .bands
        .iter()
        .filter(|b| b.vrt_band.is_some() && b.source_resolution > 0.0)
        .map(|b| {
            1024.0 * width.min(stack.width) as f64 * stack.resolution / b.source_resolution * 2.0
        })
        .sum::<f64>()
        * 1.25;
    need.clamp(128.0 * MIB, 512.0 * MIB) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dataset_pool_stays_in_the_range_gdal_accepts() {
        assert_eq!(super::dataset_pool_size(1024), 896);
        assert_eq!(super::dataset_pool_size(20_000), 1000);
        assert_eq!(super::dataset_pool_size(64), 100);
    }
}
