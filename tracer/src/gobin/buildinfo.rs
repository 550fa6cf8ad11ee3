//! Reader for the Go build info blob (`.go.buildinfo`, `runtime.buildinfo`):
//! Go version and main module. Layout reference: `debug/buildinfo`.
//!
//! ```text
//! magic "\xff Go buildinf:" (14) | ptrSize u8 | flags u8 | 16 bytes
//! flags & 2 (Go >= 1.18): uvarint-prefixed version, then modinfo, inline at +32
//! else (older):          +16 *string version, +16+ptrSize *string modinfo
//! ```

use super::pclntab::{u64_at, uvarint};

pub const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// The blob is 16-byte aligned; scans step by this.
pub const ALIGN: usize = 16;
const HEADER_SIZE: usize = 32;
const FLAG_BIG_ENDIAN: u8 = 0x1;
const FLAG_INLINE: u8 = 0x2;

#[derive(Clone, Debug, Default)]
pub struct BuildInfo {
    /// e.g. "go1.19.8".
    pub version: String,
    /// Main module path (`mod` line), else the main package path (`path` line).
    pub module_path: Option<String>,
}

/// Parse a blob starting at the magic. `read(vaddr, len)` returns file-backed
/// bytes at a virtual address; only the pre-1.18 pointer format needs it.
/// Returns None for anything malformed: build info is optional metadata.
pub fn parse<'a>(blob: &[u8], read: impl Fn(u64, u64) -> Option<&'a [u8]>) -> Option<BuildInfo> {
    if blob.get(..MAGIC.len())? != MAGIC || blob.len() < HEADER_SIZE {
        return None;
    }
    let (ptr_size, flags) = (blob[14], blob[15]);
    // modinfo's framing bytes are not UTF-8, so both are read as bytes.
    let (version, modinfo): (&[u8], &[u8]) = if flags & FLAG_INLINE != 0 {
        let (version, rest) = inline_bytes(&blob[HEADER_SIZE..])?;
        (version, inline_bytes(rest).map_or(&[][..], |(m, _)| m))
    } else {
        // Pointers to Go string headers {data *byte, len int}; little-endian
        // 64-bit only (amd64 is all we support).
        if flags & FLAG_BIG_ENDIAN != 0 || ptr_size != 8 {
            return None;
        }
        let go_string = |hdr_addr: u64| -> Option<&'a [u8]> {
            let hdr = read(hdr_addr, 16)?;
            read(u64_at(hdr, 0)?, u64_at(hdr, 8)?)
        };
        let version = go_string(u64_at(blob, 16)?)?;
        (version, go_string(u64_at(blob, 24)?).unwrap_or_default())
    };
    let version = std::str::from_utf8(version).ok().filter(|v| !v.is_empty())?;
    Some(BuildInfo { version: version.to_owned(), module_path: main_module(modinfo) })
}

/// uvarint length + bytes; returns the bytes and what follows them.
fn inline_bytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = uvarint(b)?;
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((b.get(n..end)?, &b[end..]))
}

/// modinfo is framed by 16-byte binary sentinels and holds tab-separated
/// lines such as "path\tcmd/x" and "mod\tgithub.com/x\tv1.2.3\th1:...".
fn main_module(modinfo: &[u8]) -> Option<String> {
    let n = modinfo.len();
    if n < 33 || modinfo[n - 17] != b'\n' {
        return None;
    }
    let body = std::str::from_utf8(&modinfo[16..n - 16]).ok()?;
    let field = |key: &str| {
        body.lines().find_map(|l| l.strip_prefix(key)?.split('\t').next()).filter(|p| !p.is_empty()).map(str::to_owned)
    };
    field("mod\t").or_else(|| field("path\t"))
}

/// Parse "go1.19.8" / "go1.21rc2" / "go1.27.3 X:..." into (major, minor).
pub fn parse_go_version(v: &str) -> Option<(u32, u32)> {
    let rest = v.strip_prefix("go")?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real sentinels are binary (not UTF-8), as here.
    fn framed(body: &str) -> Vec<u8> {
        let mut m = vec![0xaf; 16];
        m.extend_from_slice(body.as_bytes());
        m.extend_from_slice(&[0xf9; 16]);
        m
    }

    fn inline_blob(version: &str, modinfo: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[8, FLAG_INLINE]);
        b.resize(HEADER_SIZE, 0);
        for s in [version.as_bytes(), modinfo] {
            b.push(s.len() as u8); // short strings: one-byte varint
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn inline_format() {
        let m = framed("path\tgo.etcd.io/etcd\nbuild\t-compiler=gc\n");
        let bi = parse(&inline_blob("go1.19.8", &m), |_, _| None).unwrap();
        assert_eq!(bi.version, "go1.19.8");
        assert_eq!(bi.module_path.as_deref(), Some("go.etcd.io/etcd"));
        let m = framed("path\tx/cmd\nmod\tx\t(devel)\t\n");
        let bi = parse(&inline_blob("go1.27.3", &m), |_, _| None).unwrap();
        assert_eq!(bi.module_path.as_deref(), Some("x"));
        // Truncated blobs fail softly.
        let b = inline_blob("go1.27.3", b"");
        for n in 0..b.len() - 8 {
            assert!(parse(&b[..n], |_, _| None).is_none(), "len {n}");
        }
    }

    #[test]
    fn pointer_format() {
        // Pre-1.18: header points at string headers elsewhere in memory.
        let mut mem = vec![0u8; 0x100];
        let base = 0x1000u64;
        let put = |m: &mut Vec<u8>, at: usize, v: u64| m[at..at + 8].copy_from_slice(&v.to_le_bytes());
        mem[0x80..0x89].copy_from_slice(b"go1.16.15");
        put(&mut mem, 0x40, base + 0x80);
        put(&mut mem, 0x48, 9);
        let read = |addr: u64, len: u64| {
            let start = usize::try_from(addr.checked_sub(base)?).ok()?;
            mem.get(start..start.checked_add(usize::try_from(len).ok()?)?)
        };
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&[8, 0]);
        blob.extend_from_slice(&(base + 0x40).to_le_bytes());
        blob.extend_from_slice(&(base + 0x50).to_le_bytes()); // modinfo: empty string header
        let bi = parse(&blob, read).unwrap();
        assert_eq!(bi.version, "go1.16.15");
        assert_eq!(bi.module_path, None);
        // Dangling pointer: no version, no panic.
        blob[16] = 0xff;
        assert!(parse(&blob, read).is_none());
    }

    #[test]
    fn version_numbers() {
        assert_eq!(parse_go_version("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_go_version("go1.21rc2"), Some((1, 21)));
        assert_eq!(parse_go_version("go1.27.3 X:nocoverageredesign"), Some((1, 27)));
        assert_eq!(parse_go_version("devel +abc"), None);
    }
}
