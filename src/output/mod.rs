//! Outputs: Cloud-Optimized GeoTIFF rasters, the tiles GeoParquet, QGIS styles and the
//! model-ready stack.

pub mod catalog;
pub mod embeddings;
pub mod heads;
pub mod parquet;
pub mod preview;
pub mod qgis;
pub mod quicklook;
pub mod raster;
pub mod stac;
pub mod stack;
pub mod vectors;
pub mod zonal;
