/// RFC 7541 5.1 integer; `first_bits` are the representation bits above the prefix.
pub fn int(out: &mut Vec<u8>, value: u64, prefix_bits: u8, first_bits: u8) {
    let max = (1u64 << prefix_bits) - 1;
    if value < max {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Raw (non-Huffman) string literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    int(out, s.len() as u64, 7, 0);
    out.extend_from_slice(s);
}

/// Huffman-coded string literal.
pub fn huffman_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut enc = Vec::new();
    // Encoding arbitrary bytes cannot fail: every octet has a code.
    if httlib_huffman::encode(s, &mut enc).is_err() {
        string(out, s);
        return;
    }
    int(out, enc.len() as u64, 7, 0x80);
    out.extend_from_slice(&enc);
}
