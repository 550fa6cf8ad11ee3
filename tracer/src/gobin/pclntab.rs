//! Reader for the Go runtime's pc/line table (`.gopclntab`, `runtime.pcheader`).
//!
//! Only what is needed to map a function name to its code range. The table
//! survives stripping (the runtime itself needs it), which is why we use it
//! instead of `.symtab`. Layout reference: `runtime/symtab.go` (`pcHeader`,
//! `_func`) and `debug/gosym/pclntab.go`.
//!
//! Every read is bounds-checked and returns `None`/`Err` on garbage: input
//! comes from arbitrary files.

use super::GoBinError;

/// Go 1.16–1.17.
pub const MAGIC_GO116: u32 = 0xffff_fffa;
/// Go 1.18–1.19.
pub const MAGIC_GO118: u32 = 0xffff_fff0;
/// Go 1.20 and later.
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// Table format, from the magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PclnVersion {
    Go116,
    Go118,
    Go120,
}

/// Parsed and validated `pcHeader`. Offsets are relative to the table start.
#[derive(Clone, Debug)]
pub struct PclnTable {
    pub version: PclnVersion,
    /// Instruction size quantum (1 on x86).
    min_lc: u8,
    pub nfunc: usize,
    /// `textStart` as stored in the header (1.18+). 0 when not stored: newer Go
    /// writes 0 there, and PIE binaries may leave it to a dynamic relocation.
    pub header_text_start: u64,
    pub(crate) funcname: usize,
    pctab: usize,
    /// `pclnOffset`: start of the functab; `_func` offsets are relative to it.
    functab: usize,
}

/// Little-endian reads that fail instead of panicking.
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// NUL-terminated string starting at `off`.
fn cstr_at(b: &[u8], off: usize) -> Option<&[u8]> {
    let rest = b.get(off..)?;
    let len = rest.iter().position(|&c| c == 0)?;
    Some(&rest[..len])
}

fn corrupt(what: &str) -> GoBinError {
    GoBinError::Corrupt(format!("pclntab: {what}"))
}

impl PclnTable {
    /// Validate the header of a table that starts at `tab[0]`. `tab` may run
    /// past the table's end (when found by scanning a segment), never short.
    pub fn parse(tab: &[u8]) -> Result<PclnTable, GoBinError> {
        if tab.len() < 8 {
            return Err(corrupt("truncated header"));
        }
        let magic = u32_at(tab, 0).ok_or_else(|| corrupt("truncated header"))?;
        let version = match magic {
            MAGIC_GO116 => PclnVersion::Go116,
            MAGIC_GO118 => PclnVersion::Go118,
            MAGIC_GO120 => PclnVersion::Go120,
            0xffff_fffb => {
                return Err(GoBinError::Unsupported("pclntab of Go 1.2-1.15 (magic 0xfffffffb)".into()));
            }
            m => return Err(corrupt(&format!("unknown magic {m:#010x}"))),
        };
        // pad1, pad2 = 0; minLC in {1,2,4}; ptrSize (we only read 64-bit).
        let (min_lc, ptr_size) = (tab[6], tab[7]);
        if tab[4] != 0 || tab[5] != 0 || !matches!(min_lc, 1 | 2 | 4) {
            return Err(corrupt("bad header fields"));
        }
        if ptr_size != 8 {
            return Err(GoBinError::Unsupported(format!("pclntab pointer size {ptr_size}")));
        }
        let word =
            |i: usize| -> Result<u64, GoBinError> { u64_at(tab, 8 + 8 * i).ok_or_else(|| corrupt("truncated header")) };
        // 1.18 inserted textStart as word 2; the offsets shift by one.
        let (header_text_start, first_off) = match version {
            PclnVersion::Go116 => (0, 2),
            _ => (word(2)?, 3),
        };
        let off = |i: usize| -> Result<usize, GoBinError> {
            let v = usize::try_from(word(i)?).map_err(|_| corrupt("offset overflow"))?;
            if v >= tab.len() {
                return Err(corrupt("header offset past end of table"));
            }
            Ok(v)
        };
        let nfunc = usize::try_from(word(0)?).map_err(|_| corrupt("nfunc overflow"))?;
        let funcname = off(first_off)?;
        let pctab = off(first_off + 3)?;
        let functab = off(first_off + 4)?;
        let t = PclnTable { version, min_lc, nfunc, header_text_start, funcname, pctab, functab };
        // The functab holds nfunc (entry, funcoff) pairs plus an end sentinel.
        let size = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(t.field_size()))
            .and_then(|n| n.checked_add(functab));
        if nfunc == 0 || size.is_none_or(|end| end > tab.len()) {
            return Err(corrupt("functab does not fit in the table"));
        }
        Ok(t)
    }

    /// Whether entries are offsets from `runtime.text` (1.18+) rather than
    /// absolute addresses (1.16).
    pub fn needs_text_start(&self) -> bool {
        self.version != PclnVersion::Go116
    }

    fn field_size(&self) -> usize {
        match self.version {
            PclnVersion::Go116 => 8,
            _ => 4,
        }
    }

    /// Raw functab entry `i` (0..=nfunc; nfunc is the end sentinel): an offset
    /// from runtime.text on 1.18+, an address on 1.16.
    pub fn raw_entry(&self, tab: &[u8], i: usize) -> Option<u64> {
        let at = self.functab + 2 * i * self.field_size();
        match self.version {
            PclnVersion::Go116 => u64_at(tab, at),
            _ => u32_at(tab, at).map(u64::from),
        }
    }

    fn entry(&self, tab: &[u8], i: usize, text_start: u64) -> Option<u64> {
        let raw = self.raw_entry(tab, i)?;
        match self.version {
            PclnVersion::Go116 => Some(raw),
            _ => text_start.checked_add(raw),
        }
    }

    /// Offset of function `i`'s `_func` record in `tab`.
    fn func_off(&self, tab: &[u8], i: usize) -> Option<usize> {
        let at = self.functab + (2 * i + 1) * self.field_size();
        let off = match self.version {
            PclnVersion::Go116 => usize::try_from(u64_at(tab, at)?).ok()?,
            _ => u32_at(tab, at)? as usize,
        };
        self.functab.checked_add(off)
    }

    /// Offset of a `_func` field after the entry field (uintptr on 1.16, u32 later).
    fn func_field(&self, func: usize, after_entry: usize) -> usize {
        let entry_size = match self.version {
            PclnVersion::Go116 => 8,
            _ => 4,
        };
        func + entry_size + after_entry
    }

    /// Name of function `i`.
    pub fn name<'t>(&self, tab: &'t [u8], i: usize) -> Option<&'t [u8]> {
        let func = self.func_off(tab, i)?;
        let name_off = u32_at(tab, self.func_field(func, 0))? as i32;
        let at = self.funcname.checked_add(usize::try_from(name_off).ok()?)?;
        cstr_at(tab, at)
    }

    /// End of function `i`'s code per its pcsp table, which covers exactly the
    /// function's instructions (the next functab entry also covers padding).
    fn pcsp_end(&self, tab: &[u8], i: usize, entry: u64) -> Option<u64> {
        let func = self.func_off(tab, i)?;
        // _func: entry, nameOff i32, args i32, deferreturn u32, pcsp u32.
        let pcsp = u32_at(tab, self.func_field(func, 12))? as usize;
        if pcsp == 0 {
            return None;
        }
        let mut p = tab.get(self.pctab.checked_add(pcsp)?..)?;
        let mut pc = entry;
        let mut first = true;
        // Pairs of (value delta, pc delta) varints; a 0 value delta ends it.
        loop {
            let (vdelta, n) = uvarint(p)?;
            if vdelta == 0 && !first {
                return Some(pc);
            }
            first = false;
            p = p.get(n..)?;
            let (pcdelta, n) = uvarint(p)?;
            p = p.get(n..)?;
            pc = pc.checked_add(pcdelta.checked_mul(u64::from(self.min_lc))?)?;
        }
    }

    /// `_func.funcID` of function `i`; 0 is an ordinary function in every Go
    /// version, nonzero marks runtime specials and compiler wrappers.
    fn func_id(&self, tab: &[u8], i: usize) -> Option<u8> {
        let func = self.func_off(tab, i)?;
        // After nameOff..cuOffset (8 x u32); 1.20 added startLine i32.
        let after_entry = match self.version {
            PclnVersion::Go120 => 36,
            _ => 32,
        };
        tab.get(self.func_field(func, after_entry)).copied()
    }

    /// Find a function by exact name; returns (entry, end) virtual addresses.
    /// `end` is the pcsp-table end when it is consistent, else (C functions
    /// of cgo binaries have no pcsp) the next functab entry.
    ///
    /// A name can appear twice: a body plus its compiler-generated ABI
    /// wrapper (ABI0 <-> ABIInternal, e.g. for assembly functions). The body
    /// (funcID 0) is preferred: probing it sees every call, and its ABI is
    /// the one the function was written for. (`.symtab` instead names the
    /// ABI0 one "name.abi0".)
    pub fn lookup(&self, tab: &[u8], name: &[u8], text_start: u64) -> Option<(u64, u64)> {
        let mut matches = (0..self.nfunc).filter(|&i| self.name(tab, i) == Some(name));
        let first = matches.next()?;
        let i = if self.func_id(tab, first) == Some(0) {
            first
        } else {
            matches.find(|&i| self.func_id(tab, i) == Some(0)).unwrap_or(first)
        };
        self.func_range(tab, i, text_start).map(|(entry, end, _)| (entry, end))
    }

    /// Functions named `suffix`, or a vendored copy of it (`…/vendor/` + `suffix`), for each of
    /// `suffixes`: (index in `suffixes`, full name, entry, end), bodies only (funcID 0: not the
    /// compiler's wrappers). One pass over the table.
    pub fn lookup_suffixes(&self, tab: &[u8], suffixes: &[&str], text_start: u64) -> Vec<(usize, String, u64, u64)> {
        let mut found = Vec::new();
        for i in 0..self.nfunc {
            let Some(name) = self.name(tab, i) else { continue };
            let Some(which) = suffixes.iter().position(|s| is_name_or_vendored(name, s.as_bytes())) else { continue };
            if self.func_id(tab, i) != Some(0) {
                continue;
            }
            if let Some((entry, end, _)) = self.func_range(tab, i, text_start) {
                found.push((which, String::from_utf8_lossy(name).into_owned(), entry, end));
            }
        }
        found
    }

    /// (entry, end, end came from pcsp) of function `i`.
    pub(crate) fn func_range(&self, tab: &[u8], i: usize, text_start: u64) -> Option<(u64, u64, bool)> {
        let entry = self.entry(tab, i, text_start)?;
        let next = self.entry(tab, i + 1, text_start)?;
        if next <= entry {
            return None;
        }
        Some(match self.pcsp_end(tab, i, entry) {
            Some(e) if e > entry && e <= next => (entry, e, true),
            _ => (entry, next, false),
        })
    }
}

/// `name` is `wanted`, or `wanted` under a `vendor/` directory (kube-apiserver's older releases
/// vendor their dependencies: `k8s.io/kubernetes/vendor/google.golang.org/grpc/...`).
fn is_name_or_vendored(name: &[u8], wanted: &[u8]) -> bool {
    const VENDOR: &[u8] = b"/vendor/";
    name == wanted
        || (name.len() > wanted.len() + VENDOR.len()
            && name.ends_with(wanted)
            && name[..name.len() - wanted.len()].ends_with(VENDOR))
}

/// Go's uvarint (LEB128), at most 10 bytes; None when truncated or too long.
pub(crate) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made Go 1.16 table with two functions; checks the 1.16 layout
    /// (absolute uintptr entries, no textStart word) without a 1.16 binary.
    fn go116_table() -> Vec<u8> {
        let mut t = vec![0u8; 64];
        t[0..4].copy_from_slice(&MAGIC_GO116.to_le_bytes());
        t[6] = 1;
        t[7] = 8;
        let put = |t: &mut Vec<u8>, at: usize, v: u64| t[at..at + 8].copy_from_slice(&v.to_le_bytes());
        // funcnametab at 64: "main.a\0main.b\0"
        let funcname = t.len();
        t.extend_from_slice(b"main.a\0main.b\0");
        // pctab: one pcsp table per function: (+1 sp, 0x10 bytes) then end.
        let pctab = t.len();
        t.extend_from_slice(&[0, 0x02, 0x10, 0x00]); // leading 0: offset 0 means "none"
        // functab (aligned): 2 pairs + sentinel, then two _func records.
        while !t.len().is_multiple_of(8) {
            t.push(0);
        }
        let functab = t.len();
        t.resize(functab + 5 * 8, 0);
        let mut funcs = Vec::new();
        for (i, (entry, name_off)) in [(0x40_1000u64, 0u32), (0x40_1020, 7)].iter().enumerate() {
            let f = t.len() - functab;
            funcs.push(f);
            let mut rec = vec![0u8; 40];
            rec[0..8].copy_from_slice(&entry.to_le_bytes());
            rec[8..12].copy_from_slice(&name_off.to_le_bytes());
            rec[20..24].copy_from_slice(&1u32.to_le_bytes()); // pcsp at pctab+1
            t.extend_from_slice(&rec);
            put(&mut t, functab + 16 * i, *entry);
            put(&mut t, functab + 16 * i + 8, f as u64);
        }
        put(&mut t, functab + 32, 0x40_1040); // end sentinel
        put(&mut t, 8, 2); // nfunc
        put(&mut t, 24, funcname as u64);
        put(&mut t, 48, pctab as u64);
        put(&mut t, 56, functab as u64);
        t
    }

    #[test]
    fn go116_layout() {
        let tab = go116_table();
        let p = PclnTable::parse(&tab).expect("parse");
        assert_eq!(p.version, PclnVersion::Go116);
        assert!(!p.needs_text_start());
        assert_eq!(p.name(&tab, 1), Some(&b"main.b"[..]));
        // pcsp says 0x10 bytes of code; the next entry is 0x20 away.
        assert_eq!(p.lookup(&tab, b"main.a", 0), Some((0x40_1000, 0x40_1010)));
        assert_eq!(p.lookup(&tab, b"main.b", 0), Some((0x40_1020, 0x40_1030)));
        assert_eq!(p.lookup(&tab, b"main.c", 0), None);
    }

    #[test]
    fn rejects_bad_headers() {
        let tab = go116_table();
        assert!(PclnTable::parse(&tab[..20]).is_err());
        let mut t = tab.clone();
        t[0] = 0xfb; // Go 1.2 magic
        assert!(matches!(PclnTable::parse(&t), Err(GoBinError::Unsupported(_))));
        let mut t = tab.clone();
        t[8] = 0xff; // nfunc too large for the table
        assert!(PclnTable::parse(&t).is_err());
        let mut t = tab;
        t[7] = 4; // 32-bit
        assert!(PclnTable::parse(&t).is_err());
        assert!(PclnTable::parse(&[]).is_err());
    }

    #[test]
    fn uvarint_bounds() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[0xff; 12]), None);
    }

    #[test]
    fn names_match_exactly_or_under_a_vendor_directory() {
        let grpc = b"google.golang.org/grpc/internal/transport.(*loopyWriter).headerHandler";
        assert!(is_name_or_vendored(grpc, grpc));
        let vendored =
            b"k8s.io/kubernetes/vendor/google.golang.org/grpc/internal/transport.(*loopyWriter).headerHandler";
        assert!(is_name_or_vendored(vendored, grpc));
        // Another package whose path merely ends the same is not the function.
        let other = b"example.com/mygoogle.golang.org/grpc/internal/transport.(*loopyWriter).headerHandler";
        assert!(!is_name_or_vendored(other, grpc));
        assert!(!is_name_or_vendored(b"net/http.(*Request).writeHeader", b"net/http.(*Request).write"));
        assert!(!is_name_or_vendored(b"vendor/net/http.(*Request).write", b"net/http.(*Request).write"));
    }
}
