//! Readers and converters for dlib's model files (the default, CC0 model pack).

pub mod compress;
pub mod convert;
pub mod dnn;
pub mod hog;
pub mod serial;
pub mod shape_predictor;
