//! Readers and converters for dlib's model files (the default, CC0 model pack).

pub mod compress;
#[allow(unsafe_code)] // SAFETY comments at each block; simd_twins_match_portable_code tests it
pub mod hog;
pub mod resize;
pub mod serial;
pub mod shape_predictor;
