//! dlib .dat model files (network and shape predictor): corrupt files are errors, not panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vision::dlib::dnn::parse_net(data);
    let _ = vision::dlib::shape_predictor::ShapePredictor::parse(data);
});
