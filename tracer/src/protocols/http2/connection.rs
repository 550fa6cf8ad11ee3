//! Both directions of one connection.

use super::decoder::H2Decoder;
use super::event::{H2Event, Out};
use crate::stream::{Role, Segment};

/// Both directions of one connection, with SETTINGS routed to the other direction.
#[derive(Debug)]
pub struct H2Connection {
    pub client: H2Decoder,
    pub server: H2Decoder,
}

impl Default for H2Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl H2Connection {
    /// Attached at an unknown point of the connection.
    pub fn new() -> Self {
        H2Connection { client: H2Decoder::new(Role::Client), server: H2Decoder::new(Role::Server) }
    }

    /// Observed from the connection's first byte.
    pub fn new_fresh() -> Self {
        H2Connection { client: H2Decoder::new_fresh(Role::Client), server: H2Decoder::new_fresh(Role::Server) }
    }

    /// Feed a segment sent by `from`.
    pub fn feed(&mut self, from: Role, seg: &Segment, out: &mut Out) {
        let first = out.len();
        let (me, other) = match from {
            Role::Client => (&mut self.client, &mut self.server),
            Role::Server => (&mut self.server, &mut self.client),
        };
        me.feed(seg, out);
        if from == Role::Client && me.saw_preface() {
            // The client's first bytes were seen: the server's will be too.
            other.assume_connection_start();
        }
        for ev in &out[first..] {
            if let H2Event::Settings { ack: false, header_table_size, max_frame_size, .. } = ev {
                other.apply_peer_settings(*header_table_size, *max_frame_size);
            }
        }
    }
}
