//! Fuzz the HTTP/2 direction decoder: arbitrary segment sequences (with uncaptured gaps) must never
//! panic, and what comes out must respect its bounds.
//!
//! Input layout: byte 0 selects role / fresh start / connection mode; then segments, each
//! `[len][uncaptured]` followed by `len` bytes (shortened at the end of the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::internals::{ALLOWED_NAMES, DATA_CAPTURE_LIMIT, H2Connection, H2Decoder, H2Event, Role, Segment};

fn check(out: &[H2Event]) {
    for ev in out {
        match ev {
            H2Event::Data { data, len, .. } => {
                assert!(data.len() <= DATA_CAPTURE_LIMIT);
                if let Some(l) = len {
                    assert!(data.len() as u64 <= u64::from(*l));
                }
            }
            H2Event::Headers { fields, .. } => {
                for (n, _) in fields {
                    assert!(ALLOWED_NAMES.contains(n));
                }
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else { return };
    let role = if ctl & 1 == 0 { Role::Client } else { Role::Server };
    let mut single = if ctl & 2 == 0 { H2Decoder::new(role) } else { H2Decoder::new_fresh(role) };
    let mut conn = H2Connection::new();
    let use_conn = ctl & 4 != 0;
    let mut out = Vec::new();
    let mut ts = 0u64;
    while let [len, unc, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        // Uncaptured gaps: mostly none, sometimes small, sometimes large.
        let uncaptured = match unc {
            0..=200 => 0,
            201..=250 => u64::from(*unc - 200),
            _ => u64::from(*unc) << 12,
        };
        ts += 10;
        let seg = Segment { data: bytes, uncaptured_after: uncaptured, enter_ns: ts, exit_ns: ts + 5, goroutine: 0 };
        if use_conn {
            let from = if len & 1 == 0 { Role::Client } else { Role::Server };
            conn.feed(from, &seg, &mut out);
        } else {
            single.feed(&seg, &mut out);
        }
        check(&out);
        out.clear();
    }
    let _ = single.stats();
    let _ = single.hpack_stats();
});
