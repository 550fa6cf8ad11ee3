#![no_main]
//! HTTP/1.1 decoding of arbitrary bytes split at arbitrary points, with uncaptured gaps.
use libfuzzer_sys::fuzz_target;
use tracer::internals::{Http1Decoder, MessageKind, Segment};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let kind = if ctl & 1 == 0 { MessageKind::Request } else { MessageKind::Response };
    let mut dec = Http1Decoder::new(kind);
    let mut out = Vec::new();
    // Split points and gaps come from the input itself so the fuzzer explores them.
    let step = usize::from(ctl >> 1).max(1);
    for (i, piece) in rest.chunks(step).enumerate() {
        let gap = if i % 3 == 2 { u64::from(piece.first().copied().unwrap_or(0)) } else { 0 };
        dec.feed(
            &Segment { data: piece, uncaptured_after: gap, enter_ns: i as u64, exit_ns: i as u64 + 1, goroutine: 0 },
            &mut out,
        );
        out.clear();
    }
});
