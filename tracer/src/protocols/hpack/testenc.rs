use super::{STATIC_TABLE, encode};
use std::collections::VecDeque;

fn find_static(name: &str, value: &str) -> (Option<usize>, Option<usize>) {
    let full = STATIC_TABLE.iter().position(|&(n, v)| n == name && v == value).map(|i| i + 1);
    let name_only = STATIC_TABLE.iter().position(|&(n, _)| n == name).map(|i| i + 1);
    (full, name_only)
}

/// A Go-like HPACK encoder (golang.org/x/net/http2/hpack): an exact match is sent indexed;
/// otherwise a literal with incremental indexing (indexed name if the name is known), with
/// Huffman when it is shorter; sensitive fields are "never indexed". It keeps its own table.
pub(crate) struct GoLikeEncoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max: usize,
    pending_update: Option<usize>,
}

impl GoLikeEncoder {
    pub(crate) fn new() -> Self {
        GoLikeEncoder { table: VecDeque::new(), size: 0, max: 4096, pending_update: None }
    }
    pub(crate) fn set_max(&mut self, m: usize) {
        self.max = m;
        self.pending_update = Some(m);
        self.evict(0);
    }
    fn evict(&mut self, incoming: usize) {
        while self.size + incoming > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }
    fn str(out: &mut Vec<u8>, s: &str) {
        let mut h = Vec::new();
        httlib_huffman::encode(s.as_bytes(), &mut h).unwrap();
        if h.len() < s.len() { encode::huffman_string(out, s.as_bytes()) } else { encode::string(out, s.as_bytes()) }
    }
    pub(crate) fn encode(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(m) = self.pending_update.take() {
            encode::int(&mut out, m as u64, 5, 0x20);
        }
        for &(n, v) in fields {
            let sensitive = n == "authorization" || n == "cookie";
            let (sfull, sname) = find_static(n, v);
            let dfull = self.table.iter().position(|(tn, tv)| tn == n && tv == v).map(|i| i + 62);
            let dname = self.table.iter().position(|(tn, _)| tn == n).map(|i| i + 62);
            if let Some(i) = sfull.or(dfull).filter(|_| !sensitive) {
                encode::int(&mut out, i as u64, 7, 0x80);
                continue;
            }
            let name_idx = sname.or(dname);
            let size = n.len() + v.len() + 32;
            let indexing = !sensitive && size <= self.max;
            let (bits, first) = if indexing { (6, 0x40) } else { (4, 0x10) };
            match name_idx {
                Some(i) => encode::int(&mut out, i as u64, bits, first),
                None => {
                    encode::int(&mut out, 0, bits, first);
                    Self::str(&mut out, n);
                }
            }
            Self::str(&mut out, v);
            if indexing {
                self.evict(size);
                self.table.push_front((n.to_owned(), v.to_owned()));
                self.size += size;
            }
        }
        out
    }
}
