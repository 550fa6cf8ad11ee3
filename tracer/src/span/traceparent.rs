//! The caller's span context, from an incoming W3C `traceparent` header
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>).

/// Where a server span's caller says the request comes from: the span joins the caller's trace
/// as a child of the caller's span. Never exported as an attribute: its ids become the span's
/// `trace_id` and `parent_span_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's `sampled` flag: it recorded (or may have recorded) its side of the trace.
    pub sampled: bool,
}

/// The length of a version 00 value, and the least of any later version's.
const LEN_V00: usize = 55;

impl RemoteParent {
    /// Parses a `traceparent` field value, strictly as the specification says: lowercase hex only,
    /// `ff` is no version, all-zero ids are invalid, a version 00 value is exactly 55 characters.
    /// A later version is read for its first four fields, which it must keep as they are, when the
    /// value is at least 55 characters and a dash or its end follows the flags; what follows is not
    /// looked at. Anything else is `None`: the request starts a trace of its own.
    pub fn from_traceparent(value: &[u8]) -> Option<Self> {
        let v = value.trim_ascii();
        let version = hex_byte(v.get(..2)?)?;
        let fits = match version {
            0xff => false,
            0 => v.len() == LEN_V00,
            _ => v.len() == LEN_V00 || v.get(LEN_V00) == Some(&b'-'),
        };
        if !fits || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let trace_id: [u8; 16] = hex_array(&v[3..35])?;
        let span_id: [u8; 8] = hex_array(&v[36..52])?;
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(RemoteParent { trace_id, span_id, sampled: flags & 1 == 1 })
    }
}

fn hex_array<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    (digits.len() == 2 * N).then_some(out)
}

/// Two lowercase hex digits (the specification's HEXDIGLC: uppercase is invalid).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn parse(s: &str) -> Option<RemoteParent> {
        RemoteParent::from_traceparent(s.as_bytes())
    }

    #[test]
    fn version_00_values_of_the_specification() {
        let p = parse(&format!("00-{TRACE}-{SPAN}-01")).unwrap();
        assert_eq!(
            p.trace_id,
            [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36]
        );
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(p.sampled);
        assert!(!parse(&format!("00-{TRACE}-{SPAN}-00")).unwrap().sampled);
        // Flags are a bit field: only the lowest bit says sampled.
        assert!(parse(&format!("00-{TRACE}-{SPAN}-09")).unwrap().sampled);
        assert!(!parse(&format!("00-{TRACE}-{SPAN}-02")).unwrap().sampled);
        // Optional whitespace around a field value is not part of it.
        assert!(parse(&format!(" 00-{TRACE}-{SPAN}-01\t")).is_some());
    }

    #[test]
    fn invalid_values_are_ignored() {
        let zeros_trace = "0".repeat(32);
        let zeros_span = "0".repeat(16);
        for bad in [
            String::new(),
            "00".into(),
            format!("00-{zeros_trace}-{SPAN}-01"),
            format!("00-{TRACE}-{zeros_span}-01"),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-{}-01", SPAN.to_uppercase()),
            format!("00-{TRACE}-{SPAN}-0A"),
            format!("0A-{TRACE}-{SPAN}-01"),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00-{TRACE}-{SPAN}-1"),
            format!("00-{}-{SPAN}-01", &TRACE[1..]),
            format!("00-{TRACE}0-{}-01", &SPAN[1..]),
            format!("00_{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}_{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}_01"),
            format!("00-{}g-{SPAN}-01", &TRACE[1..]),
            format!("00-{TRACE}-{SPAN}-01, 00-{TRACE}-{SPAN}-01"),
            format!("0-{TRACE}-{SPAN}-01"),
            format!("000-{TRACE}-{SPAN}-01"),
        ] {
            assert_eq!(parse(&bad), None, "{bad:?}");
        }
        assert_eq!(RemoteParent::from_traceparent(&[0xff; 55]), None);
    }

    /// A later version keeps the fields of version 00 where they are, and may add more after a
    /// dash; those are not looked at.
    #[test]
    fn later_versions_are_read_for_the_fields_of_version_00() {
        let p = parse(&format!("cc-{TRACE}-{SPAN}-01-what-the-future-holds")).unwrap();
        assert!(p.sampled && p.span_id[7] == 0xb7);
        assert!(parse(&format!("01-{TRACE}-{SPAN}-00")).is_some_and(|p| !p.sampled));
        assert_eq!(parse(&format!("cc-{TRACE}-{SPAN}-01x")), None, "the flags end with a dash or the value");
        assert_eq!(parse(&format!("cc-{TRACE}-{SPAN}-0")), None, "shorter than 55");
        assert_eq!(parse(&format!("cc-{}-{SPAN}-01", "0".repeat(32))), None);
    }
}
