//! HTTP/2 framing (RFC 9113) for one direction of one connection, as a passive observer.
//!
//! [`H2Decoder`] consumes [`Segment`](crate::stream::Segment)s of one direction and emits
//! [`H2Event`]s: decoded header blocks (allow-listed fields only, see [`super::hpack`]), DATA frame
//! summaries with a bounded prefix of their payload, RST_STREAM, GOAWAY and SETTINGS.
//!
//! Robustness rules:
//! * Frames may be split across segments at any byte, many frames may share a segment, and a
//!   frame's payload may be partly uncaptured: payload bytes are skipped by count.
//! * A frame *header* that is not captured, or that is invalid, desynchronises the direction
//!   ([`H2Event::Desync`]). The decoder then only resynchronises at the start of a later segment
//!   whose first 9 bytes form a plausible frame header and whose next frame header, if captured,
//!   is plausible too ([`H2Event::Resync`]). Every header block lost on the way resets the HPACK
//!   table to unknown, so no field is ever decoded against a wrong table.
//! * The decoder may start mid-connection ([`H2Decoder::new`]): it syncs like after a desync, and
//!   learns the HPACK table as it goes. A client direction starting with the connection preface is
//!   recognised as a connection start.

mod connection;
mod decoder;
mod event;
mod frame;

pub use connection::H2Connection;
pub use decoder::{DATA_CAPTURE_LIMIT, H2Decoder};
pub use event::H2Event;
#[cfg(test)]
pub use frame::{FrameHeader, PREFACE, flags, frame_type, settings_id};

/// Build frames; used by tests and fuzz targets.
pub mod build;

#[cfg(test)]
mod tests;
