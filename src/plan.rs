//! Command-line values -> one validated plan. Everything is checked here, before any output
//! is written; nothing below this module sees clap types.

use crate::error::{Error, ModelError, OutputError};
use crate::grid::Tiling;
use crate::model::ModelSpec;
use crate::scene::{SceneOptions, Stack, open_stack, parse_band_map};
use std::path::{Path, PathBuf};

/// Which tiling scheme to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TilingChoice {
    /// eoinfer's blended scheme (default).
    #[default]
    Blended,
    /// The model authors' own scheme.
    Reference,
}

/// Raw predict arguments (as given, not yet checked).
#[derive(Debug, Clone, Default)]
pub struct PredictArgs {
    /// Manifest path.
    pub model: PathBuf,
    /// Scene path or GDAL dataset name.
    pub scene: String,
    /// Output folder.
    pub out: PathBuf,
    /// Output name (default: from the scene).
    pub name: Option<String>,
    /// `--bands` mapping.
    pub bands: Option<String>,
    /// `--resolution`.
    pub resolution: Option<f64>,
    /// `--s2-offset`.
    pub s2_offset: Option<f64>,
    /// `--nodata`.
    pub nodata: Option<f64>,
    /// `--tiling`.
    pub tiling: TilingChoice,
    /// `--overlap` in pixels.
    pub overlap: Option<usize>,
    /// `--batch-size`.
    pub batch_size: usize,
    /// `--threads` (0 = all cores).
    pub threads: usize,
    /// `--probabilities`.
    pub probabilities: bool,
    /// `--ort-lib`.
    pub ort_lib: Option<PathBuf>,
    /// `--device`.
    pub device: crate::model::Device,
    /// `--tile-size` (models with dynamic input height and width).
    pub tile_size: Option<usize>,
    /// `--tta`.
    pub tta: crate::tta::Tta,
    /// `--vectors` with its options.
    pub vectors: Option<crate::output::vectors::PolygonizeOptions>,
    /// `--qgis-project`.
    pub qgis_project: bool,
}

/// A checked predict run.
#[derive(Debug, Clone)]
pub struct PredictPlan {
    /// The model.
    pub model: ModelSpec,
    /// The scene on the model's grid.
    pub stack: Stack,
    /// Output folder (exists, writable).
    pub out_dir: PathBuf,
    /// Output base name.
    pub name: String,
    /// Tiling scheme.
    pub tiling: Tiling,
    /// Tiles per inference batch.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Whether to write probabilities.
    pub probabilities: bool,
    /// ONNX Runtime library.
    pub ort_lib: PathBuf,
    /// Where the model runs.
    pub device: crate::model::Device,
    /// Test-time augmentation.
    pub tta: crate::tta::Tta,
    /// Polygons of the class map.
    pub vectors: Option<crate::output::vectors::PolygonizeOptions>,
    /// Write `<name>.qgs`.
    pub qgis_project: bool,
    /// sha256 of the ONNX file.
    pub onnx_sha256: String,
    /// Warnings found while planning.
    pub warnings: Vec<String>,
}

/// Scene options from raw arguments.
pub fn scene_options(
    bands: Option<&str>,
    resolution: Option<f64>,
    s2_offset: Option<f64>,
    nodata: Option<f64>,
) -> Result<SceneOptions, Error> {
    Ok(SceneOptions {
        band_map: bands.map(parse_band_map).transpose()?.unwrap_or_default(),
        resolution,
        s2_offset,
        nodata,
    })
}

/// Makes sure `dir` exists and a file can be created in it.
pub fn check_writable(dir: &Path) -> Result<(), OutputError> {
    let fail = |source| OutputError::NotWritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".eoinfer-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Number of threads meant by `0`.
#[must_use]
pub fn resolve_threads(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }
}

impl PredictPlan {
    /// Checks every argument: the model manifest, the scene and its bands, the output
    /// folder and the ONNX Runtime library.
    pub fn build(args: &PredictArgs) -> Result<Self, Error> {
        let mut model = ModelSpec::load(&args.model)?;
        if let Some(t) = args.tile_size {
            if t < 16 {
                return Err(crate::error::GridError::TileTooSmall(t).into());
            }
            // The ONNX input must be dynamic; Segmenter::load says so if it is not.
            model.tile_size = t;
        }
        if !model.onnx.is_file() {
            return Err(ModelError::OnnxMissing {
                path: model.onnx.clone(),
                manifest: model.manifest.clone(),
            }
            .into());
        }
        let opts = scene_options(
            args.bands.as_deref(),
            args.resolution,
            args.s2_offset,
            args.nodata,
        )?;
        let stack = open_stack(&args.scene, &model, &opts)?;
        let tiling = match args.tiling {
            TilingChoice::Blended => Tiling::Blended {
                overlap: args.overlap.unwrap_or(model.overlap),
            },
            TilingChoice::Reference => Tiling::Reference {
                fraction: model.reference_fraction.unwrap_or(0.2),
            },
        };
        // Validate the geometry now so a bad --overlap fails before anything is written.
        crate::grid::TileGrid::new(stack.width, stack.height, model.tile_size, tiling)?;
        check_writable(&args.out)?;
        let ort_lib = crate::model::runtime::find_runtime(args.ort_lib.as_deref())?;
        let onnx_sha256 =
            crate::util::sha256_file(&model.onnx).map_err(|source| ModelError::ManifestRead {
                path: model.onnx.clone(),
                source,
            })?;
        let mut warnings = Vec::new();
        if stack.width < model.tile_size || stack.height < model.tile_size {
            warnings.push(format!(
                "the scene grid ({} x {} px) is smaller than one {} px tile; it is padded by reflection",
                stack.width, stack.height, model.tile_size
            ));
        }
        Ok(Self {
            name: args.name.clone().unwrap_or_else(|| stack.name.clone()),
            stack,
            out_dir: args.out.clone(),
            tiling,
            batch_size: args.batch_size.max(1),
            threads: resolve_threads(args.threads),
            probabilities: args.probabilities,
            ort_lib,
            device: args.device,
            tta: args.tta,
            vectors: args.vectors,
            qgis_project: args.qgis_project,
            onnx_sha256,
            warnings,
            model,
        })
    }

    /// Checks the ONNX file's checksum against the manifest, once the file has loaded.
    pub fn check_checksum(&self) -> Result<(), ModelError> {
        match &self.model.onnx_sha256 {
            Some(expected) if *expected != self.onnx_sha256 => Err(ModelError::ShapeMismatch {
                manifest: self.model.manifest.clone(),
                onnx: self.model.onnx.clone(),
                what: format!(
                    "the ONNX file's sha256 is {}, the manifest records {expected}",
                    self.onnx_sha256
                ),
            }),
            _ => Ok(()),
        }
    }
}
