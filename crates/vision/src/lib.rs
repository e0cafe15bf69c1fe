//! facegate's vision layer: bytes → image → faces → templates.
//!
//! Decoding ([`decode`]), detection ([`mmod`]), landmarks ([`dlib::shape_predictor`]), alignment
//! ([`chip`]) and embedding ([`embed`]) are separate stages so each can be checked against the
//! reference implementation on its own; [`pipeline`] puts them together.

// `unsafe` lives in `dlib::hog` (AVX2/AVX-512 copies and gathers) and `memory` (one call to
// glibc's malloc_trim), allowed there and nowhere else.
#![deny(unsafe_code)]

pub mod chip;
pub mod decode;
pub mod detect;
pub mod dlib;
pub mod error;
pub mod geometry;
pub mod landmarks;
pub mod liveness;
#[allow(unsafe_code)] // one FFI call (malloc_trim), SAFETY comment and test in the module
pub mod memory;
pub mod mmod;
pub mod models;

pub use error::VisionError;
pub mod embed;
pub mod pack;
pub mod pipeline;
pub mod quality;
pub mod rng;
pub mod runtime;
pub mod yunet;
