//! Decodes each file named on the command line with the default limits and prints one line per
//! file: its size or the error. Nothing else runs in the process, so its peak RSS
//! (`/usr/bin/time -f %M`) is the decoder's: `scripts/jpeg2000_memory.py` measures the JPEG 2000
//! memory budget's estimate with it.

use std::process::ExitCode;
use vision::decode::{decode, DecodeLimits};

fn main() -> ExitCode {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, &DecodeLimits::default()) {
                Ok(img) => println!("{path}\tdecoded\t{}x{}", img.width(), img.height()),
                Err(e) => println!("{path}\trefused\t{e}"),
            },
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
