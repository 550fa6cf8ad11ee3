//! What one direction's decoder reports.

use crate::protocols::{
    Timing,
    hpack::{FieldValue, Lookup, Unresolved, lookup},
};

/// What one direction produced.
#[derive(Clone, Debug, PartialEq)]
pub enum H2Event {
    /// A complete header block (HEADERS + CONTINUATIONs), request/response headers or trailers.
    Headers {
        stream_id: u32,
        end_stream: bool,
        /// Allow-listed fields only ([`crate::protocols::hpack::ALLOWED_NAMES`]).
        fields: Vec<(&'static str, FieldValue)>,
        /// Fields whose names could not be resolved (mid-connection attach).
        unresolved: Unresolved,
        timing: Timing,
    },
    /// A header block that could not be decoded (bytes not captured, too large, or corrupt).
    HeadersUnknown {
        stream_id: u32,
        end_stream: bool,
        reason: &'static str,
        timing: Timing,
    },
    /// One DATA frame.
    Data {
        stream_id: u32,
        /// Payload length without padding; `None` if the pad length byte was not captured.
        len: Option<u32>,
        end_stream: bool,
        /// The captured start of the payload (no padding), at most
        /// [`DATA_CAPTURE_LIMIT`](super::DATA_CAPTURE_LIMIT) bytes; shorter than `len` if the rest
        /// was beyond the limit or not captured.
        data: Vec<u8>,
        timing: Timing,
    },
    RstStream {
        stream_id: u32,
        error_code: Option<u32>,
        timing: Timing,
    },
    GoAway {
        last_stream_id: u32,
        error_code: u32,
        timing: Timing,
    },
    /// SETTINGS sent by this direction; they govern the *other* direction (pass them to its
    /// decoder with [`H2Decoder::apply_peer_settings`](super::H2Decoder::apply_peer_settings);
    /// [`H2Connection`](super::H2Connection) does it).
    Settings {
        ack: bool,
        header_table_size: Option<u32>,
        max_frame_size: Option<u32>,
        timing: Timing,
    },
    /// The direction lost frame sync; in-flight streams of this direction lost data.
    Desync {
        reason: &'static str,
        at_ns: u64,
    },
    /// Frame sync regained at the start of a segment.
    Resync {
        at_ns: u64,
    },
}

impl H2Event {
    pub fn stream_id(&self) -> Option<u32> {
        match self {
            H2Event::Headers { stream_id, .. }
            | H2Event::HeadersUnknown { stream_id, .. }
            | H2Event::Data { stream_id, .. }
            | H2Event::RstStream { stream_id, .. } => Some(*stream_id),
            _ => None,
        }
    }

    /// For a [`H2Event::Headers`]: look a field up, never guessing (see [`Lookup`]).
    pub fn header(&self, name: &str) -> Option<Lookup<'_>> {
        match self {
            H2Event::Headers { fields, unresolved, .. } => Some(lookup(fields, *unresolved, name)),
            _ => None,
        }
    }
}

/// What a decoder appends its events to.
pub(super) type Out = Vec<H2Event>;

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Stats {
    pub frames: u64,
    pub desyncs: u64,
    pub resyncs: u64,
    /// Bytes not decoded because the direction was out of sync.
    pub bytes_unsynced: u64,
    /// Payload bytes skipped because they were not captured.
    pub bytes_uncaptured: u64,
    pub headers_unknown: u64,
}
