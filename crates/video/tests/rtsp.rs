#![allow(clippy::unwrap_used)]
//! RTSP cameras: a test camera (tests/support/rtsp_server.rs) serves a stream encoded here, and
//! the reader must hand back the same pictures in order, fall behind only to key frames, and end
//! with a clear error on every misbehaviour — never hang, never panic.

#[path = "support/rtsp_server.rs"]
mod rtsp_server;

use image::RgbImage;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use rtsp_server::{serve, Behaviour, TestStream};
use std::time::{Duration, Instant};
use video::rtsp::{RtspOptions, RtspSource, RtspTransport};
use video::{FrameSource, VideoError, VideoLimits};

const W: u32 = 320;
const H: u32 = 240;
const FPS: u32 = 30;
const KEY_EVERY: usize = 10;

/// Frame `i`: a gradient that slides 16 pixels a frame (so every frame differs from the next
/// everywhere) with a bright square moving across it.
fn picture(i: usize) -> RgbImage {
    let (sx, sy) = (20 + (i as u32 * 7) % 240, 30 + (i as u32 * 3) % 160);
    let shift = i as u32 * 16;
    RgbImage::from_fn(W, H, |x, y| {
        if (sx..sx + 40).contains(&x) && (sy..sy + 40).contains(&y) {
            image::Rgb([240, 230, 40])
        } else {
            image::Rgb([((x + shift) % W * 255 / W) as u8, (y * 255 / H) as u8, 90])
        }
    })
}

/// `n` frames encoded at 2 Mbit/s with a key frame every KEY_EVERY.
fn stream(n: usize) -> TestStream {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(2_000_000))
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .rate_control_mode(RateControlMode::Off)
        .skip_frames(false);
    let mut encoder =
        Encoder::with_api_config(openh264::OpenH264API::from_source(), config).unwrap();
    let mut units = Vec::new();
    for i in 0..n {
        if i % KEY_EVERY == 0 {
            encoder.force_intra_frame();
        }
        let p = picture(i);
        let yuv =
            YUVBuffer::from_rgb8_source(RgbSliceU8::new(p.as_raw(), (W as usize, H as usize)));
        units.push(encoder.encode(&yuv).unwrap().to_vec());
    }
    TestStream::from_annexb(&units, FPS)
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

fn options(stall_ms: u64) -> RtspOptions {
    RtspOptions {
        stall: Duration::from_millis(stall_ms),
        ..RtspOptions::default()
    }
}

/// Reads to the end; the frames with the source frame each shows (from its time), and how it ended.
fn read_all(source: &mut dyn FrameSource) -> (Vec<(usize, RgbImage)>, Option<VideoError>) {
    let mut frames = Vec::new();
    loop {
        match source.next_frame() {
            None => return (frames, None),
            Some(Err(e)) => return (frames, Some(e)),
            Some(Ok(f)) => {
                let i = (f.time_ms as f64 * FPS as f64 / 1000.0).round() as usize;
                frames.push((i, f.image));
            }
        }
    }
}

/// Each frame shows the picture its time names (the square's place differs between any two
/// frames by far more than coding error).
fn assert_pictures_match(frames: &[(usize, RgbImage)]) {
    for (i, image) in frames {
        assert_eq!(image.dimensions(), (W, H));
        let here = mean_abs_diff(image, &picture(*i));
        assert!(
            here < 4.0,
            "frame {i} differs from its picture by {here:.2}"
        );
        let other = mean_abs_diff(image, &picture(i + 1));
        assert!(
            other > here + 2.0,
            "frame {i} as close to the next picture ({other:.2} vs {here:.2})"
        );
    }
}

#[test]
fn an_rtsp_camera_is_read_frame_by_frame_in_order_through_open() {
    let n = 30;
    let server = serve(stream(n), Behaviour::RealTime);
    let mut source = video::source::open(server.url.as_ref(), &VideoLimits::default()).unwrap();
    assert_eq!(source.frame_rate(), FPS as f64);
    assert_eq!(source.expected_frames(), None);
    let (frames, end) = read_all(source.as_mut());
    let stats = source.stats();
    // The camera closing its connection ends the stream without an error.
    assert!(end.is_none(), "{end:?}");
    assert_eq!(stats.frames + stats.dropped, n as u64, "{stats:?}");
    assert_eq!(stats.skipped, 0);
    assert!(frames.len() >= n / 2, "{} frames of {n}", frames.len());
    let order: Vec<usize> = frames.iter().map(|(i, _)| *i).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(order[0], 0);
    assert_pictures_match(&frames);
    server.handle.join().unwrap().unwrap();
}

#[test]
fn an_rtsp_camera_sending_rtp_over_udp_is_read_in_order() {
    let n = 30;
    let server = serve(stream(n), Behaviour::RealTime);
    let udp = RtspOptions {
        transport: RtspTransport::Udp,
        ..options(3000)
    };
    let mut source = RtspSource::connect(&server.url, &VideoLimits::default(), udp).unwrap();
    let (frames, end) = read_all(&mut source);
    let stats = source.stats();
    // Every packet went over UDP; the pictures are the camera's, in order.
    assert!(
        server
            .udp_packets
            .load(std::sync::atomic::Ordering::Relaxed)
            >= n as u64
    );
    assert_eq!(stats.frames + stats.dropped, n as u64, "{stats:?} {end:?}");
    assert!(
        frames.len() >= n / 2,
        "{} frames of {n}: {end:?}",
        frames.len()
    );
    let order: Vec<usize> = frames.iter().map(|(i, _)| *i).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(order[0], 0);
    assert_pictures_match(&frames);
    // The camera closing its RTSP connection ends the stream without an error.
    assert!(end.is_none(), "{end:?}");
    server.handle.join().unwrap().unwrap();
}

#[test]
fn packets_lost_over_udp_cost_frames_and_the_stream_goes_on_to_its_end() {
    let n = 60;
    let server = serve(stream(n), Behaviour::LosePackets);
    let udp = RtspOptions {
        transport: RtspTransport::Udp,
        keep_every_unit: true,
        ..options(3000)
    };
    let mut source = RtspSource::connect(&server.url, &VideoLimits::default(), udp).unwrap();
    let (frames, end) = read_all(&mut source);
    let stats = source.stats();
    // Some frames are lost with their packets (the access unit never completes, or openh264
    // refuses it: `skipped`); the reader goes on to the end of the stream, in order, and the
    // stream ends as the camera ends it.
    let order: Vec<usize> = frames.iter().map(|(i, _)| *i).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(frames.len() < n, "{order:?} {stats:?}");
    assert!(
        order.last().is_some_and(|&i| i + KEY_EVERY >= n),
        "{order:?}"
    );
    assert!(end.is_none(), "{end:?}");
    server.handle.join().unwrap().unwrap();
}

#[test]
fn a_reader_that_falls_behind_drops_whole_groups_up_to_the_next_key_frame() {
    // Long enough to overflow the queue (32 units) at a third of the camera's rate.
    let n = 150;
    let server = serve(stream(n), Behaviour::RealTime);
    let mut source =
        RtspSource::connect(&server.url, &VideoLimits::default(), options(5000)).unwrap();
    // The camera sends 30 frames a second, the reader takes 10: the queue fills, and the camera's
    // side drops units until a key frame finds room.
    let mut frames = Vec::new();
    while let Some(Ok(f)) = source.next_frame() {
        frames.push((
            (f.time_ms as f64 * FPS as f64 / 1000.0).round() as usize,
            f.image,
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = source.stats();
    assert!(stats.dropped >= 10, "{stats:?}");
    assert_eq!(stats.frames + stats.dropped, n as u64, "{stats:?}");
    assert_eq!(stats.skipped, 0, "{stats:?}");
    // After every gap the next frame shown is a key frame, so no picture is damaged.
    let shown: Vec<usize> = frames.iter().map(|(i, _)| *i).collect();
    assert!(shown.windows(2).any(|w| w[1] > w[0] + 1), "{shown:?}");
    assert!(shown.iter().any(|i| *i >= KEY_EVERY), "{shown:?}");
    for w in shown.windows(2) {
        assert!(w[1] == w[0] + 1 || w[1] % KEY_EVERY == 0, "{shown:?}");
    }
    assert_pictures_match(&frames);
}

#[test]
fn a_recording_read_with_keep_every_unit_loses_nothing_to_a_slow_reader() {
    let n = 40;
    let server = serve(stream(n), Behaviour::RealTime);
    let keep = RtspOptions {
        keep_every_unit: true,
        ..options(5000)
    };
    let mut source = RtspSource::connect(&server.url, &VideoLimits::default(), keep).unwrap();
    let mut frames = Vec::new();
    while let Some(Ok(f)) = source.next_frame() {
        frames.push((
            (f.time_ms as f64 * FPS as f64 / 1000.0).round() as usize,
            f.image,
        ));
        std::thread::sleep(Duration::from_millis(60));
    }
    let stats = source.stats();
    assert_eq!(
        (stats.frames, stats.dropped, stats.skipped),
        (n as u64, 0, 0)
    );
    let shown: Vec<usize> = frames.iter().map(|(i, _)| *i).collect();
    assert_eq!(shown, (0..n).collect::<Vec<_>>());
    assert_pictures_match(&frames);
    server.handle.join().unwrap().unwrap();
}

#[test]
fn a_camera_that_goes_silent_is_given_up_after_the_stall_time() {
    let server = serve(stream(10), Behaviour::StallAfterPlay);
    let mut source =
        RtspSource::connect(&server.url, &VideoLimits::default(), options(400)).unwrap();
    let began = Instant::now();
    let end = source.next_frame();
    let waited = began.elapsed();
    match end {
        Some(Err(e)) => {
            assert!(matches!(e, VideoError::Camera(_)), "{e:?}");
            assert!(e.to_string().contains("no frame for"), "{e}");
        }
        other => panic!(
            "expected a stall error, got {:?}",
            other.map(|r| r.map(|f| f.index))
        ),
    }
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(source.next_frame().is_none());
}

#[test]
fn a_camera_without_h264_video_is_refused_when_connecting() {
    let server = serve(stream(2), Behaviour::NoVideo);
    let err = RtspSource::connect(&server.url, &VideoLimits::default(), options(5000))
        .err()
        .unwrap();
    assert!(matches!(err, VideoError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("no H.264 video stream"), "{err}");
}

#[test]
fn units_over_the_size_limit_end_the_stream() {
    let server = serve(stream(10), Behaviour::RealTime);
    let limits = VideoLimits {
        max_sample_bytes: 200,
        ..VideoLimits::default()
    };
    let mut source = RtspSource::connect(&server.url, &limits, options(5000)).unwrap();
    let (frames, end) = read_all(&mut source);
    assert!(frames.is_empty());
    assert!(matches!(end, Some(VideoError::TooLarge(_))), "{end:?}");
}

#[test]
fn corrupt_units_and_a_dropped_connection_end_in_errors_not_panics() {
    for behaviour in [Behaviour::Corrupt, Behaviour::CloseHalfway] {
        let n = 40;
        let server = serve(stream(n), behaviour);
        let mut source =
            RtspSource::connect(&server.url, &VideoLimits::default(), options(3000)).unwrap();
        let (frames, _end) = read_all(&mut source);
        let stats = source.stats();
        assert!(
            stats.frames + stats.skipped + stats.dropped <= n as u64,
            "{behaviour:?}: {stats:?}"
        );
        if behaviour == Behaviour::CloseHalfway {
            assert!(frames.len() <= n / 2);
            assert_pictures_match(&frames);
        }
        assert!(source.next_frame().is_none(), "{behaviour:?}");
    }
}

#[test]
fn nothing_listening_is_a_clear_error_that_never_shows_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("rtsp://gate:s3cret%21@127.0.0.1:{port}/camera");
    let err = RtspSource::connect(&url, &VideoLimits::default(), options(2000))
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains("gate"), "{text}");
}

#[test]
fn a_looping_camera_is_read_on_past_its_last_unit_and_stops_when_the_reader_goes() {
    // The soak runs' camera (examples/rtsp_camera.rs): its units again from the first, times
    // running on. The reader must cross the loop like any other key frame.
    let n = KEY_EVERY;
    let server = serve(stream(n), Behaviour::Loop);
    let mut source = video::source::open(server.url.as_ref(), &VideoLimits::default()).unwrap();
    let mut shown = Vec::new();
    while shown.len() < 3 * n {
        let f = source
            .next_frame()
            .expect("a looping camera does not end")
            .unwrap();
        let i = (f.time_ms as f64 * FPS as f64 / 1000.0).round() as usize;
        let here = mean_abs_diff(&f.image, &picture(i % n));
        assert!(
            here < 4.0,
            "frame {i} differs from picture {} by {here:.2}",
            i % n
        );
        shown.push(i);
    }
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
    assert!(*shown.last().unwrap() >= 2 * n, "{shown:?}");
    drop(source);
    // The camera notices its client gone and ends without an error.
    server.handle.join().unwrap().unwrap();
    assert!(server.units_sent.load(std::sync::atomic::Ordering::Relaxed) >= 3 * n as u64);
}
