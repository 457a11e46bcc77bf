//! Outputs: Cloud-Optimized GeoTIFF rasters, the tiles GeoParquet and the model-ready stack.

pub mod embeddings;
pub mod parquet;
pub mod raster;
pub mod stack;
