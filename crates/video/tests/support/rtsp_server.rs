//! A minimal RTSP camera for tests: one client, one H.264 stream, RTP interleaved on the RTSP
//! connection (RFC 2326 §10.12) or, when the client's SETUP asks for it (`client_port=`), over
//! UDP from a port of its own to the client's, packetised as RFC 6184 says (single NAL units,
//! FU-A fragments over 1,400 bytes). Enough of the protocol to answer retina the way IP cameras do, plus the
//! misbehaviours a reader must survive.
#![allow(dead_code)]

use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// An H.264 stream: parameter sets and access units of NAL units (no start codes), at `fps`.
#[derive(Clone)]
pub struct TestStream {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub units: Vec<Vec<Vec<u8>>>,
    pub fps: u32,
}

impl TestStream {
    /// Split Annex B access units into NAL units, taking SPS (7) and PPS (8) out as parameters.
    pub fn from_annexb(units: &[Vec<u8>], fps: u32) -> TestStream {
        let (mut sps, mut pps) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        for unit in units {
            let mut nals = Vec::new();
            for nal in video::h264::nal_units(unit) {
                match nal.first().map(|b| b & 0x1f) {
                    Some(7) => sps = nal.to_vec(),
                    Some(8) => pps = nal.to_vec(),
                    Some(_) => nals.push(nal.to_vec()),
                    None => {}
                }
            }
            out.push(nals);
        }
        TestStream {
            sps,
            pps,
            units: out,
            fps,
        }
    }
}

impl TestStream {
    /// The first H.264 track of an MP4 file, sample by sample (AVCC, length-prefixed NAL units).
    pub fn from_mp4(path: &std::path::Path) -> TestStream {
        let file = std::fs::File::open(path).expect("open the MP4");
        let len = file.metadata().expect("MP4 metadata").len();
        let mut reader =
            mp4::Mp4Reader::read_header(std::io::BufReader::new(file), len).expect("MP4 header");
        let (id, sps, pps, size, samples, secs) = {
            let (id, track) = reader
                .tracks()
                .iter()
                .find(|(_, t)| matches!(t.media_type(), Ok(mp4::MediaType::H264)))
                .expect("an H.264 track");
            let avcc = &track
                .trak
                .mdia
                .minf
                .stbl
                .stsd
                .avc1
                .as_ref()
                .expect("avc1")
                .avcc;
            (
                *id,
                avcc.sequence_parameter_sets[0].bytes.clone(),
                avcc.picture_parameter_sets[0].bytes.clone(),
                (avcc.length_size_minus_one & 3) as usize + 1,
                track.sample_count(),
                track.duration().as_secs_f64(),
            )
        };
        let mut units = Vec::new();
        for sample in 1..=samples {
            let bytes = reader
                .read_sample(id, sample)
                .expect("sample")
                .expect("sample")
                .bytes;
            let mut rest = &bytes[..];
            let mut nals = Vec::new();
            while rest.len() > size {
                let n = rest[..size]
                    .iter()
                    .fold(0usize, |a, b| (a << 8) | *b as usize);
                nals.push(rest[size..size + n].to_vec());
                rest = &rest[size + n..];
            }
            units.push(nals);
        }
        TestStream {
            sps,
            pps,
            fps: (units.len() as f64 / secs).round() as u32,
            units,
        }
    }
}

/// How the camera behaves once asked to play.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Behaviour {
    /// Every unit at the stream's frame rate, then the connection closes.
    RealTime,
    /// Plays, then sends nothing and keeps the connection open.
    StallAfterPlay,
    /// Offers only an audio stream.
    NoVideo,
    /// Units whose slice data is overwritten with noise (headers kept).
    Corrupt,
    /// The connection closes after half the units.
    CloseHalfway,
    /// Half the units, then nothing while the connection stays open.
    StallHalfway,
    /// Every 25th RTP packet is never sent (a lossy network; for UDP).
    LosePackets,
    /// Every unit at the stream's frame rate, from the first again after the last (timestamps
    /// and sequence numbers running on, wrapping as they do), until the client closes the
    /// connection (interleaved; over UDP, until the process ends): a camera that never stops,
    /// for soak runs (examples/rtsp_camera.rs).
    Loop,
}

pub struct RtspTestServer {
    pub url: String,
    pub handle: JoinHandle<std::io::Result<()>>,
    /// RTP packets sent over UDP (none when they went interleaved).
    pub udp_packets: Arc<AtomicU64>,
    /// Access units sent so far.
    pub units_sent: Arc<AtomicU64>,
}

/// Listen on a loopback port and serve one client.
pub fn serve(stream: TestStream, behaviour: Behaviour) -> RtspTestServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    let url = format!("rtsp://127.0.0.1:{port}/camera");
    let base = url.clone();
    let udp_packets = Arc::new(AtomicU64::new(0));
    let units_sent = Arc::new(AtomicU64::new(0));
    let counters = Counters {
        udp_packets: udp_packets.clone(),
        units: units_sent.clone(),
    };
    let handle = std::thread::spawn(move || {
        let (socket, _) = listener.accept()?;
        session(socket, &base, &stream, behaviour, &counters)
    });
    RtspTestServer {
        url,
        handle,
        udp_packets,
        units_sent,
    }
}

/// What the camera has sent, for the one who started it.
struct Counters {
    udp_packets: Arc<AtomicU64>,
    units: Arc<AtomicU64>,
}

/// One RTSP request: method, CSeq and Transport (retina's requests carry no body).
fn read_request(
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<(String, String, String)>> {
    let mut method = String::new();
    let mut cseq = String::new();
    let mut transport = String::new();
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if first {
            method = line.split(' ').next().unwrap_or("").to_string();
            first = false;
        } else if line.is_empty() {
            return Ok(Some((method, cseq, transport)));
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("cseq") {
                cseq = value.trim().to_string();
            } else if name.eq_ignore_ascii_case("transport") {
                transport = value.trim().to_string();
            }
        }
    }
}

fn sdp(stream: &TestStream, behaviour: Behaviour) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    if behaviour == Behaviour::NoVideo {
        return "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                m=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=control:trackID=0\r\n"
            .to_string();
    }
    let profile: String = stream.sps[1..4]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
         m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={},{}\r\n\
         a=framerate:{}\r\na=control:trackID=0\r\n",
        b64.encode(&stream.sps),
        b64.encode(&stream.pps),
        stream.fps
    )
}

fn session(
    socket: TcpStream,
    base: &str,
    stream: &TestStream,
    behaviour: Behaviour,
    counters: &Counters,
) -> std::io::Result<()> {
    let mut out = socket.try_clone()?;
    let mut reader = BufReader::new(socket);
    // RTP over UDP: this camera's socket and the client's RTP port.
    let mut udp: Option<(UdpSocket, SocketAddr)> = None;
    while let Some((method, cseq, transport)) = read_request(&mut reader)? {
        let head = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n");
        match method.as_str() {
            "OPTIONS" => write!(
                out,
                "{head}Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"
            )?,
            "DESCRIBE" => {
                let body = sdp(stream, behaviour);
                write!(
                    out,
                    "{head}Content-Base: {base}/\r\nContent-Type: application/sdp\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )?
            }
            "SETUP" => match transport
                .split(';')
                .find_map(|p| p.strip_prefix("client_port="))
                .and_then(|ports| ports.split('-').next()?.parse::<u16>().ok())
            {
                Some(client) => {
                    let socket = UdpSocket::bind("127.0.0.1:0")?;
                    let port = socket.local_addr()?.port();
                    write!(
                        out,
                        "{head}Transport: RTP/AVP;unicast;client_port={client}-{};\
                         server_port={port}-{}\r\nSession: 4711;timeout=60\r\n\r\n",
                        client + 1,
                        port + 1
                    )?;
                    udp = Some((socket, SocketAddr::from(([127, 0, 0, 1], client))));
                }
                None => write!(
                    out,
                    "{head}Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\
                     Session: 4711;timeout=60\r\n\r\n"
                )?,
            },
            "PLAY" => {
                write!(
                    out,
                    "{head}Session: 4711\r\nRTP-Info: url={base}/trackID=0;seq=1;rtptime=0\r\n\r\n"
                )?;
                let udp = udp.as_ref().map(|(s, a)| (s, *a, &*counters.udp_packets));
                return play(
                    &mut out,
                    &mut reader,
                    udp,
                    stream,
                    behaviour,
                    &counters.units,
                );
            }
            _ => write!(out, "{head}Session: 4711\r\n\r\n")?,
        }
    }
    Ok(())
}

fn play(
    out: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    udp: Option<(&UdpSocket, SocketAddr, &AtomicU64)>,
    stream: &TestStream,
    behaviour: Behaviour,
    units_sent: &AtomicU64,
) -> std::io::Result<()> {
    if behaviour == Behaviour::StallAfterPlay {
        // Keep the connection open until the client closes it.
        let mut sink = [0u8; 256];
        while reader.read(&mut sink)? > 0 {}
        return Ok(());
    }
    let mut seq: u16 = 1;
    let units = match behaviour {
        Behaviour::CloseHalfway | Behaviour::StallHalfway => {
            &stream.units[..stream.units.len() / 2]
        }
        _ => &stream.units[..],
    };
    let mut noise: u32 = 0x1234_5678;
    let start = std::time::Instant::now();
    let period = Duration::from_secs(1) / stream.fps;
    // RTP frames and answers to requests made while playing share the connection, one message
    // at a time.
    let writer = Arc::new(Mutex::new(out.try_clone()?));
    let gone = Arc::new(AtomicBool::new(false));
    let count = if behaviour == Behaviour::Loop {
        let (reader, writer, gone) = (
            BufReader::new(reader.get_ref().try_clone()?),
            writer.clone(),
            gone.clone(),
        );
        std::thread::spawn(move || answer_while_playing(reader, &writer, &gone));
        usize::MAX
    } else {
        units.len()
    };
    for (i, unit) in units.iter().cycle().take(count).enumerate() {
        if gone.load(Ordering::Relaxed) {
            return Ok(());
        }
        let timestamp = (i as u32).wrapping_mul(90_000 / stream.fps);
        for (n, nal) in unit.iter().enumerate() {
            let mut nal = nal.clone();
            if behaviour == Behaviour::Corrupt && nal.len() > 8 {
                for b in &mut nal[4..] {
                    noise ^= noise << 13;
                    noise ^= noise >> 17;
                    noise ^= noise << 5;
                    *b = noise as u8;
                }
            }
            let last_nal = n + 1 == unit.len();
            for (payload, last_piece) in packets(&nal) {
                let marker = last_nal && last_piece;
                let mut rtp = vec![0x80, if marker { 0x80 | 96 } else { 96 }];
                rtp.extend_from_slice(&seq.to_be_bytes());
                rtp.extend_from_slice(&timestamp.to_be_bytes());
                rtp.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
                rtp.extend_from_slice(&payload);
                let lost = behaviour == Behaviour::LosePackets && seq.is_multiple_of(25);
                if lost {
                    // Never sent: the client sees a gap in the sequence numbers.
                } else if let Some((socket, client, sent)) = udp {
                    socket.send_to(&rtp, client)?;
                    sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    let mut frame = vec![b'$', 0];
                    frame.extend_from_slice(&(rtp.len() as u16).to_be_bytes());
                    frame.extend_from_slice(&rtp);
                    let mut out = writer
                        .lock()
                        .map_err(|_| std::io::Error::other("writer poisoned"))?;
                    match out.write_all(&frame) {
                        // A looping camera runs until its client goes.
                        Err(_) if behaviour == Behaviour::Loop => return Ok(()),
                        r => r?,
                    }
                }
                seq = seq.wrapping_add(1);
            }
        }
        units_sent.fetch_add(1, Ordering::Relaxed);
        // Paced by the clock, not by sleeps alone, so the rate holds over hours; a camera that
        // has fallen behind (its client not reading) sends on at once.
        if let Some(wait) = (period * (i as u32 + 1)).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    out.flush()?;
    if behaviour == Behaviour::StallHalfway {
        let mut sink = [0u8; 256];
        while reader.read(&mut sink)? > 0 {}
    }
    Ok(())
}

/// Answers what the client asks while the camera plays — retina keeps a session alive with a
/// request every 30 s and gives up on a camera that does not answer — until the client closes
/// the connection, then says it has gone.
fn answer_while_playing(
    mut reader: BufReader<TcpStream>,
    writer: &Mutex<TcpStream>,
    gone: &AtomicBool,
) {
    while let Ok(Some((_, cseq, _))) = read_request(&mut reader) {
        let answer = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4711\r\n\r\n");
        let Ok(mut out) = writer.lock() else { break };
        if out.write_all(answer.as_bytes()).is_err() {
            break;
        }
    }
    gone.store(true, Ordering::Relaxed);
}

/// RFC 6184 payloads for one NAL unit: itself when small, else FU-A fragments.
fn packets(nal: &[u8]) -> Vec<(Vec<u8>, bool)> {
    const MAX: usize = 1400;
    if nal.len() <= MAX {
        return vec![(nal.to_vec(), true)];
    }
    let indicator = (nal[0] & 0xe0) | 28;
    let kind = nal[0] & 0x1f;
    let body = &nal[1..];
    let pieces: Vec<&[u8]> = body.chunks(MAX - 2).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let start = if i == 0 { 0x80 } else { 0 };
            let end = if i + 1 == pieces.len() { 0x40 } else { 0 };
            let mut p = vec![indicator, start | end | kind];
            p.extend_from_slice(piece);
            (p, i + 1 == pieces.len())
        })
        .collect()
}
