//! The agent's own work per span, without a kernel or a network: ring records of API requests go
//! through the same stages as in a run (events → connections → protocols → assemble → correlate) and their
//! spans are encoded as OTLP export requests of 512 spans, as the exporter batches them.
//!
//! `cargo xtask bench` runs it under callgrind with two request counts, counting only the
//! instructions of `agent` (not the making of the records), and reports the difference per span:
//! a figure that does not move with the machine's load, where the agent's CPU time under a real
//! load varies by ±20 % from round to round. What it leaves out: reading the ring, the export
//! queue and the gRPC transport.
//!
//! Usage: `agent_cost http1|grpc REQUESTS`

use std::{net::SocketAddr, sync::Arc};

use httlib_hpack::Encoder;
use tracer::internals::{
    Assembler, Clock, Conn, Connection, Correlator, Event, ProcessInfo, Role, SpanRecord, export_request,
    http2_build as build, parse_event, recycle,
};
use tracer_common::{DATA_EVENT_HEADER_LEN, DataEvent, data_flags, direction, kind, source};

/// Spans per export request: the exporter's default `max_batch`.
const BATCH: usize = 512;

/// What kubectl sends for `kubectl get pod web-0` (the token is a placeholder).
const GET_POD: &[u8] = b"GET /api/v1/namespaces/default/pods/web-0 HTTP/1.1\r\nHost: 10.0.0.1:6443\r\nUser-Agent: kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b\r\nAccept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json\r\nAuthorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.placeholder\r\nKubectl-Command: kubectl get\r\nKubectl-Session: 2b1f6f3c-5a57-4f43-9d0e-2e0a9a1d7c11\r\nAccept-Encoding: gzip\r\n\r\n";

/// Ring records of one connection, numbered as the kernel numbers them, end to end in one
/// buffer: a vector per record would leave the heap fragmented by how many there are, and
/// glibc's malloc, in the agent's count, would then cost more per span for more spans.
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    seq: [u32; 2],
    now: u64,
}

impl Records {
    /// One syscall's bytes, all captured, as one record.
    fn syscall(&mut self, dir: u8, payload: &[u8]) {
        // SAFETY: a plain-old-data header of integers; all-zero is a valid value.
        let mut ev: DataEvent<0> = unsafe { std::mem::zeroed() };
        ev.hdr.kind = kind::DATA;
        ev.hdr.tgid = 7;
        ev.hdr.tid = 7;
        ev.enter_ns = self.now;
        self.now += 20_000;
        ev.hdr.ts_ns = self.now;
        ev.total_len = payload.len() as u64;
        ev.fd = 9;
        ev.cap_len = payload.len() as u32;
        let index = usize::from(dir == direction::EGRESS);
        ev.seq = self.seq[index];
        self.seq[index] += 1;
        ev.direction = dir;
        ev.source = source::SYSCALL;
        ev.flags = data_flags::FIRST | data_flags::LAST;
        // SAFETY: `ev` is `DATA_EVENT_HEADER_LEN` bytes of plain old data.
        let header = unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), DATA_EVENT_HEADER_LEN) };
        self.bytes.extend_from_slice(header);
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.bytes[start..end])
    }
}

/// The records of `requests` API requests on one connection.
trait Workload {
    fn role(&self) -> Role;
    fn peer(&self) -> SocketAddr;
    /// Adds the records of request number `i`, in the order the probes deliver them.
    fn request(&mut self, i: usize, rec: &mut Records);
}

/// kube-apiserver serving `GET pod` over HTTP/1.1 keep-alive.
struct Http1;

impl Workload for Http1 {
    fn role(&self) -> Role {
        Role::Server
    }
    fn peer(&self) -> SocketAddr {
        "10.0.0.2:40000".parse().expect("literal address")
    }
    fn request(&mut self, i: usize, rec: &mut Records) {
        let body = format!(
            "{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"web-0\",\"namespace\":\"default\",\"resourceVersion\":\"{}\"}},\"spec\":{{}},\"status\":{{\"phase\":\"Running\"}}}}",
            1000 + i
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\nAudit-Id: 6c1d7c2e-3f0a-4b7e-9a53-{i:012}\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\nX-Kubernetes-Pf-Flowschema-Uid: 9d2a\r\nX-Kubernetes-Pf-Prioritylevel-Uid: 4f1b\r\nDate: Thu, 26 Nov 2026 20:00:00 GMT\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        rec.syscall(direction::INGRESS, GET_POD);
        rec.syscall(direction::EGRESS, response.as_bytes());
    }
}

/// kube-apiserver as a client of etcd: linearizable `KV/Range` calls over one HTTP/2 connection,
/// with header blocks indexed the way Go's HPACK encoder indexes them.
struct Grpc {
    client: Encoder<'static>,
    server: Encoder<'static>,
}

impl Grpc {
    fn block(enc: &mut Encoder<'static>, fields: &[(&str, &str)]) -> Vec<u8> {
        let flags = Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE;
        let mut out = Vec::new();
        for (name, value) in fields {
            enc.encode((name.as_bytes().to_vec(), value.as_bytes().to_vec(), flags), &mut out)
                .expect("valid header field");
        }
        out
    }
}

impl Workload for Grpc {
    fn role(&self) -> Role {
        Role::Client
    }
    fn peer(&self) -> SocketAddr {
        "10.0.0.3:2379".parse().expect("literal address")
    }
    fn request(&mut self, i: usize, rec: &mut Records) {
        let stream = 2 * i as u32 + 1;
        let key = format!("/registry/pods/default/web-{}", i % 50);
        let mut range = vec![0x0a, key.len() as u8];
        range.extend_from_slice(key.as_bytes());
        let headers = Self::block(
            &mut self.client,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/etcdserverpb.KV/Range"),
                (":authority", "10.0.0.3:2379"),
                ("content-type", "application/grpc"),
                ("user-agent", "grpc-go/1.58.3"),
                ("te", "trailers"),
            ],
        );
        let mut request = Vec::new();
        if i == 0 {
            request.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            request.extend(build::settings(&[]));
        }
        request.extend(build::headers(stream, &headers, false));
        request.extend(build::data(stream, &build::grpc_message(&range), true));
        // RangeResponse { header { revision: 1000 }, kvs { key, value of 1 KiB }, count: 1 }.
        let mut kv = vec![0x0a, key.len() as u8];
        kv.extend_from_slice(key.as_bytes());
        kv.extend_from_slice(&[0x2a, 0x80, 0x08]);
        kv.extend(std::iter::repeat_n(b'x', 1024));
        let mut response_msg = vec![0x0a, 0x03, 0x18, 0xe8, 0x07, 0x12];
        prost::encoding::encode_varint(kv.len() as u64, &mut response_msg);
        response_msg.extend_from_slice(&kv);
        response_msg.extend_from_slice(&[0x20, 0x01]);
        let response_headers =
            Self::block(&mut self.server, &[(":status", "200"), ("content-type", "application/grpc")]);
        let trailers = Self::block(&mut self.server, &[("grpc-status", "0"), ("grpc-message", "")]);
        let mut response = Vec::new();
        if i == 0 {
            response.extend(build::settings(&[]));
        }
        response.extend(build::headers(stream, &response_headers, false));
        response.extend(build::data(stream, &build::grpc_message(&response_msg), false));
        response.extend(build::headers(stream, &trailers, true));
        rec.syscall(direction::EGRESS, &request);
        rec.syscall(direction::INGRESS, &response);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(scenario), Some(Ok(requests))) = (args.get(1), args.get(2).map(|n| n.parse::<usize>())) else {
        eprintln!("usage: agent_cost http1|grpc REQUESTS");
        std::process::exit(2);
    };
    let mut workload: Box<dyn Workload> = match scenario.as_str() {
        "http1" => Box::new(Http1),
        "grpc" => Box::new(Grpc { client: Encoder::default(), server: Encoder::default() }),
        other => {
            eprintln!("agent_cost: unknown scenario {other:?}: give http1 or grpc");
            std::process::exit(2);
        }
    };
    // The records are made first: making them is not the agent's work.
    let mut records = Records { now: 1_000_000, ..Records::default() };
    for i in 0..requests {
        workload.request(i, &mut records);
    }
    let (exported, bytes) = agent(&records, workload.role(), workload.peer());
    println!("{scenario}: {requests} requests, {exported} spans, {bytes} bytes of OTLP");
    if exported != requests {
        // A count per span means nothing if the workload stopped decoding as meant.
        eprintln!(
            "agent_cost: {requests} requests gave {exported} spans: the workload no longer decodes as one span per request"
        );
        std::process::exit(1);
    }
}

/// The agent's work on `records`: what callgrind counts (`--toggle-collect=agent_cost::agent`).
/// Returns the spans exported and the bytes of OTLP they took.
#[inline(never)]
fn agent(records: &Records, role: Role, peer: SocketAddr) -> (usize, usize) {
    let process = Arc::new(ProcessInfo {
        service_name: "kube-apiserver".into(),
        pid: 7,
        executable_name: "kube-apiserver".into(),
        host_name: "node-1".into(),
    });
    let local: SocketAddr = "10.0.0.1:6443".parse().expect("literal address");
    let mut conn: Conn = Connection::new(role, Some(local), Some(peer), 1_000, false, process);
    let mut assembler = Assembler::new(Clock::new(), vec![2379]);
    let mut correlator = Correlator::new();
    let (mut spans, mut ready, mut batch, mut body) =
        (Vec::<SpanRecord>::new(), Vec::new(), Vec::<SpanRecord>::with_capacity(BATCH), Vec::new());
    let (mut exported, mut bytes) = (0usize, 0usize);
    for record in records.iter() {
        let Ok(Event::Data(chunk)) = parse_event(record) else { unreachable!("records made above are data records") };
        if let Some(feed) = conn.on_chunk(&chunk) {
            assembler.on_feed(&mut conn, chunk.direction, feed, &mut spans);
        }
        correlator.intake(&mut spans, chunk.exit_ns, &mut ready);
        for span in ready.drain(..) {
            if exported + batch.len() == 0 {
                // Says that the workload decodes as meant: the name and attributes of an API call.
                eprintln!("first span: {:?} {:?}", span.name, span.attributes);
            }
            batch.push(span);
            if batch.len() == BATCH {
                let start = export_request(&batch, &mut body);
                (exported, bytes) = (exported + batch.len(), bytes + body.len() - start);
                recycle(batch.drain(..)); // as the exporter does
            }
        }
    }
    correlator.finish(&mut ready);
    batch.append(&mut ready);
    if !batch.is_empty() {
        let start = export_request(&batch, &mut body);
        (exported, bytes) = (exported + batch.len(), bytes + body.len() - start);
    }
    (exported, bytes)
}
