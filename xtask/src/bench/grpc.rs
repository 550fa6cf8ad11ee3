//! A small etcd load generator speaking gRPC over cleartext HTTP/2 (h2c) with the standard library
//! only: etcdctl starts a process per call (too slow), etcd's `benchmark` tool is not packaged.
//!
//! Each connection runs on its own thread and keeps `inflight` unary calls open (HTTP/2 streams),
//! half `KV/Put` of a 256-byte value, half linearizable `KV/Range` of one key, over a 1000-key
//! space. Latency is measured per call, from writing its frames to the trailers' END_STREAM.
//! Frames the server sends that we do not need (headers, HPACK state) are skipped by length; a
//! call succeeded when a DATA frame (the response message) came before the trailers.

use std::{
    collections::HashMap,
    io::{BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const WINDOW: u32 = 1 << 30;
const KEYS: u64 = 1000;
const VALUE_SIZE: usize = 256;

#[derive(Default, Debug)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    /// Latency of each successful call, microseconds.
    pub lat_us: Vec<u32>,
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// One Put, to see that etcd serves.
pub fn probe(port: u16) -> Result<()> {
    let r = worker(port, 1, Instant::now() + Duration::from_millis(1), 7, Duration::from_secs(2))?;
    if r.ok == 0 {
        bail!("no successful call ({} errors)", r.errors);
    }
    Ok(())
}

/// `conns` connections × `inflight` calls for `duration`.
pub fn run(port: u16, conns: usize, inflight: usize, duration: Duration) -> Result<LoadResult> {
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || worker(port, inflight, deadline, i as u64 * 7919 + 1, Duration::from_secs(10)))
        })
        .collect();
    let mut total = LoadResult::default();
    for h in handles {
        let r = h.join().map_err(|_| anyhow::anyhow!("an etcd load thread panicked"))??;
        total.ok += r.ok;
        total.errors += r.errors;
        total.lat_us.extend(r.lat_us);
    }
    total.elapsed = duration;
    Ok(total)
}

fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

fn hpack_string(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 127);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Request headers, HPACK without Huffman coding or the dynamic table.
fn header_block(path: &str, authority: &str) -> Vec<u8> {
    let mut h = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    h.push(0x04); // literal without indexing, name = static 4 (:path)
    hpack_string(&mut h, path);
    h.push(0x01); // :authority
    hpack_string(&mut h, authority);
    h.extend_from_slice(&[0x0f, 0x10]); // content-type (static 31)
    hpack_string(&mut h, "application/grpc");
    h.push(0x00); // new name
    hpack_string(&mut h, "te");
    hpack_string(&mut h, "trailers");
    h
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The gRPC message of a Range of key number `key` (one the load's Puts write).
pub fn range_message(key: u64) -> Vec<u8> {
    message(false, key, &[])
}

/// A gRPC length-prefixed PutRequest{key, value} or RangeRequest{key}.
fn message(put: bool, key: u64, value: &[u8]) -> Vec<u8> {
    let key = format!("/registry/bench/key-{key:05}");
    let mut pb = vec![0x0a];
    varint(&mut pb, key.len() as u64);
    pb.extend_from_slice(key.as_bytes());
    if put {
        pb.push(0x12);
        varint(&mut pb, value.len() as u64);
        pb.extend_from_slice(value);
    }
    let mut msg = vec![0];
    msg.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    msg.extend_from_slice(&pb);
    msg
}

struct Call {
    start: Instant,
    got_data: bool,
}

fn worker(port: u16, inflight: usize, deadline: Instant, seed: u64, io_timeout: Duration) -> Result<LoadResult> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(io_timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);

    let authority = format!("127.0.0.1:{port}");
    let put_headers = header_block("/etcdserverpb.KV/Put", &authority);
    let range_headers = header_block("/etcdserverpb.KV/Range", &authority);
    let value = vec![b'v'; VALUE_SIZE];

    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut settings = Vec::new();
    settings.extend_from_slice(&2u16.to_be_bytes()); // ENABLE_PUSH = 0
    settings.extend_from_slice(&0u32.to_be_bytes());
    settings.extend_from_slice(&4u16.to_be_bytes()); // INITIAL_WINDOW_SIZE
    settings.extend_from_slice(&WINDOW.to_be_bytes());
    frame(&mut out, SETTINGS, 0, 0, &settings);
    frame(&mut out, 8, 0, 0, &WINDOW.to_be_bytes()); // connection WINDOW_UPDATE

    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next_stream = 1u32;
    let mut calls: HashMap<u32, Call> = HashMap::new();
    let mut result = LoadResult::default();
    let mut consumed = 0u64;

    let send = |out: &mut Vec<u8>, calls: &mut HashMap<u32, Call>, next_stream: &mut u32, rng: &mut u64| {
        *rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let put = (*rng >> 33) & 1 == 0;
        let key = (*rng >> 40) % KEYS;
        let id = *next_stream;
        *next_stream += 2;
        frame(out, HEADERS, END_HEADERS, id, if put { &put_headers } else { &range_headers });
        frame(out, DATA, END_STREAM, id, &message(put, key, &value));
        calls.insert(id, Call { start: Instant::now(), got_data: false });
    };
    for _ in 0..inflight {
        send(&mut out, &mut calls, &mut next_stream, &mut rng);
    }
    writer.write_all(&out)?;
    out.clear();

    let mut head = [0u8; 9];
    let mut payload = Vec::with_capacity(16 * 1024);
    loop {
        if calls.is_empty() {
            break;
        }
        reader.read_exact(&mut head).context("reading an HTTP/2 frame from etcd")?;
        let len = ((head[0] as usize) << 16) | ((head[1] as usize) << 8) | head[2] as usize;
        let (ty, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        payload.resize(len, 0);
        reader.read_exact(&mut payload).context("reading an HTTP/2 frame from etcd")?;
        let mut done = None;
        match ty {
            DATA => {
                consumed += len as u64;
                if let Some(c) = calls.get_mut(&id) {
                    c.got_data = true;
                }
                if flags & END_STREAM != 0 {
                    done = Some(id);
                }
            }
            HEADERS if flags & END_STREAM != 0 => done = Some(id),
            RST_STREAM => {
                if let Some(_c) = calls.remove(&id) {
                    result.errors += 1;
                    if Instant::now() < deadline {
                        send(&mut out, &mut calls, &mut next_stream, &mut rng);
                    }
                }
            }
            SETTINGS if flags & ACK == 0 => frame(&mut out, SETTINGS, ACK, 0, &[]),
            PING if flags & ACK == 0 => frame(&mut out, PING, ACK, 0, &payload),
            GOAWAY => bail!("etcd sent GOAWAY: {}", String::from_utf8_lossy(payload.get(8..).unwrap_or_default())),
            _ => {}
        }
        if let Some(c) = done.and_then(|id| calls.remove(&id)) {
            let now = Instant::now();
            if now <= deadline || result.ok + result.errors == 0 {
                if c.got_data {
                    result.ok += 1;
                    result.lat_us.push(now.duration_since(c.start).as_micros().min(u32::MAX as u128) as u32);
                } else {
                    result.errors += 1;
                }
            }
            if now < deadline {
                send(&mut out, &mut calls, &mut next_stream, &mut rng);
            }
        }
        if consumed > (WINDOW / 2) as u64 {
            frame(&mut out, 8, 0, 0, &(consumed as u32).to_be_bytes());
            consumed = 0;
        }
        // Write what is due once the frames already received are handled.
        if !out.is_empty() && reader.buffer().is_empty() {
            writer.write_all(&out)?;
            out.clear();
        }
        if next_stream > 0x7000_0000 {
            bail!("stream ids exhausted");
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn put_message() {
        let m = super::message(true, 3, b"ab");
        // 5-byte prefix, then field 1 (key) and field 2 (value).
        assert_eq!(m[0], 0);
        assert_eq!(u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize, m.len() - 5);
        assert_eq!(m[5], 0x0a);
        assert_eq!(&m[m.len() - 4..], &[0x12, 2, b'a', b'b']);
    }
}
