use super::frame::{FrameHeader, flags, frame_type as ft};

pub fn frame(kind: u8, fl: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader { length: payload.len() as u32, kind, flags: fl, stream_id, reserved: false };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

pub fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in entries {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(ft::SETTINGS, 0, 0, &p)
}

pub fn headers(stream_id: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let fl = flags::END_HEADERS | if end_stream { flags::END_STREAM } else { 0 };
    frame(ft::HEADERS, fl, stream_id, block)
}

pub fn data(stream_id: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    frame(ft::DATA, if end_stream { flags::END_STREAM } else { 0 }, stream_id, payload)
}

/// A gRPC length-prefixed message.
pub fn grpc_message(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}
