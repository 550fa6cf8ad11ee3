//! Tests on real binaries. None is skipped: a missing binary fails with how
//! to provide it.
//!
//! - /usr/bin/etcd: Debian's etcd-server (Go 1.19, stripped, external linker).
//! - GO_HTTPS_SERVER_BIN, GO_HTTPS_SERVER_BIN_UNSTRIPPED,
//!   GO_HTTPS_SERVER_BIN_EXTPIE: tests/go/https-server built with Go >= 1.20,
//!   from tests/go with GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local:
//!
//! ```text
//! go build -ldflags="-s -w" -o $GO_HTTPS_SERVER_BIN ./https-server
//! go build -o $GO_HTTPS_SERVER_BIN_UNSTRIPPED ./https-server
//! go build -buildmode=pie -ldflags=-linkmode=external -o $GO_HTTPS_SERVER_BIN_EXTPIE ./https-server
//! ```
//!
//! The unstripped builds have a .symtab to check the pclntab against; the
//! external-link PIE (needs gcc) has C code before runtime.text and
//! dynamic relocations.

use std::path::PathBuf;

use object::LittleEndian as LE;
use object::read::elf::{FileHeader, SectionHeader, Sym};

use super::*;

const ETCD: &str = "/usr/bin/etcd";

fn etcd_bytes() -> Vec<u8> {
    std::fs::read(ETCD).unwrap_or_else(|e| panic!("{ETCD} is required (Debian package etcd-server): {e}"))
}

/// `$VAR`, else where `cargo xtask test` builds it (target/go-bin/<var in lower case>).
pub(crate) fn env_bin(var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let built = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/go-bin")).join(var.to_lowercase());
    if built.is_file() {
        return built;
    }
    panic!(
        "{var} is not set and {} does not exist: it must name a build of tests/go/https-server \
         (`cargo xtask test` builds it; see the header of tracer/src/gobin/tests.rs)",
        built.display()
    )
}

fn open(path: &std::path::Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (vaddr, size) of a section, for range assertions.
fn section(data: &[u8], name: &str) -> (u64, u64) {
    let r = elf::section(data, name.as_bytes()).unwrap_or_else(|| panic!("no {name}"));
    (r.vaddr, r.len as u64)
}

/// The properties a tracer relies on, for one binary.
fn check_tls_probes(bin: &GoBinary) -> TlsProbePoints {
    let pp = bin.tls_probe_points().expect("tls_probe_points");
    let (text, text_len) = section(&bin.data, ".text");
    for fp in [&pp.read, &pp.write] {
        let f = &fp.func;
        assert!(f.entry >= text && f.end <= text + text_len, "{} outside .text", f.name);
        assert!(f.entry < f.end);
        assert_eq!(elf::vaddr_to_offset(&bin.segs, f.entry), Some(f.file_offset));
        assert!(!fp.ret_offsets.is_empty(), "{}: no RET", f.name);
        let code_end = f.file_offset + (f.end - f.entry);
        for &off in &fp.ret_offsets {
            assert!((f.file_offset..code_end).contains(&off), "{}: {off:#x} out of range", f.name);
            let byte = bin.data[off as usize];
            assert!(byte == 0xc3 || byte == 0xc2, "{}: byte {byte:#x} at {off:#x}", f.name);
        }
        assert!(fp.ret_offsets.windows(2).all(|w| w[0] < w[1]));
    }
    assert!(pp.register_abi);
    // Every Go release these tests use (1.19 in etcd, the toolchain's own) keeps Read's receiver
    // and buffer in their spill slots, and copies Read's plaintext with one call to memmove: Read
    // is probed at that call only.
    assert!(pp.read_spills_args, "crypto/tls.(*Conn).Read: arguments not found in their spill slots");
    let copy = pp.read_copy.expect("crypto/tls.(*Conn).Read: no single call to runtime.memmove");
    let r = &pp.read.func;
    assert!((r.file_offset..r.file_offset + (r.end - r.entry)).contains(&copy.file_offset));
    assert_eq!(bin.data[copy.file_offset as usize], 0xe8, "not a call rel32 at {:#x}", copy.file_offset);
    assert!(matches!(copy.frame, 0x20..=0x200), "Read's frame {:#x}", copy.frame);
    let check = pp.write_check.expect("crypto/tls.(*Conn).Write: no stack check found");
    let w = &pp.write.func;
    assert!(
        (w.file_offset + 4..w.file_offset + 10).contains(&check),
        "Write's stack check branch at {check:#x}, entry {:#x}",
        w.file_offset
    );
    let jbe = &bin.data[check as usize..check as usize + 2];
    assert!(jbe[0] == 0x76 || jbe == [0x0f, 0x86], "not a jbe at {check:#x}: {jbe:x?}");
    pp
}

/// The pclntab must agree with .symtab on every function's entry and end.
fn check_against_symtab(bin: &GoBinary) -> usize {
    let hdr = elf::Elf64::parse(&*bin.data).unwrap();
    let sections = hdr.sections(LE, &*bin.data).unwrap();
    let symtab = sections.symbols(LE, &*bin.data, object::elf::SHT_SYMTAB).unwrap();
    assert!(!symtab.is_empty(), "binary has no .symtab");
    // Names repeat (closures of generic instances), so keep every range.
    let mut funcs: std::collections::HashMap<&[u8], Vec<(u64, u64)>> = Default::default();
    for s in symtab.iter().filter(|s| s.st_type() == object::elf::STT_FUNC && s.st_size(LE) > 0) {
        let name = s.name(LE, symtab.strings()).unwrap();
        funcs.entry(name).or_default().push((s.st_value(LE), s.st_value(LE) + s.st_size(LE)));
    }
    let tab = bin.pcln_bytes();
    let mut checked = 0;
    for i in 0..bin.pcln.nfunc {
        let name = bin.pcln.name(tab, i).unwrap();
        let shown = String::from_utf8_lossy(name);
        let (entry, end, from_pcsp) = bin.pcln.func_range(tab, i, bin.text_start).unwrap();
        // Assembly bodies and ABI0 wrappers are "name.abi0" in .symtab.
        let abi0 = [name, b".abi0"].concat();
        let candidates = funcs.get(name).into_iter().chain(funcs.get(&abi0[..])).flatten();
        let Some(&(_, sym_end)) = candidates.clone().find(|s| s.0 == entry) else {
            assert!(candidates.count() == 0, "{shown}: {entry:#x} not in .symtab");
            continue; // linker-made symbols without size
        };
        // Without a pcsp table (C code) the end includes padding.
        assert!(end == sym_end || (!from_pcsp && end > sym_end), "{shown}: end {end:#x} vs {sym_end:#x}");
        checked += 1;
    }
    assert!(checked * 10 > bin.pcln.nfunc * 9, "only {checked} of {} cross-checked", bin.pcln.nfunc);
    checked
}

#[test]
fn etcd_go119() {
    let bin = GoBinary::from_bytes(etcd_bytes()).unwrap();
    let v = bin.go_version().unwrap();
    assert!(v.starts_with("go1.19"), "{v}");
    assert_eq!(bin.module_path(), Some("go.etcd.io/etcd"));
    assert_eq!(bin.pcln.version, PclnVersion::Go118);
    // External linker: C start-up code precedes runtime.text.
    let (text, _) = section(&bin.data, ".text");
    assert!(bin.text_start > text);
    let pp = check_tls_probes(&bin);
    eprintln!("etcd {v}: {:#x?}", pp);
}

#[test]
fn etcd_function_ends_at_padding() {
    // The pcsp end excludes the int3 padding up to the next function.
    let bin = GoBinary::from_bytes(etcd_bytes()).unwrap();
    for name in [TLS_CONN_READ, TLS_CONN_WRITE, "main.main", "runtime.goexit"] {
        let f = bin.function(name).unwrap_or_else(|| panic!("{name}"));
        let tab = bin.pcln_bytes();
        let i = (0..bin.pcln.nfunc).find(|&i| bin.pcln.name(tab, i) == Some(name.as_bytes())).unwrap();
        let next = bin.text_start + bin.pcln.raw_entry(tab, i + 1).unwrap();
        let pad = &bin.data[(f.file_offset + f.end - f.entry) as usize..(f.file_offset + next - f.entry) as usize];
        assert!(pad.iter().all(|&b| b == 0xcc), "{name}: padding {pad:x?}");
    }
    assert_eq!(bin.function("no.such/func"), None);
}

#[test]
fn etcd_without_section_headers() {
    // Section headers gone: pclntab and build info are found by scanning.
    let data = etcd_bytes();
    let want = GoBinary::from_bytes(data.clone()).unwrap().function(TLS_CONN_READ).unwrap();
    let mut d = data;
    d[0x28..0x30].fill(0); // e_shoff
    d[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    let bin = GoBinary::from_bytes(d).unwrap();
    assert!(bin.go_version().unwrap().starts_with("go1.19"));
    assert_eq!(bin.function(TLS_CONN_READ), Some(want));
    assert!(!bin.ret_offsets(&bin.function(TLS_CONN_WRITE).unwrap()).unwrap().is_empty());
}

#[test]
fn etcd_text_start_from_moduledata() {
    // Zero the header's textStart (as Go >= 1.26 writes it): moduledata must
    // give the same base.
    let data = etcd_bytes();
    let orig = GoBinary::from_bytes(data.clone()).unwrap();
    let mut d = data;
    let at = orig.pcln_region.offset + 24;
    d[at..at + 8].fill(0);
    let bin = GoBinary::from_bytes(d).unwrap();
    assert_eq!(bin.text_start, orig.text_start);
    assert_eq!(bin.function(TLS_CONN_READ), orig.function(TLS_CONN_READ));
}

#[test]
fn go_https_server_stripped() {
    let path = env_bin("GO_HTTPS_SERVER_BIN");
    let bin = open(&path);
    assert!(elf::section(&bin.data, b".symtab").is_none(), "{} is not stripped", path.display());
    let v = bin.go_version().unwrap();
    let (_, minor) = buildinfo::parse_go_version(v).unwrap();
    assert!(minor >= 20, "{v}: expected Go >= 1.20");
    assert_eq!(bin.pcln.version, PclnVersion::Go120);
    assert_eq!(bin.module_path(), Some("tracer/tests/go"));
    let pp = check_tls_probes(&bin);
    eprintln!("https-server {v}: Read {} rets, Write {} rets", pp.read.ret_offsets.len(), pp.write.ret_offsets.len());
}

#[test]
fn go_https_server_unstripped_matches_symtab() {
    let bin = open(&env_bin("GO_HTTPS_SERVER_BIN_UNSTRIPPED"));
    check_tls_probes(&bin);
    let n = check_against_symtab(&bin);
    eprintln!("{n} functions agree with .symtab");
}

#[test]
fn go_https_server_external_pie() {
    let path = env_bin("GO_HTTPS_SERVER_BIN_EXTPIE");
    let data = std::fs::read(&path).unwrap();
    let bin = GoBinary::from_bytes(data.clone()).unwrap();
    let (text, _) = section(&bin.data, ".text");
    assert!(bin.text_start > text, "expected C code before runtime.text");
    check_tls_probes(&bin);
    check_against_symtab(&bin);

    // As if linked by lld: relocated moduledata words left 0 in the file, so
    // text start must come from R_X86_64_RELATIVE addends.
    let want = bin.text_start;
    let pcln = bin.pcln_region.vaddr.to_le_bytes();
    let mut d = data;
    for seg in bin.segs.iter().filter(|s| s.writable()) {
        let hits: Vec<usize> = elf::scan(&d, seg, 8, |b| b.starts_with(&pcln)).collect();
        for i in hits {
            let at = seg.offset as usize + i;
            d[at..at + 184].fill(0);
        }
    }
    // Also hide .symtab's runtime.text so only relocations can answer.
    let sym = find_symtab_name(&d, "runtime.text");
    d[sym] = b'X';
    let bin = GoBinary::from_bytes(d).unwrap();
    assert_eq!(bin.text_start, want);
}

/// File offset of `name` in .strtab.
fn find_symtab_name(data: &[u8], name: &str) -> usize {
    let hdr = elf::Elf64::parse(data).unwrap();
    let sections = hdr.sections(LE, data).unwrap();
    let (_, strtab) = sections.section_by_name(LE, b".strtab").unwrap();
    let (off, len) = strtab.file_range(LE).unwrap();
    let s = &data[off as usize..(off + len) as usize];
    let needle = format!("\0{name}\0");
    off as usize + 1 + s.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap()
}

#[test]
fn errors_are_clear() {
    let one_line = |e: GoBinError| {
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.is_empty(), "{s:?}");
        s
    };
    let e = GoBinary::from_bytes(b"#!/bin/sh\necho hi\n".to_vec()).unwrap_err();
    assert!(matches!(e, GoBinError::NotElf), "{e}");
    one_line(e);
    let e = GoBinary::open(std::path::Path::new("/nonexistent/x")).unwrap_err();
    assert!(one_line(e).contains("/nonexistent/x"));
    let e = GoBinary::open(std::path::Path::new("/bin/ls")).unwrap_err();
    assert!(matches!(e, GoBinError::NotGo), "{e}");
    one_line(e);

    let data = etcd_bytes();
    let mut d = data[..4096].to_vec();
    d[18] = 183; // EM_AARCH64
    let e = GoBinary::from_bytes(d).unwrap_err();
    assert!(one_line(e).contains("aarch64"));
    let mut d = data[..4096].to_vec();
    d[4] = 1; // ELFCLASS32
    assert!(matches!(GoBinary::from_bytes(d), Err(GoBinError::UnsupportedArch(_))));
}

#[test]
fn truncated_etcd() {
    let data = etcd_bytes();
    let n = data.len();
    for len in [0, 1, 4, 16, 63, 64, 65, 120, 4096, n / 3, n / 2, 2 * n / 3, n - 4096, n - 1] {
        let r = GoBinary::from_bytes(data[..len].to_vec());
        let e = r.expect_err(&format!("len {len} parsed"));
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        eprintln!("truncated to {len}: {s}");
    }
}

#[test]
fn corrupt_pclntab_header() {
    let data = etcd_bytes();
    let off = GoBinary::from_bytes(data.clone()).unwrap().pcln_region.offset;
    // Each header byte flipped, one at a time.
    for i in 0..72 {
        let mut d = data.clone();
        d[off + i] ^= 0xff;
        exercise(d);
    }
    // Deterministic pseudo-random multi-byte mutations (LCG, no rand crate)
    // over the header and the start of the functab it points at.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    for _ in 0..150 {
        let mut d = data.clone();
        for _ in 0..1 + next() % 6 {
            let at = off + next() % 160;
            d[at] = next() as u8;
        }
        exercise(d);
    }
}

/// Everything a tracer would call must return, not panic.
fn exercise(d: Vec<u8>) {
    if let Ok(bin) = GoBinary::from_bytes(d) {
        let _ = bin.go_version();
        let _ = bin.tls_probe_points();
        if let Some(f) = bin.function("main.main") {
            let _ = bin.ret_offsets(&f);
        }
    }
}

#[test]
fn bogus_gofunc_is_rejected() {
    let bin = GoBinary::from_bytes(etcd_bytes()).unwrap();
    let mut f = bin.function(TLS_CONN_READ).unwrap();
    f.end = f.entry; // empty
    assert!(matches!(bin.ret_offsets(&f), Err(GoBinError::NotCode { .. })));
    f.entry = 0x10; // unmapped
    f.end = 0x20;
    assert!(bin.ret_offsets(&f).is_err());
    let g = bin.function("runtime.buildVersion"); // a variable, not a function
    assert_eq!(g, None);
}
