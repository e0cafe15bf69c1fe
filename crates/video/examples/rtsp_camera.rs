//! An RTSP camera that never stops, for soak runs (`scripts/soak.py --camera rtsp`): the H.264
//! track of an MP4 file served to one client on a loopback port, looped without end at the file's
//! frame rate, by the test camera of the video tests (tests/support/rtsp_server.rs, its `Loop`
//! behaviour). Prints the camera's URL, then every 10 s the access units sent so far; ends when
//! its client closes the connection.
//!
//! usage: cargo run --release -p facegate-video --example rtsp_camera -- FILE.mp4

#[path = "../tests/support/rtsp_server.rs"]
mod rtsp_server;

use rtsp_server::{serve, Behaviour, TestStream};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: rtsp_camera FILE.mp4");
        std::process::exit(2);
    };
    let stream = TestStream::from_mp4(std::path::Path::new(&path));
    let (units, fps) = (stream.units.len(), stream.fps);
    let server = serve(stream, Behaviour::Loop);
    println!("url {}", server.url);
    eprintln!("rtsp_camera: {units} access units at {fps} fps, looped");
    std::io::stdout().flush()?;
    let mut ticks = 0u32;
    while !server.handle.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        ticks += 1;
        if ticks.is_multiple_of(50) {
            println!("units_sent {}", server.units_sent.load(Ordering::Relaxed));
            std::io::stdout().flush()?;
        }
    }
    match server.handle.join() {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::other("the camera thread panicked")),
    }
}
