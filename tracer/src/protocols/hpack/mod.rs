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
//! Huffman decoding uses the `httlib-huffman` crate (table driven, 5 bits at a time: faster than
//! 4 bits on typical header values, see docs/benchmarks.md); it returns an error, never
//! panics, on invalid input.

use std::{collections::VecDeque, sync::Arc};

/// Encoding primitives for the tests' encoder.
#[cfg(test)]
pub(crate) mod encode;

/// Test helper shared by the protocol tests: an HPACK encoder that behaves like Go's.
#[cfg(test)]
pub(crate) mod testenc;

/// A kept field value. Values from the static table are borrowed, and a value the peer indexed
/// is shared with its dynamic-table entry: an indexed field, the common case once a connection is
/// warm (Go's encoder indexes nearly every field), costs no allocation.
pub use crate::span::AttrStr as FieldValue;

/// Header names whose values are kept. Everything else is dropped at decode time.
pub const ALLOWED_NAMES: [&str; 12] = [
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
    // Its ids become the span's trace and parent ids; never an attribute.
    "traceparent",
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
        // dangling address of a never-allocated Vec was slow enough to show in the agent's
        // profile under etcd load.
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

#[cfg(test)]
mod tests;
