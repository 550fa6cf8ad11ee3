//! Fuzz the partial-knowledge HPACK decoder with sequences of header blocks: never a panic, only
//! allow-listed names out.
//!
//! Input layout: byte 0 selects fresh/unknown table and a SETTINGS hint; then blocks, each
//! `[len]` followed by `len` bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::internals::{ALLOWED_NAMES, HpackDecoder, Lookup};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else { return };
    let mut d = if ctl & 1 == 0 { HpackDecoder::new_unknown() } else { HpackDecoder::new_fresh() };
    if ctl & 2 != 0 {
        d.set_settings_table_size(u32::from(ctl) << 8);
    }
    while let [len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (block, next) = tail.split_at(n);
        rest = next;
        if let Ok(b) = d.decode_block(block) {
            for (name, _) in &b.fields {
                assert!(ALLOWED_NAMES.contains(name));
            }
            assert!(b.unresolved.maybe_pseudo <= b.unresolved.total);
            if !b.unresolved.any() {
                for name in ALLOWED_NAMES {
                    assert_ne!(b.get(name), Lookup::Unknown);
                }
            }
        }
        if len & 0x80 != 0 && ctl & 4 != 0 {
            d.block_lost();
        }
    }
    let _ = d.stats();
    let _ = d.is_fully_known();
});
