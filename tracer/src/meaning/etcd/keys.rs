//! etcd keys and ranges as span attributes show them.

/// Keys and ranges are rendered to at most this many bytes.
pub const KEY_MAX: usize = 256;

/// Render a key: valid UTF-8 kept, other bytes and control characters as `\xNN`, at most
/// [`KEY_MAX`] bytes (cut at a character/escape boundary).
pub fn printable_key(key: &[u8]) -> String {
    // Printable ASCII, as Kubernetes' keys are, is copied as is (the general path showed in
    // profiles).
    if key.iter().all(|b| (0x20..0x7f).contains(b)) {
        let kept = &key[..key.len().min(KEY_MAX)];
        return std::str::from_utf8(kept).map(crate::span::text_of).unwrap_or_default();
    }
    let mut out = crate::span::new_text(key.len().min(KEY_MAX));
    let push = |out: &mut String, piece: &str| -> bool {
        if out.len() + piece.len() > KEY_MAX {
            return false;
        }
        out.push_str(piece);
        true
    };
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            let ok = if c.is_control() && (c as u32) < 0x100 {
                push(&mut out, &format!("\\x{:02x}", c as u32))
            } else {
                let mut buf = [0u8; 4];
                push(&mut out, c.encode_utf8(&mut buf))
            };
            if !ok {
                return out;
            }
        }
        for b in chunk.invalid() {
            if !push(&mut out, &format!("\\x{b:02x}")) {
                return out;
            }
        }
    }
    out
}

/// The range end that selects every key with prefix `key` (etcd clientv3 `GetPrefixRangeEnd`):
/// the key with its last byte below 0xff incremented and the rest dropped; `\0` if none.
pub fn prefix_range_end(key: &[u8]) -> Vec<u8> {
    for i in (0..key.len()).rev() {
        if key[i] < 0xff {
            let mut end = key[..=i].to_vec();
            end[i] += 1;
            return end;
        }
    }
    vec![0]
}

/// `range_end` selects exactly the keys prefixed by `key`.
pub fn is_prefix_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && range_end != [0] && prefix_range_end(key) == range_end
}
