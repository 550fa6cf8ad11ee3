//! HPACK (RFC 7541) header-block decoding for a passive observer that may attach mid-connection.
//!
//! No HPACK crate fits a tracer: they all assume they saw the connection from its first byte and
//! fail (or worse, guess) on a reference into a dynamic table they never saw filled. This decoder
//! models the peer's dynamic table as *partially known*:
//!
//! * Every literal with incremental indexing seen since attach is inserted at the front of a
//!   "learned" list. The i-th newest entry of the real table is always the i-th most recent
//!   insertion (evictions only ever drop the oldest entries), so a reference to dynamic index
//!   `i <= learned.len()` is resolved correctly whatever the table size is, provided that no header
//!   block was missed since attach. A valid encoder never references an evicted entry, so entries
//!   we keep although the real table already evicted them are harmless.
//! * A reference beyond what was learned is *unresolved*: the field's name is not known, so the
//!   caller is told how many fields of the block were unresolved and never gets a guessed name.
//! * The table becomes *fully known* when no entry from before attach can still be in it: on a
//!   size update to 0, on an entry larger than a known table size, or once the bytes inserted since
//!   attach plus the smallest possible entry (32 bytes) exceed a table size learned from a size
//!   update. Only then is a reference beyond the learned entries treated as corruption.
//! * Any lost block (uncaptured bytes, corruption, desync) makes the table unknown again: the
//!   caller must call [`HpackDecoder::reset_unknown`], and a block that fails to decode does it
//!   itself.
//!
//! Only header fields on a small allow-list are kept (see [`ALLOWED_NAMES`]); the values of all
//! other fields, e.g. `authorization` or `cookie`, are never stored: they are decoded into a
//! scratch buffer only to learn their length, and the buffer is wiped right after.
//!
//! Huffman decoding uses the `httlib-huffman` crate (table driven, 5 bits at a time: 23 % faster
//! than 4 bits on typical header values, see docs/benchmarks.md); it returns an error, never
//! panics, on invalid input.

use std::{collections::VecDeque, sync::Arc};

/// A kept field value. Values from the static table are borrowed, and a value the peer indexed
/// is shared with its dynamic-table entry: an indexed field, the common case once a connection is
/// warm (Go's encoder indexes nearly every field), costs no allocation.
pub use crate::span::AttrStr as FieldValue;

/// Header names whose values are kept. Everything else is dropped at decode time.
pub const ALLOWED_NAMES: [&str; 11] = [
    ":method",
    ":path",
    ":status",
    ":authority",
    ":scheme",
    "content-type",
    "user-agent",
    "grpc-status",
    "grpc-message",
    "content-length",
    "te",
];

/// Default SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// Upper bound on how many bytes (RFC 7541 entry sizes) of learned entries are kept per decoder.
pub const MAX_TRACKED_TABLE_SIZE: usize = 64 * 1024;
/// Table sizes above this in a size update are treated as corruption.
const MAX_SANE_TABLE_SIZE: u64 = 1 << 24;
/// Per-entry overhead defined by RFC 7541 section 4.1; also the smallest possible entry size.
const ENTRY_OVERHEAD: usize = 32;

/// The static table, RFC 7541 Appendix A (index 1 is element 0).
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Why a header block could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// The block ended in the middle of a representation.
    Truncated,
    /// An integer used more continuation bytes or a larger value than any sane encoder would.
    IntegerOverflow,
    /// Index 0, or a static index beyond the table, or a dynamic index beyond a fully known table.
    InvalidIndex,
    /// The Huffman-coded string was invalid.
    Huffman,
    /// A dynamic table size update after the first header field, or an absurd size.
    InvalidSizeUpdate,
    /// A field name that is not a valid lower-case HTTP/2 name.
    InvalidName,
}

impl HpackError {
    pub fn as_str(self) -> &'static str {
        match self {
            HpackError::Truncated => "hpack: truncated block",
            HpackError::IntegerOverflow => "hpack: integer overflow",
            HpackError::InvalidIndex => "hpack: invalid index",
            HpackError::Huffman => "hpack: invalid huffman string",
            HpackError::InvalidSizeUpdate => "hpack: invalid table size update",
            HpackError::InvalidName => "hpack: invalid header name",
        }
    }
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for HpackError {}

/// How many fields of a header block could not be resolved (reference into the unknown part of
/// the dynamic table, or to an entry whose name was itself unresolved).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unresolved {
    /// All unresolved fields.
    pub total: u16,
    /// Unresolved fields that came before the first resolved regular (non-pseudo) field: only
    /// these can be pseudo-header fields, since RFC 9113 8.3 puts pseudo-headers first.
    pub maybe_pseudo: u16,
}

impl Unresolved {
    pub fn any(self) -> bool {
        self.total > 0
    }
}

/// The allow-listed fields of one header block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedBlock {
    /// Allow-listed fields in block order; names are from [`ALLOWED_NAMES`].
    pub fields: Vec<(&'static str, FieldValue)>,
    /// Fields whose name could not be resolved. Any allow-listed field missing from `fields` may
    /// have been among them: use [`DecodedBlock::get`], which accounts for it.
    pub unresolved: Unresolved,
}

/// Result of looking a name up in a decoded block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a str),
    /// Not in the block, and no unresolved field can have this name: the field is really absent.
    Absent,
    /// Not among the resolved fields, but an unresolved field may have this name.
    Unknown,
}

impl<'a> Lookup<'a> {
    pub fn found(self) -> Option<&'a str> {
        match self {
            Lookup::Found(v) => Some(v),
            _ => None,
        }
    }
}

/// Look a field up in a field list of a block with `unresolved` fields. Never guesses: a field
/// that is missing while an unresolved field could carry its name is [`Lookup::Unknown`].
pub fn lookup<'a>(fields: &'a [(&'static str, FieldValue)], unresolved: Unresolved, name: &str) -> Lookup<'a> {
    match fields.iter().find(|(n, _)| *n == name) {
        Some((_, v)) => Lookup::Found(v),
        None => {
            let could = if name.starts_with(':') { unresolved.maybe_pseudo } else { unresolved.total };
            if could > 0 { Lookup::Unknown } else { Lookup::Absent }
        }
    }
}

impl DecodedBlock {
    pub fn get(&self, name: &str) -> Lookup<'_> {
        lookup(&self.fields, self.unresolved, name)
    }
}

/// Counters of one decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HpackStats {
    /// Blocks decoded with every field resolved.
    pub blocks_resolved: u64,
    /// Blocks decoded with at least one unresolved field.
    pub blocks_partial: u64,
    /// Of `blocks_partial`, those where every pseudo-header field was still resolved.
    pub blocks_partial_pseudo_resolved: u64,
    /// Blocks that failed to decode (corrupt) or were lost by the caller.
    pub blocks_failed: u64,
    /// Fields that could not be resolved.
    pub fields_unresolved: u64,
    /// Fields resolved through the learned part of the dynamic table.
    pub dynamic_hits: u64,
    /// Times the table became unknown again (lost or corrupt block).
    pub resets: u64,
}

/// Class of a header name: one of the allow-list (index into [`ALLOWED_NAMES`]) or anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameClass {
    Allowed(u8),
    Other,
    OtherPseudo,
}

impl NameClass {
    fn is_pseudo(self) -> bool {
        match self {
            NameClass::Allowed(k) => ALLOWED_NAMES[k as usize].starts_with(':'),
            NameClass::Other => false,
            NameClass::OtherPseudo => true,
        }
    }
}

fn classify(name: &[u8]) -> NameClass {
    match ALLOWED_NAMES.iter().position(|n| n.as_bytes() == name) {
        Some(i) => NameClass::Allowed(i as u8),
        None if name.first() == Some(&b':') => NameClass::OtherPseudo,
        None => NameClass::Other,
    }
}

/// Appends one field's outcome to a block.
struct BlockBuilder {
    out: DecodedBlock,
    seen_regular: bool,
}

impl BlockBuilder {
    /// `value` is only called for a kept field.
    fn push(&mut self, name: Option<NameClass>, value: impl FnOnce() -> Option<FieldValue>) {
        match name {
            Some(class) => {
                if !class.is_pseudo() {
                    self.seen_regular = true;
                }
                if let NameClass::Allowed(k) = class
                    && let Some(v) = value()
                {
                    self.out.fields.push((ALLOWED_NAMES[k as usize], v));
                }
            }
            None => {
                let u = &mut self.out.unresolved;
                u.total = u.total.saturating_add(1);
                if !self.seen_regular {
                    u.maybe_pseudo = u.maybe_pseudo.saturating_add(1);
                }
            }
        }
    }
}

/// One learned dynamic-table entry. The value is only stored for allow-listed names.
#[derive(Clone, Debug)]
struct Entry {
    /// `None`: the name came from an unresolved reference.
    name: Option<NameClass>,
    value: Option<Arc<str>>,
    /// Length of the name, when known (always, unless `name` is `None`).
    name_len: Option<usize>,
    /// RFC 7541 size; a lower bound when `name_len` is unknown.
    size: usize,
}

/// What a name or a whole field resolved to.
#[derive(Clone, Copy, Debug)]
enum Resolved<'t> {
    Static(usize),
    Dynamic(&'t Entry),
    Unknown,
}

/// Partial-knowledge HPACK decoder for one direction of one connection.
#[derive(Debug)]
pub struct HpackDecoder {
    /// Entries inserted since attach (or since the last reset), newest first.
    learned: VecDeque<Entry>,
    /// Sum of `learned` sizes (lower bounds).
    learned_bytes: usize,
    /// Sum of the (lower-bound) sizes of all insertions since attach, saturating.
    inserted_since_attach: usize,
    /// The encoder's current maximum table size, when known for sure (connection start, or a
    /// size update seen since attach).
    exact_max: Option<usize>,
    /// SETTINGS_HEADER_TABLE_SIZE announced by the peer that decodes this direction, if seen.
    settings_hint: Option<usize>,
    /// No entry from before attach can be in the table any more.
    fully_known: bool,
    stats: HpackStats,
    /// Wiped after each use; holds a value only while its length is computed.
    scratch: Vec<u8>,
}

impl Default for HpackDecoder {
    fn default() -> Self {
        Self::new_unknown()
    }
}

impl HpackDecoder {
    /// A decoder attached mid-connection: the dynamic table is unknown.
    pub fn new_unknown() -> Self {
        HpackDecoder {
            learned: VecDeque::new(),
            learned_bytes: 0,
            inserted_since_attach: 0,
            exact_max: None,
            settings_hint: None,
            fully_known: false,
            stats: HpackStats::default(),
            scratch: Vec::new(),
        }
    }

    /// A decoder that sees the connection from its start: the table is empty, 4096 bytes.
    pub fn new_fresh() -> Self {
        let mut d = Self::new_unknown();
        d.exact_max = Some(DEFAULT_TABLE_SIZE);
        d.fully_known = true;
        d
    }

    /// Forget the dynamic table: a header block was lost (or we could not decode it).
    pub fn reset_unknown(&mut self) {
        self.learned.clear();
        self.learned_bytes = 0;
        self.inserted_since_attach = 0;
        self.exact_max = None;
        self.fully_known = false;
        self.stats.resets += 1;
    }

    /// Count a block that the caller could not hand over (lost bytes) and forget the table.
    pub fn block_lost(&mut self) {
        self.stats.blocks_failed += 1;
        self.reset_unknown();
    }

    /// The peer decoding this direction announced SETTINGS_HEADER_TABLE_SIZE = `size`. It bounds
    /// what the encoder may use; the encoder confirms with a size update when it shrinks.
    pub fn set_settings_table_size(&mut self, size: u32) {
        self.settings_hint = Some(size as usize);
    }

    /// True when every entry of the peer's table is known.
    pub fn is_fully_known(&self) -> bool {
        self.fully_known
    }

    /// Number of dynamic-table entries currently resolvable.
    pub fn learned_entries(&self) -> usize {
        self.learned.len()
    }

    pub fn stats(&self) -> HpackStats {
        self.stats
    }

    /// How many bytes of learned entries to keep.
    fn keep_cap(&self) -> usize {
        match self.exact_max {
            Some(m) => m.min(MAX_TRACKED_TABLE_SIZE),
            None => self.settings_hint.unwrap_or(DEFAULT_TABLE_SIZE).clamp(DEFAULT_TABLE_SIZE, MAX_TRACKED_TABLE_SIZE),
        }
    }

    /// Drop the oldest learned entries beyond `cap` bytes. Dropping an entry that the real table
    /// still holds only makes it unresolvable; keeping one the real table evicted is harmless.
    fn trim(&mut self, cap: usize) {
        while self.learned_bytes > cap {
            match self.learned.pop_back() {
                Some(e) => self.learned_bytes -= e.size,
                None => {
                    self.learned_bytes = 0;
                    break;
                }
            }
        }
    }

    fn clear_table_known_empty(&mut self) {
        self.learned.clear();
        self.learned_bytes = 0;
        self.fully_known = true;
    }

    fn update_fully_known(&mut self) {
        if self.fully_known {
            return;
        }
        if let Some(m) = self.exact_max {
            // A pre-attach entry still present would imply that every entry inserted since
            // attach is present too, plus at least 32 bytes: impossible beyond `m`.
            if self.inserted_since_attach.saturating_add(ENTRY_OVERHEAD) > m {
                self.fully_known = true;
            }
        }
    }

    fn apply_size_update(&mut self, new_max: u64) -> Result<(), HpackError> {
        if new_max > MAX_SANE_TABLE_SIZE {
            return Err(HpackError::InvalidSizeUpdate);
        }
        let m = new_max as usize;
        self.exact_max = Some(m);
        if m == 0 {
            self.clear_table_known_empty();
        } else {
            self.trim(self.keep_cap());
            self.update_fully_known();
        }
        Ok(())
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size;
        self.inserted_since_attach = self.inserted_since_attach.saturating_add(size);
        if let Some(m) = self.exact_max
            && entry.name_len.is_some()
            && size > m
        {
            // RFC 7541 4.4: an entry larger than the table empties it and is not inserted.
            self.clear_table_known_empty();
            return;
        }
        self.learned.push_front(entry);
        self.learned_bytes += size;
        self.trim(self.keep_cap());
        self.update_fully_known();
    }

    fn resolve(&self, index: u64) -> Result<Resolved<'_>, HpackError> {
        match index {
            0 => Err(HpackError::InvalidIndex),
            1..=61 => Ok(Resolved::Static(index as usize - 1)),
            _ => {
                let i = (index - 62) as usize;
                match self.learned.get(i) {
                    Some(e) => Ok(Resolved::Dynamic(e)),
                    None if self.fully_known => Err(HpackError::InvalidIndex),
                    None => Ok(Resolved::Unknown),
                }
            }
        }
    }

    /// Decode one complete header block. On error the table is reset to unknown (the block's
    /// insertions cannot be trusted) and the block counts as failed.
    pub fn decode_block(&mut self, block: &[u8]) -> Result<DecodedBlock, HpackError> {
        match self.decode_inner(block) {
            Ok(b) => {
                if b.unresolved.any() {
                    self.stats.blocks_partial += 1;
                    if b.unresolved.maybe_pseudo == 0 {
                        self.stats.blocks_partial_pseudo_resolved += 1;
                    }
                    self.stats.fields_unresolved += u64::from(b.unresolved.total);
                } else {
                    self.stats.blocks_resolved += 1;
                }
                Ok(b)
            }
            Err(e) => {
                self.wipe_scratch();
                self.block_lost();
                Err(e)
            }
        }
    }

    fn wipe_scratch(&mut self) {
        // Not on an empty buffer: glibc's memset of 0 bytes is a masked AVX-512 store, which at the
        // dangling address of a never-allocated Vec was slow enough to be a tenth of the agent's
        // CPU under etcd load.
        if !self.scratch.is_empty() {
            self.scratch.fill(0);
            std::hint::black_box(&mut self.scratch);
            self.scratch.clear();
        }
    }

    fn decode_inner(&mut self, block: &[u8]) -> Result<DecodedBlock, HpackError> {
        // Room for every allow-listed name once: growing the vector field by field cost almost
        // as much as copying the values into it.
        let out = DecodedBlock { fields: Vec::with_capacity(ALLOWED_NAMES.len()), ..DecodedBlock::default() };
        let mut bb = BlockBuilder { out, seen_regular: false };
        let mut pos = 0usize;
        let mut seen_field = false;
        let mut hits = 0u64;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed header field.
                let idx = decode_int(block, &mut pos, 7)?;
                seen_field = true;
                match self.resolve(idx)? {
                    Resolved::Static(i) => {
                        let (n, v) = STATIC_TABLE[i];
                        bb.push(Some(classify(n.as_bytes())), || Some(FieldValue::Static(v)));
                    }
                    Resolved::Dynamic(e) => {
                        hits += 1;
                        bb.push(e.name, || e.value.as_ref().map(FieldValue::share));
                    }
                    Resolved::Unknown => bb.push(None, || None),
                }
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                if seen_field {
                    return Err(HpackError::InvalidSizeUpdate);
                }
                let v = decode_int(block, &mut pos, 5)?;
                self.apply_size_update(v)?;
            } else {
                // Literal: with incremental indexing (01), without indexing (0000), never indexed (0001).
                let (prefix, indexing) = if b & 0x40 != 0 { (6, true) } else { (4, false) };
                let name_idx = decode_int(block, &mut pos, prefix)?;
                seen_field = true;
                let (name, name_len): (Option<NameClass>, Option<usize>) = if name_idx == 0 {
                    let (huff, raw) = read_string(block, &mut pos)?;
                    let n = self.materialize(huff, raw)?;
                    if !valid_name(n) {
                        return Err(HpackError::InvalidName);
                    }
                    let r = (Some(classify(n)), Some(n.len()));
                    self.wipe_scratch();
                    r
                } else {
                    match self.resolve(name_idx)? {
                        Resolved::Static(i) => {
                            let n = STATIC_TABLE[i].0;
                            (Some(classify(n.as_bytes())), Some(n.len()))
                        }
                        Resolved::Dynamic(e) => {
                            hits += 1;
                            (e.name, e.name_len)
                        }
                        Resolved::Unknown => (None, None),
                    }
                };
                let (huff, raw) = read_string(block, &mut pos)?;
                let keep = matches!(name, Some(NameClass::Allowed(_)));
                let v = self.materialize(huff, raw)?;
                let value_len = v.len();
                // One allocation either way: an indexed value is shared by the field and its entry.
                let (field, value): (Option<FieldValue>, Option<Arc<str>>) = match (keep, indexing) {
                    (false, _) => (None, None),
                    (true, true) => {
                        let shared: Arc<str> = Arc::from(&*String::from_utf8_lossy(v));
                        (Some(FieldValue::share(&shared)), Some(shared))
                    }
                    (true, false) => (Some(FieldValue::Owned(String::from_utf8_lossy(v).into_owned())), None),
                };
                self.wipe_scratch();
                bb.push(name, || field);
                if indexing {
                    let size = name_len.unwrap_or(0) + value_len + ENTRY_OVERHEAD;
                    self.insert(Entry { name, value, name_len, size });
                }
            }
        }
        self.stats.dynamic_hits += hits;
        Ok(bb.out)
    }

    /// Decode a string literal into the scratch buffer (Huffman) or borrow it (raw).
    fn materialize<'s>(&'s mut self, huffman: bool, raw: &'s [u8]) -> Result<&'s [u8], HpackError> {
        if huffman {
            self.scratch.clear();
            httlib_huffman::decode(raw, &mut self.scratch, httlib_huffman::DecoderSpeed::FiveBits)
                .map_err(|_| HpackError::Huffman)?;
            Ok(&self.scratch)
        } else {
            Ok(raw)
        }
    }
}

/// HTTP/2 field names: non-empty, no upper-case, no controls/space/DEL (RFC 9113 8.2.1).
fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|&c| c > 0x20 && c != 0x7f && !c.is_ascii_uppercase())
}

/// RFC 7541 5.1 integer with an N-bit prefix. Bounded to values below 2^32.
pub fn decode_int(buf: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<u64, HpackError> {
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mask: u8 = ((1u16 << prefix_bits) - 1) as u8;
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// RFC 7541 5.2 string literal: returns (huffman flag, raw bytes).
fn read_string<'b>(buf: &'b [u8], pos: &mut usize) -> Result<(bool, &'b [u8]), HpackError> {
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)?;
    let huffman = first & 0x80 != 0;
    let len = decode_int(buf, pos, 7)? as usize;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = buf.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    Ok((huffman, raw))
}

/// Test and fuzz helpers: encoding primitives.
pub mod encode {
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
}

/// Test helper shared by the protocol tests: an HPACK encoder that behaves like Go's.
#[cfg(test)]
pub(crate) mod testenc {
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
            if h.len() < s.len() {
                encode::huffman_string(out, s.as_bytes())
            } else {
                encode::string(out, s.as_bytes())
            }
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
}

#[cfg(test)]
mod tests {
    use super::testenc::GoLikeEncoder;
    use super::*;

    fn get<'a>(b: &'a DecodedBlock, n: &str) -> Option<&'a str> {
        b.get(n).found()
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        // RFC 7541 C.3.1 .. C.3.3
        let mut d = HpackDecoder::new_fresh();
        let b1 = [
            0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c',
            b'o', b'm',
        ];
        let r = d.decode_block(&b1).unwrap();
        assert_eq!(
            r.fields,
            vec![
                (":method", FieldValue::Static("GET")),
                (":scheme", FieldValue::Static("http")),
                (":path", FieldValue::Static("/")),
                (":authority", FieldValue::Static("www.example.com")),
            ]
        );
        let b2 = [0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e'];
        let r = d.decode_block(&b2).unwrap();
        assert_eq!(get(&r, ":authority"), Some("www.example.com"));
        assert!(!r.unresolved.any());
        // cache-control is not allow-listed: dropped.
        assert_eq!(r.fields.len(), 4);
        let mut b3 = vec![0x82, 0x87, 0x85, 0xbf, 0x40, 0x0a];
        b3.extend_from_slice(b"custom-key");
        b3.push(0x0c);
        b3.extend_from_slice(b"custom-value");
        let r = d.decode_block(&b3).unwrap();
        assert_eq!(get(&r, ":scheme"), Some("https"));
        assert_eq!(get(&r, ":path"), Some("/index.html"));
        assert_eq!(get(&r, ":authority"), Some("www.example.com"));
        assert_eq!(d.learned_entries(), 3);
        assert!(d.is_fully_known());
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let mut d = HpackDecoder::new_fresh();
        let b1 = [0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
        let r = d.decode_block(&b1).unwrap();
        assert_eq!(get(&r, ":authority"), Some("www.example.com"));
        let b2 = [0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf];
        let r = d.decode_block(&b2).unwrap();
        assert_eq!(get(&r, ":authority"), Some("www.example.com"));
    }

    #[test]
    fn rfc7541_c6_responses_with_eviction() {
        // C.6: 256-byte table, Huffman, evictions.
        let mut d = HpackDecoder::new_fresh();
        // Size update to 256 first (the RFC example sets the table size out of band).
        let mut b1 = Vec::new();
        encode::int(&mut b1, 256, 5, 0x20);
        b1.extend_from_slice(&[
            0x48, 0x82, 0x64, 0x02, 0x58, 0x85, 0xae, 0xc3, 0x77, 0x1a, 0x4b, 0x61, 0x96, 0xd0, 0x7a, 0xbe, 0x94, 0x10,
            0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b, 0x81, 0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff, 0x6e,
            0x91, 0x9d, 0x29, 0xad, 0x17, 0x18, 0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae, 0x82, 0xae, 0x43, 0xd3,
        ]);
        let r = d.decode_block(&b1).unwrap();
        assert_eq!(get(&r, ":status"), Some("302"));
        assert_eq!(d.learned_entries(), 4);
        let b2 = [0x48, 0x83, 0x64, 0x0e, 0xff, 0xc1, 0xc0, 0xbf];
        let r = d.decode_block(&b2).unwrap();
        assert_eq!(get(&r, ":status"), Some("307"));
        assert!(!r.unresolved.any());
        assert_eq!(d.learned_entries(), 4);
        // A reference beyond a fully known table is corruption.
        assert_eq!(d.decode_block(&[0x80 | 70]), Err(HpackError::InvalidIndex));
        assert!(!d.is_fully_known());
    }

    #[test]
    fn sensitive_values_never_kept() {
        let mut d = HpackDecoder::new_fresh();
        let mut e = GoLikeEncoder::new();
        let blk = e.encode(&[
            (":method", "GET"),
            (":path", "/api"),
            ("authorization", "Bearer secret-token"),
            ("cookie", "session=abc"),
            ("x-custom", "hello"),
        ]);
        let r = d.decode_block(&blk).unwrap();
        assert_eq!(r.fields.len(), 2);
        assert!(d.scratch.is_empty());
        assert!(!format!("{:?}", d.learned).contains("hello"));
        let dump = format!("{r:?} {:?}", d.learned);
        assert!(!dump.contains("secret") && !dump.contains("session"));
        // x-custom got indexed; a later reference resolves to a non-allow-listed name: dropped, not unresolved.
        let blk = e.encode(&[(":method", "GET"), (":path", "/api"), ("x-custom", "hello")]);
        let r = d.decode_block(&blk).unwrap();
        assert!(!r.unresolved.any());
        assert_eq!(r.fields.len(), 2);
    }

    #[test]
    fn agrees_with_reference_decoder_from_start() {
        // Encode with the httlib-hpack encoder (Go-like flags) and compare against its decoder.
        use httlib_hpack::{Decoder, Encoder};
        let mut enc = Encoder::default();
        let mut refdec = Decoder::default();
        let mut d = HpackDecoder::new_fresh();
        let flags = Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE;
        for i in 0..300 {
            let path = format!("/api/v1/namespaces/ns{}/pods", i % 17);
            let ua = format!("kubelet/v1.{}", i % 3);
            let status = ["200", "201", "404", "500"][i % 4];
            let fields: Vec<(&str, String)> = vec![
                (":method", if i % 5 == 0 { "POST".into() } else { "GET".into() }),
                (":path", path.clone()),
                (":authority", "10.0.0.1:6443".into()),
                (":scheme", "https".into()),
                ("user-agent", ua),
                ("authorization", format!("Bearer tok{}", i % 7)),
                ("x-request-id", format!("id-{i}")),
                (":status", status.into()),
            ];
            let mut blk = Vec::new();
            for (n, v) in &fields {
                enc.encode((n.as_bytes().to_vec(), v.as_bytes().to_vec(), flags), &mut blk).unwrap();
            }
            let mut dst = Vec::new();
            let mut copy = blk.clone();
            refdec.decode(&mut copy, &mut dst).unwrap();
            let r = d.decode_block(&blk).unwrap();
            assert!(!r.unresolved.any());
            let expect: Vec<(&'static str, FieldValue)> = dst
                .iter()
                .filter_map(|(n, v, _)| {
                    ALLOWED_NAMES
                        .iter()
                        .find(|a| a.as_bytes() == n.as_slice())
                        .map(|a| (*a, FieldValue::Owned(String::from_utf8_lossy(v).into_owned())))
                })
                .collect();
            assert_eq!(r.fields, expect, "block {i}");
        }
        assert_eq!(d.stats().blocks_failed, 0);
    }

    /// A realistic gRPC client stream (as grpc-go sends to etcd): 20 distinct paths, user-agent,
    /// content-type, te, grpc-timeout that changes on every call, a per-request id.
    fn grpc_request(i: usize) -> Vec<(String, String)> {
        let methods = ["Range", "Put", "DeleteRange", "Txn", "Compact"];
        let services = ["etcdserverpb.KV", "etcdserverpb.Lease", "etcdserverpb.Watch", "etcdserverpb.Cluster"];
        let k = (i * 7 + i / 3) % 20;
        let path = format!("/{}/{}", services[k % 4], methods[k / 4]);
        vec![
            (":method".into(), "POST".into()),
            (":scheme".into(), "http".into()),
            (":path".into(), path),
            (":authority".into(), "127.0.0.1:2379".into()),
            ("content-type".into(), "application/grpc".into()),
            ("user-agent".into(), "grpc-go/1.72.0".into()),
            ("te".into(), "trailers".into()),
            ("grpc-timeout".into(), format!("{}u", 4_999_000 + (i * 7919) % 1000)),
            ("x-request-id".into(), format!("req-{}", i % 3)),
        ]
    }

    /// Warm-up after a mid-connection attach.
    #[derive(Debug, Default)]
    struct Warmup {
        /// Blocks after attach where `:method` or `:path` was unknown.
        path_unknown: usize,
        /// Index (after attach) of the last block where `:path` was unknown, +1.
        path_warmup: usize,
        /// Blocks after attach with any unresolved field (incl. non-allow-listed names).
        any_unresolved: usize,
        /// Blocks where an allow-listed field other than pseudo-headers was unknown.
        regular_unknown: usize,
        /// Index (after attach) of the last block where some allow-listed field that the block
        /// really carried was not found, +1.
        all_present_warmup: usize,
        /// Fields whose value differed from the truth (must stay 0).
        wrong: usize,
        /// Fields claimed absent that were present (must stay 0).
        wrong_absent: usize,
        fully_known_at: Option<usize>,
    }

    fn run_attach(attach_after: usize, total: usize, max: Option<usize>) -> Warmup {
        let mut e = GoLikeEncoder::new();
        let mut d = HpackDecoder::new_unknown();
        let mut w = Warmup::default();
        for i in 0..total {
            if i == attach_after
                && let Some(m) = max
            {
                // The peer lowered SETTINGS_HEADER_TABLE_SIZE: the next block starts with an update.
                e.set_max(m);
            }
            let req = grpc_request(i);
            let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let blk = e.encode(&refs);
            if i < attach_after {
                continue;
            }
            let n = i - attach_after;
            let r = d.decode_block(&blk).expect("valid block");
            for (name, v) in &r.fields {
                let truth = req.iter().find(|(tn, _)| tn == name).map(|(_, tv)| tv.as_str());
                if truth != Some(&**v) {
                    w.wrong += 1;
                }
            }
            for name in ALLOWED_NAMES {
                let present = req.iter().any(|(tn, _)| tn == name);
                match r.get(name) {
                    Lookup::Absent if present => w.wrong_absent += 1,
                    Lookup::Unknown if !name.starts_with(':') => w.regular_unknown += 1,
                    _ => {}
                }
                if present && r.get(name).found().is_none() {
                    w.all_present_warmup = n + 1;
                }
            }
            if r.get(":path").found().is_none() || r.get(":method").found().is_none() {
                w.path_unknown += 1;
                w.path_warmup = n + 1;
            }
            if r.unresolved.any() {
                w.any_unresolved += 1;
            }
            if d.is_fully_known() && w.fully_known_at.is_none() {
                w.fully_known_at = Some(n);
            }
        }
        w
    }

    #[test]
    fn mid_connection_attach_warmup() {
        for attach in [0usize, 1, 5, 20, 50, 100, 150] {
            let w = run_attach(attach, 200 + attach, None);
            eprintln!("attach after {attach:>3} requests, 200 decoded: {w:?}");
            assert_eq!((w.wrong, w.wrong_absent), (0, 0), "attach {attach}");
            // After one table cycle :method and :path are always known, and so is every
            // allow-listed field the client sends.
            assert!(w.path_warmup < 120, "attach {attach}: {w:?}");
            assert!(w.all_present_warmup < 120, "attach {attach}: {w:?}");
        }
        // Attached at the very start of the connection: nothing unknown.
        let w = run_attach(0, 200, None);
        assert_eq!((w.path_unknown, w.any_unresolved), (0, 0));
        // A size update seen after attach proves the table fully known once it cycled.
        let w = run_attach(10, 400, Some(2048));
        eprintln!("size update 2048 after attach: {w:?}");
        assert_eq!((w.wrong, w.wrong_absent), (0, 0));
        assert!(w.fully_known_at.is_some());
    }

    /// A Go gRPC server's responses never churn its table: after a mid-connection attach the
    /// entries it indexed before stay unknown. They must stay *unknown*, never guessed.
    #[test]
    fn frozen_server_table_stays_unknown_never_wrong() {
        let mut e = GoLikeEncoder::new();
        let headers = [(":status", "200"), ("content-type", "application/grpc")];
        let trailers = [("grpc-status", "0")];
        for _ in 0..3 {
            let _ = e.encode(&headers);
            let _ = e.encode(&trailers);
        }
        let mut d = HpackDecoder::new_unknown();
        for i in 0..100 {
            let h = d.decode_block(&e.encode(&headers)).unwrap();
            assert_eq!(h.get(":status"), Lookup::Found("200"));
            assert_eq!(h.get("content-type"), Lookup::Unknown);
            let err = i % 10 == 9;
            let t = if err {
                e.encode(&[("grpc-status", "14"), ("grpc-message", "etcdserver: leader changed")])
            } else {
                e.encode(&trailers)
            };
            let t = d.decode_block(&t).unwrap();
            // The name grpc-status always comes from the pre-attach entry (chain of name references).
            assert_eq!(t.get("grpc-status"), Lookup::Unknown);
            assert_ne!(t.get("grpc-message"), Lookup::Absent);
        }
    }

    #[test]
    fn fully_known_after_size_update_and_enough_insertions() {
        let mut e = GoLikeEncoder::new();
        let mut d = HpackDecoder::new_unknown();
        for i in 0..50 {
            let req = grpc_request(i);
            let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let _ = e.encode(&refs);
        }
        e.set_max(1024);
        let mut became_known = None;
        for i in 50..300 {
            let req = grpc_request(i);
            let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let blk = e.encode(&refs);
            let r = d.decode_block(&blk).unwrap();
            if d.is_fully_known() && became_known.is_none() {
                became_known = Some(i);
            }
            if let Some(k) = became_known
                && i > k + 40
            {
                // Structure fully known; pseudo-headers all resolved.
                assert_eq!(r.unresolved.maybe_pseudo, 0);
            }
        }
        assert!(became_known.is_some());
    }

    #[test]
    fn unknown_reference_is_unresolved_not_guessed() {
        let mut d = HpackDecoder::new_unknown();
        // Indexed 62 (unknown), then :method GET static, then literal-indexed with name ref 63 (unknown).
        let mut blk = vec![0x80 | 62, 0x82];
        encode::int(&mut blk, 63, 6, 0x40);
        encode::string(&mut blk, b"/secret/path");
        let r = d.decode_block(&blk).unwrap();
        assert_eq!(r.unresolved, Unresolved { total: 2, maybe_pseudo: 2 });
        assert_eq!(r.get(":method"), Lookup::Found("GET"));
        assert_eq!(r.get(":path"), Lookup::Unknown);
        // The inserted entry has an unknown name: referencing it stays unresolved, and its value
        // (possibly a secret) was not stored.
        let r = d.decode_block(&[0x80 | 62]).unwrap();
        assert_eq!(r.unresolved.total, 1);
        assert!(!format!("{:?}", d.learned).contains("secret"));
        let s = d.stats();
        assert_eq!((s.blocks_partial, s.blocks_resolved), (2, 0));
    }

    #[test]
    fn oversize_entry_clears_known_table() {
        let mut d = HpackDecoder::new_fresh();
        let mut blk = Vec::new();
        encode::int(&mut blk, 100, 5, 0x20);
        blk.push(0x40);
        encode::string(&mut blk, b"x-big");
        encode::string(&mut blk, &[b'a'; 80]);
        d.decode_block(&blk).unwrap();
        assert_eq!(d.learned_entries(), 0);
        assert!(d.is_fully_known());
    }

    #[test]
    fn size_update_zero_makes_table_known() {
        let mut d = HpackDecoder::new_unknown();
        let mut blk = Vec::new();
        encode::int(&mut blk, 0, 5, 0x20);
        encode::int(&mut blk, 4096, 5, 0x20);
        blk.push(0x82);
        d.decode_block(&blk).unwrap();
        assert!(d.is_fully_known());
        // Size update after a field is an error, and resets.
        let mut bad = vec![0x82];
        encode::int(&mut bad, 10, 5, 0x20);
        assert_eq!(d.decode_block(&bad), Err(HpackError::InvalidSizeUpdate));
        assert!(!d.is_fully_known());
    }

    #[test]
    fn integer_edge_cases() {
        for v in [0u64, 1, 30, 31, 127, 128, 1337, 65535, u32::MAX as u64] {
            for p in 4..=7u8 {
                let mut b = Vec::new();
                encode::int(&mut b, v, p, 0);
                let mut pos = 0;
                assert_eq!(decode_int(&b, &mut pos, p), Ok(v));
                assert_eq!(pos, b.len());
            }
        }
        let mut pos = 0;
        assert_eq!(
            decode_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut pos, 5),
            Err(HpackError::IntegerOverflow)
        );
        let mut pos = 0;
        assert_eq!(decode_int(&[0x1f, 0xff], &mut pos, 5), Err(HpackError::Truncated));
    }

    #[test]
    fn corrupt_blocks_error_and_reset() {
        let cases: [(&[u8], HpackError); 6] = [
            (&[0x80], HpackError::InvalidIndex),
            (&[0x80 | 0x7f, 0x10], HpackError::InvalidIndex),
            (&[0x40, 0x05, b'a'], HpackError::Truncated),
            (&[0x40, 0x81, 0xff, 0x00], HpackError::Huffman),
            (&[0x40, 0x01, b'A', 0x00], HpackError::InvalidName),
            (&[0x3f, 0xe1, 0xff, 0xff, 0x0f], HpackError::InvalidSizeUpdate),
        ];
        for (blk, err) in cases {
            let mut d = HpackDecoder::new_fresh();
            assert_eq!(d.decode_block(blk), Err(err), "{blk:?}");
            assert_eq!(d.stats().blocks_failed, 1);
            assert!(!d.is_fully_known());
        }
        // A static index beyond 61 in an unknown table is merely unresolved.
        let mut d = HpackDecoder::new_unknown();
        assert_eq!(d.decode_block(&[0x80 | 0x7f, 0x10]).unwrap().unresolved.total, 1);
    }

    #[test]
    fn no_panic_on_pseudo_random_blocks() {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut e = GoLikeEncoder::new();
        let mut valid = Vec::new();
        for i in 0..40 {
            let req = grpc_request(i);
            let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            valid.push(e.encode(&refs));
        }
        let mut d = HpackDecoder::new_unknown();
        for round in 0..20_000 {
            let mut blk = valid[round % valid.len()].clone();
            match next() % 4 {
                0 => blk = (0..next() % 64).map(|_| next() as u8).collect(),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        if !blk.is_empty() {
                            let i = next() as usize % blk.len();
                            blk[i] ^= 1 << (next() % 8);
                        }
                    }
                }
                2 => {
                    let cut = next() as usize % (blk.len() + 1);
                    blk.truncate(cut);
                }
                _ => {}
            }
            let _ = d.decode_block(&blk);
            if next() % 50 == 0 {
                d = if next() % 2 == 0 { HpackDecoder::new_fresh() } else { HpackDecoder::new_unknown() };
            }
        }
    }
}
