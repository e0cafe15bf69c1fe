//! dlib .dat model files (network, shape predictor, HOG detector) and the compressed form dlib
//! ships its HOG detector in: corrupt input is an error, not a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = provision::dnn::parse_net(data);
    let _ = vision::dlib::shape_predictor::ShapePredictor::parse(data);
    let _ = vision::dlib::hog::HogDetector::parse(data);
    let _ = vision::dlib::compress::decompress_kernel_1ea(data, 1 << 20);
    let _ = vision::dlib::hog::serialized_from_header(&String::from_utf8_lossy(data));
});
