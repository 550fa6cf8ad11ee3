//! Field offsets of kernel structs, read from the kernel's BTF: what CO-RE relocations do for C
//! probes, done once here and handed to the probes as a patched global.
//!
//! A small reader of the BTF type section rather than a BTF crate: the one tried (btf-rs)
//! indexes all of vmlinux's types at every start, a delay and memory that docs/benchmarks.md
//! gives, where this needs one pass over them and a table of where each one starts.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use tracer_common::SockOffsets;

/// Offsets in `struct sock` that the socket hooks read.
pub fn sock_offsets(path: &Path) -> Result<SockOffsets> {
    let data = std::fs::read(path).map_err(|e| anyhow!("reading kernel BTF {}: {e}", path.display()))?;
    let btf = Btf::parse(&data)?;
    // Each struct is looked up once: a lookup is a pass over all of vmlinux's types.
    let sock = btf.find_struct("sock")?;
    let sock_common = btf.find_struct("sock_common")?;
    // `struct sock` begins with its `sock_common`.
    if btf.member_offset(sock, "__sk_common")? != 0 {
        bail!("struct sock does not begin with __sk_common");
    }
    let common = |f| btf.member_offset(sock_common, f);
    Ok(SockOffsets {
        skc_daddr: common("skc_daddr")?,
        skc_rcv_saddr: common("skc_rcv_saddr")?,
        skc_dport: common("skc_dport")?,
        skc_num: common("skc_num")?,
        skc_family: common("skc_family")?,
        skc_state: common("skc_state")?,
        skc_v6_daddr: common("skc_v6_daddr")?,
        skc_v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        sk_protocol: btf.member_offset(sock, "sk_protocol")?,
    })
}

/// BTF kinds (include/uapi/linux/btf.h).
mod kind {
    pub const UNKNOWN: u32 = 0;
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

const MAGIC: u16 = 0xeb9f;
const TYPE_HEADER: usize = 12;

struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte position in `types` of type id `i + 1` (id 0 is void).
    starts: Vec<u32>,
}

/// One `struct btf_type` header.
struct TypeHeader {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` or `type`, by kind.
    size_or_type: u32,
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self> {
        let u32_at = |o: usize| le_u32(data, o);
        let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            bail!("not little-endian BTF (bad magic)");
        }
        let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (u32_at(4), u32_at(8), u32_at(12), u32_at(16), u32_at(20))
        else {
            bail!("truncated BTF header");
        };
        let section = |off: u32, len: u32| {
            let start = hdr_len as usize + off as usize;
            data.get(start..start + len as usize).ok_or_else(|| anyhow!("BTF section out of bounds"))
        };
        let mut btf =
            Btf { types: section(type_off, type_len)?, strings: section(str_off, str_len)?, starts: Vec::new() };
        let mut pos = 0;
        while pos < btf.types.len() {
            btf.starts.push(pos as u32);
            let t = btf.header(pos)?;
            pos += TYPE_HEADER + Self::extra_len(&t)?;
        }
        Ok(btf)
    }

    fn u32_at(&self, pos: usize) -> Result<u32> {
        le_u32(self.types, pos).ok_or_else(|| anyhow!("truncated BTF type section"))
    }

    fn header(&self, pos: usize) -> Result<TypeHeader> {
        let info = self.u32_at(pos + 4)?;
        Ok(TypeHeader {
            name_off: self.u32_at(pos)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: self.u32_at(pos + 8)?,
        })
    }

    /// Bytes that follow a type's header.
    fn extra_len(t: &TypeHeader) -> Result<usize> {
        Ok(match t.kind {
            kind::INT | kind::VAR | kind::DECL_TAG => 4,
            kind::ARRAY => 12,
            kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * t.vlen,
            kind::ENUM | kind::FUNC_PROTO => 8 * t.vlen,
            kind::UNKNOWN
            | kind::PTR
            | kind::FWD
            | kind::TYPEDEF
            | kind::VOLATILE
            | kind::CONST
            | kind::RESTRICT
            | kind::FUNC
            | kind::FLOAT
            | kind::TYPE_TAG => 0,
            k => bail!("unknown BTF kind {k}"),
        })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Where struct `name` is in the type section.
    fn find_struct(&self, name: &str) -> Result<usize> {
        self.starts
            .iter()
            .map(|&p| p as usize)
            .find(|&p| self.header(p).is_ok_and(|t| t.kind == kind::STRUCT && self.name(t.name_off) == name.as_bytes()))
            .ok_or_else(|| anyhow!("kernel BTF has no struct {name}"))
    }

    /// Byte offset of `field` in the struct at `pos` (from [`Btf::find_struct`]), looking through
    /// anonymous unions and structs.
    fn member_offset(&self, pos: usize, field: &str) -> Result<u32> {
        self.find_member(pos, field, 0)?.ok_or_else(|| {
            let name = self
                .header(pos)
                .map(|t| String::from_utf8_lossy(self.name(t.name_off)).into_owned())
                .unwrap_or_default();
            anyhow!("kernel struct {name} has no field {field}")
        })
    }

    fn find_member(&self, pos: usize, field: &str, base_bits: u32) -> Result<Option<u32>> {
        let t = self.header(pos)?;
        for i in 0..t.vlen {
            let m = pos + TYPE_HEADER + 12 * i;
            let (name_off, type_id, offset) = (self.u32_at(m)?, self.u32_at(m + 4)?, self.u32_at(m + 8)?);
            let (bits, bitfield) = if t.kind_flag { (offset & 0xff_ffff, offset >> 24) } else { (offset, 0) };
            let bits = base_bits + bits;
            let name = self.name(name_off);
            if name == field.as_bytes() {
                if bitfield != 0 || !bits.is_multiple_of(8) {
                    bail!("kernel field {field} is a bit field");
                }
                return Ok(Some(bits / 8));
            }
            if name.is_empty()
                && let Some(inner) = self.resolve_aggregate(type_id)?
                && let Some(off) = self.find_member(inner, field, bits)?
            {
                return Ok(Some(off));
            }
        }
        Ok(None)
    }

    /// Where the struct or union that type `id` names is, through typedefs and qualifiers.
    fn resolve_aggregate(&self, mut id: u32) -> Result<Option<usize>> {
        for _ in 0..32 {
            let Some(&pos) = id.checked_sub(1).and_then(|i| self.starts.get(i as usize)) else { return Ok(None) };
            let t = self.header(pos as usize)?;
            match t.kind {
                kind::STRUCT | kind::UNION => return Ok(Some(pos as usize)),
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => id = t.size_or_type,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// The little-endian u32 at `pos`, if `data` holds it.
fn le_u32(data: &[u8], pos: usize) -> Option<u32> {
    data.get(pos..pos + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    /// The running kernel's BTF (every kernel these probes load on has it), against the layout
    /// `struct sock_common` has had since Linux 4.x.
    #[test]
    fn sock_offsets_of_the_running_kernel() {
        let off = sock_offsets(Path::new(VMLINUX)).unwrap();
        assert_eq!(
            (off.skc_daddr, off.skc_rcv_saddr, off.skc_dport, off.skc_num, off.skc_family, off.skc_state),
            (0, 4, 12, 14, 16, 18)
        );
        assert!(off.skc_v6_daddr >= 24 && off.skc_v6_rcv_saddr == off.skc_v6_daddr + 16, "{off:?}");
        assert!(off.sk_protocol > off.skc_v6_rcv_saddr, "{off:?}");
    }

    #[test]
    fn missing_names_and_corrupt_data_are_errors() {
        let data = std::fs::read(VMLINUX).unwrap();
        let btf = Btf::parse(&data).unwrap();
        let common = btf.find_struct("sock_common").unwrap();
        let e = btf.member_offset(common, "no_such_field").unwrap_err();
        assert_eq!(e.to_string(), "kernel struct sock_common has no field no_such_field");
        assert_eq!(
            btf.find_struct("no_such_struct_xyz").unwrap_err().to_string(),
            "kernel BTF has no struct no_such_struct_xyz"
        );
        assert!(Btf::parse(b"not btf at all").is_err());
        assert!(Btf::parse(&data[..100]).is_err(), "truncated");
        // Cut anywhere: an error, never a panic.
        for cut in (24..data.len()).step_by(data.len() / 97) {
            let _ = Btf::parse(&data[..cut])
                .and_then(|b| b.find_struct("sock").and_then(|s| b.member_offset(s, "sk_protocol")));
        }
        assert!(sock_offsets(Path::new("/nonexistent/btf")).is_err());
    }
}
