//! Readers and converters for dlib's model files (the default, CC0 model pack).

pub mod convert;
pub mod dnn;
pub mod serial;
pub mod shape_predictor;
