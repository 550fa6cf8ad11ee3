//! Field offsets of kernel structs, read from the kernel's BTF: what CO-RE relocations do for C
//! probes, done once here and handed to the probes as a patched global.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use btf_rs::{Btf, Type};
use tracer_common::SockOffsets;

/// Offsets in `struct sock` that the socket hooks read.
pub fn sock_offsets(path: &Path) -> Result<SockOffsets> {
    let btf = Btf::from_file(path).map_err(|e| anyhow!("reading kernel BTF {}: {e}", path.display()))?;
    sock_offsets_in(&btf)
}

fn sock_offsets_in(btf: &Btf) -> Result<SockOffsets> {
    // `struct sock` begins with its `sock_common`.
    if field_offset(btf, "sock", "__sk_common")? != 0 {
        bail!("struct sock does not begin with __sk_common");
    }
    let common = |f| field_offset(btf, "sock_common", f);
    Ok(SockOffsets {
        skc_daddr: common("skc_daddr")?,
        skc_rcv_saddr: common("skc_rcv_saddr")?,
        skc_dport: common("skc_dport")?,
        skc_num: common("skc_num")?,
        skc_family: common("skc_family")?,
        skc_state: common("skc_state")?,
        skc_v6_daddr: common("skc_v6_daddr")?,
        skc_v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        sk_protocol: field_offset(btf, "sock", "sk_protocol")?,
    })
}

/// Byte offset of `field` in struct `name`, looking through anonymous unions and structs.
fn field_offset(btf: &Btf, name: &str, field: &str) -> Result<u32> {
    let types = btf.resolve_types_by_name(name).map_err(|e| anyhow!("kernel BTF has no struct {name}: {e}"))?;
    let Some(Type::Struct(s)) = types.into_iter().find(|t| matches!(t, Type::Struct(_))) else {
        bail!("kernel BTF has no struct {name}");
    };
    find_member(btf, &s, field, 0)?.ok_or_else(|| anyhow!("kernel struct {name} has no field {field}"))
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, field: &str, base_bits: u32) -> Result<Option<u32>> {
    for m in &s.members {
        let bits = base_bits + m.bit_offset();
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            if m.bitfield_size().is_some_and(|b| b != 0) || bits % 8 != 0 {
                bail!("kernel field {field} is a bit field");
            }
            return Ok(Some(bits / 8));
        }
        if name.is_empty()
            && let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m)
            && let Some(off) = find_member(btf, &inner, field, bits)?
        {
            return Ok(Some(off));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF (every kernel these probes load on has it), against the layout
    /// `struct sock_common` has had since Linux 4.x.
    #[test]
    fn sock_offsets_of_the_running_kernel() {
        let off = sock_offsets(Path::new("/sys/kernel/btf/vmlinux")).unwrap();
        assert_eq!((off.skc_daddr, off.skc_rcv_saddr, off.skc_dport, off.skc_num, off.skc_family, off.skc_state), (0, 4, 12, 14, 16, 18));
        assert!(off.skc_v6_daddr >= 24 && off.skc_v6_rcv_saddr == off.skc_v6_daddr + 16, "{off:?}");
        assert!(off.sk_protocol > off.skc_v6_rcv_saddr, "{off:?}");
    }

    #[test]
    fn a_missing_field_is_an_error() {
        let btf = Btf::from_file("/sys/kernel/btf/vmlinux").unwrap();
        let e = field_offset(&btf, "sock_common", "no_such_field").unwrap_err();
        assert_eq!(e.to_string(), "kernel struct sock_common has no field no_such_field");
        assert!(field_offset(&btf, "no_such_struct_xyz", "a").is_err());
    }
}
