//! PyTorch legacy checkpoints (the MiniFASNet liveness weights' format) and the MiniFASNet
//! converter behind it: corrupt input is an error, not a panic, and work stays bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sd) = provision::torch_legacy::read_state_dict(data) {
        let _ = provision::minifasnet::to_onnx(&sd, "");
    }
});
