//! Analysis of Go ELF binaries for uprobes: Go version, function entries from
//! the runtime's pclntab (present in stripped binaries such as kube-apiserver
//! and etcd), and the RET instructions to probe instead of uretprobes.
//!
//! All addresses handed out for attaching are *file offsets*, which is what
//! uprobes take; virtual addresses are converted through PT_LOAD headers.
//! Only x86-64 little-endian ELF is supported.

mod buildinfo;
mod elf;
mod pclntab;
mod rets;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use elf::{Region, Segment};
use pclntab::{PclnTable, PclnVersion};

/// Why a binary could not be analysed. Display is a single line.
#[derive(Debug, thiserror::Error)]
pub enum GoBinError {
    #[error("cannot read {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("not an ELF file")]
    NotElf,
    #[error("malformed ELF: {0}")]
    BadElf(String),
    #[error("unsupported architecture: {0} (only x86-64 is supported)")]
    UnsupportedArch(String),
    #[error("not a Go binary: no .gopclntab or Go build info found")]
    NotGo,
    #[error("unsupported Go binary: {0}")]
    Unsupported(String),
    #[error("corrupt Go metadata: {0}")]
    Corrupt(String),
    #[error("function {0} not found")]
    FunctionNotFound(String),
    #[error("code of {func} at {addr:#x} is not in an executable, file-backed segment")]
    NotCode { func: String, addr: u64 },
    #[error("cannot decode x86-64 instruction at {addr:#x} in {func}")]
    Decode { func: String, addr: u64 },
}

/// A function's code range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFunc {
    pub name: String,
    /// Virtual address of the first instruction.
    pub entry: u64,
    /// Virtual address just past the last instruction (padding excluded when
    /// the pclntab says where the code ends).
    pub end: u64,
    /// File offset of `entry`: the uprobe attach offset.
    pub file_offset: u64,
}

/// Entry and RET file offsets of one function.
#[derive(Clone, Debug)]
pub struct FuncProbes {
    pub func: GoFunc,
    /// File offsets of every RET instruction, ascending.
    pub ret_offsets: Vec<u64>,
}

/// Where to probe `crypto/tls.(*Conn).Read` and `Write`.
///
/// Under Go's register ABI (`register_abi`, Go >= 1.17 on amd64) integer
/// arguments go in RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11 in order, a
/// slice taking three (ptr, len, cap), and results come back in the same
/// registers from RAX. So for
/// `func (c *Conn) Read(b []byte) (n int, err error)` (Write is the same):
///
/// - at entry: RAX = `c` (*Conn), RBX = `b.ptr`, RCX = `b.len`, RDI = `b.cap`;
/// - at each RET: RAX = `n`, RBX = `err`'s itab (0 when nil), RCX = `err`'s
///   data pointer. Argument registers are dead by then: save `b.ptr` at entry
///   keyed by goroutine, not thread (a goroutine blocked in Read can resume
///   on another thread); R14 holds the current goroutine's `g` pointer.
///
/// Before 1.17 (`register_abi == false`) arguments and results are on the
/// stack instead, and these register mappings do not apply.
#[derive(Clone, Debug)]
pub struct TlsProbePoints {
    pub go_version: Option<String>,
    pub register_abi: bool,
    pub read: FuncProbes,
    pub write: FuncProbes,
    /// Read keeps its receiver and `b` in their spill slots: its RET probe finds them there, and
    /// its entry needs no probe.
    pub read_spills_args: bool,
    /// Where Read copies the plaintext it returns out of the connection's decrypted record, when
    /// found: then neither its entry nor its RETs need a probe.
    pub read_copy: Option<ReadCopy>,
    /// File offset of the branch of Write's stack check: a probe there that skips the runs which
    /// take the branch reports each call once, so Write needs no RET probe.
    pub write_check: Option<u64>,
}

/// The one `call runtime.memmove` in `crypto/tls.(*Conn).Read`: `copy(b, r.s[r.i:])` of the
/// inlined `bytes.(*Reader).Read` over the decrypted record (`n, _ := c.input.Read(b)`), the only
/// copy Read makes. memmove's arguments are in registers there: RAX = `b.ptr`, RBX = the
/// plaintext, RCX = `n`, the count Read returns. A probe on a call costs one trap, where a probe
/// on a RET costs two.
#[derive(Clone, Copy, Debug)]
pub struct ReadCopy {
    /// File offset of the call instruction.
    pub file_offset: u64,
    /// Bytes between RSP in Read's body and its return address: the receiver is in its spill slot
    /// at RSP + frame + 8 (see [`rets::arg_spill_frame`]).
    pub frame: u64,
}

pub const TLS_CONN_READ: &str = "crypto/tls.(*Conn).Read";
pub const TLS_CONN_WRITE: &str = "crypto/tls.(*Conn).Write";

/// A parsed Go binary. Holds the whole file in memory; drop it once the
/// probe points are known.
pub struct GoBinary {
    data: Vec<u8>,
    segs: Vec<Segment>,
    pcln: PclnTable,
    pcln_region: Region,
    /// runtime.text: base of pclntab entry offsets (1.18+; 0 for 1.16).
    text_start: u64,
    build: Option<buildinfo::BuildInfo>,
}

impl fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoBinary")
            .field("size", &self.data.len())
            .field("go_version", &self.go_version())
            .field("pclntab", &self.pcln.version)
            .field("nfunc", &self.pcln.nfunc)
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .finish()
    }
}

impl GoBinary {
    /// Parse an ELF file, e.g. `/proc/PID/exe` or `/proc/PID/root/usr/bin/x`.
    pub fn open(path: &Path) -> Result<GoBinary, GoBinError> {
        let data = std::fs::read(path).map_err(|error| GoBinError::Io { path: path.to_owned(), error })?;
        Self::from_bytes(data)
    }

    pub fn from_bytes(data: Vec<u8>) -> Result<GoBinary, GoBinError> {
        let hdr = elf::header(&data)?;
        let segs = elf::load_segments(hdr, &data)?;
        elf::check_sections(hdr, &data)?;

        let pcln_found = elf::section(&data, b".gopclntab")
            .or_else(|| elf::section(&data, b".data.rel.ro.gopclntab"))
            .or_else(|| scan_pclntab(&data, &segs));
        let build = elf::section(&data, b".go.buildinfo")
            .and_then(|r| data.get(r.offset..r.offset + r.len))
            .or_else(|| scan_buildinfo(&data, &segs))
            .and_then(|blob| buildinfo::parse(blob, |addr, len| elf::read_vaddr(&data, &segs, addr, len)));
        let Some(pcln_region) = pcln_found else {
            return Err(match build {
                Some(_) => GoBinError::Corrupt("Go build info present but no pclntab".into()),
                None => GoBinError::NotGo,
            });
        };
        let tab = &data[pcln_region.offset..pcln_region.offset + pcln_region.len];
        let pcln = PclnTable::parse(tab)?;
        let text_start = resolve_text_start(&data, &segs, &pcln, pcln_region)?;
        Ok(GoBinary { data, segs, pcln, pcln_region, text_start, build })
    }

    /// Go toolchain version from the build info, e.g. "go1.19.8".
    pub fn go_version(&self) -> Option<&str> {
        self.build.as_ref().map(|b| b.version.as_str())
    }

    /// Main module path (`mod` line of the build info), or the main package
    /// path when built outside module mode.
    pub fn module_path(&self) -> Option<&str> {
        self.build.as_ref()?.module_path.as_deref()
    }

    /// Whether Go's register ABI (ABIInternal, amd64 Go >= 1.17) is in use.
    /// Go 1.17 could opt out (GOEXPERIMENT=noregabi, shown in the version
    /// string). Without a readable version, pclntab formats of 1.18+ imply it.
    pub fn register_abi(&self) -> bool {
        let version = self.go_version();
        match version.and_then(buildinfo::parse_go_version) {
            Some((1, 17)) => !version.is_some_and(|v| v.contains("noregabi")),
            Some((1, minor)) => minor >= 17,
            Some((major, _)) => major > 1,
            None => self.pcln.version != PclnVersion::Go116,
        }
    }

    fn pcln_bytes(&self) -> &[u8] {
        &self.data[self.pcln_region.offset..self.pcln_region.offset + self.pcln_region.len]
    }

    /// Function by exact name (e.g. "crypto/tls.(*Conn).Read") from the
    /// pclntab, or from `.symtab` when the pclntab lacks it.
    pub fn function(&self, name: &str) -> Option<GoFunc> {
        let (entry, end) = self.pcln.lookup(self.pcln_bytes(), name.as_bytes(), self.text_start).or_else(|| {
            let (value, size) = elf::symtab_func(&self.data, name.as_bytes())?;
            Some((value, value.checked_add(size).filter(|_| size > 0)?))
        })?;
        Some(GoFunc { name: name.to_owned(), entry, end, file_offset: elf::vaddr_to_offset(&self.segs, entry)? })
    }

    /// Functions named by `suffixes` (each the name, or the name under a `vendor/` directory):
    /// (index in `suffixes`, function), in pclntab order.
    pub fn functions_by_suffix(&self, suffixes: &[&str]) -> Vec<(usize, GoFunc)> {
        let found = self.pcln.lookup_suffixes(self.pcln_bytes(), suffixes, self.text_start);
        found
            .into_iter()
            .filter_map(|(which, name, entry, end)| {
                let file_offset = elf::vaddr_to_offset(&self.segs, entry)?;
                Some((which, GoFunc { name, entry, end, file_offset }))
            })
            .collect()
    }

    /// File offsets of every RET in `f`, decoding linearly from entry to end.
    pub fn ret_offsets(&self, f: &GoFunc) -> Result<Vec<u64>, GoBinError> {
        let (code, seg) = self.code(f)?;
        let rets = rets::find_rets(code, f.entry).map_err(|addr| GoBinError::Decode { func: f.name.clone(), addr })?;
        // Each address through the segment of the code it was decoded from, as the other probe
        // points are (read_vaddr checked that the code lies inside it).
        rets.into_iter()
            .map(|a| seg.file_offset(a).ok_or_else(|| GoBinError::NotCode { func: f.name.clone(), addr: a }))
            .collect()
    }

    /// File offset of the branch of `f`'s stack check (see [`rets::stack_check_branch`]).
    pub fn stack_check_branch(&self, f: &GoFunc) -> Option<u64> {
        let (code, seg) = self.code(f).ok()?;
        seg.file_offset(rets::stack_check_branch(code, f.entry)?)
    }

    /// `f`'s frame when it keeps its first three register arguments in their spill slots (see
    /// [`rets::arg_spill_frame`]).
    fn arg_spill_frame(&self, f: &GoFunc) -> Option<u64> {
        let (code, _) = self.code(f).ok()?;
        rets::arg_spill_frame(code, f.entry)
    }

    /// Where Read copies its plaintext out (see [`ReadCopy`]): the only direct call to
    /// runtime.memmove in `read`, whose receiver is in its spill slot above a body frame of
    /// `frame` bytes.
    fn read_copy(&self, read: &GoFunc, frame: u64) -> Option<ReadCopy> {
        let memmove = self.function("runtime.memmove")?;
        let (code, seg) = self.code(read).ok()?;
        match rets::direct_calls(code, read.entry, memmove.entry).ok()?[..] {
            [call] => Some(ReadCopy { file_offset: seg.file_offset(call)?, frame }),
            _ => None,
        }
    }

    /// The machine code of `f`, from an executable segment only (a bogus range must not yield
    /// "offsets"), and that segment.
    fn code(&self, f: &GoFunc) -> Result<(&[u8], &Segment), GoBinError> {
        let not_code = || GoBinError::NotCode { func: f.name.clone(), addr: f.entry };
        let seg = self
            .segs
            .iter()
            .find(|s| s.executable() && f.entry >= s.vaddr && f.entry - s.vaddr < s.filesz)
            .ok_or_else(not_code)?;
        let len = f.end.checked_sub(f.entry).filter(|&l| l > 0).ok_or_else(not_code)?;
        let code = elf::read_vaddr(&self.data, std::slice::from_ref(seg), f.entry, len).ok_or_else(not_code)?;
        Ok((code, seg))
    }

    fn probes(&self, name: &str) -> Result<FuncProbes, GoBinError> {
        let func = self.function(name).ok_or_else(|| GoBinError::FunctionNotFound(name.to_owned()))?;
        let ret_offsets = self.ret_offsets(&func)?;
        if ret_offsets.is_empty() {
            return Err(GoBinError::Corrupt(format!("no RET instruction in {name}")));
        }
        Ok(FuncProbes { func, ret_offsets })
    }

    /// Entry and RET offsets of `crypto/tls.(*Conn).Read` and `Write`, and where fewer, cheaper
    /// probes can do (Read's copy of its plaintext, its spilled arguments, the branch of Write's
    /// stack check).
    pub fn tls_probe_points(&self) -> Result<TlsProbePoints, GoBinError> {
        let read = self.probes(TLS_CONN_READ)?;
        let write = self.probes(TLS_CONN_WRITE)?;
        let register_abi = self.register_abi();
        // Spill slots are a register-ABI notion.
        let read_frame = self.arg_spill_frame(&read.func).filter(|_| register_abi);
        Ok(TlsProbePoints {
            go_version: self.go_version().map(str::to_owned),
            register_abi,
            read_spills_args: read_frame.is_some(),
            read_copy: read_frame.and_then(|frame| self.read_copy(&read.func, frame)),
            write_check: self.stack_check_branch(&write.func),
            read,
            write,
        })
    }
}

/// runtime.text, the base that 1.18+ functab entries are relative to:
/// the header word when stored, else the runtime's moduledata, else
/// `.symtab`. Never guessed from `.text`, which starts with C code in
/// externally linked binaries: a wrong base means probes mid-instruction.
fn resolve_text_start(data: &[u8], segs: &[Segment], pcln: &PclnTable, region: Region) -> Result<u64, GoBinError> {
    if !pcln.needs_text_start() {
        return Ok(0);
    }
    let tab = &data[region.offset..region.offset + region.len];
    let first = pcln.raw_entry(tab, 0).ok_or_else(|| GoBinError::Corrupt("empty functab".into()))?;
    let text = Some(pcln.header_text_start)
        .filter(|&t| t != 0)
        .or_else(|| {
            let funcname = region.vaddr.checked_add(pcln.funcname as u64)?;
            elf::moduledata_text(data, segs, region.vaddr, funcname, first)
        })
        .or_else(|| elf::symtab_func(data, b"runtime.text").map(|(v, _)| v))
        .ok_or_else(|| GoBinError::Corrupt("cannot locate runtime.text (moduledata not found)".into()))?;
    // The first function must be code, or the base is wrong.
    let first_entry = text.saturating_add(first);
    if !segs.iter().any(|s| s.executable() && first_entry >= s.vaddr && first_entry - s.vaddr < s.filesz) {
        return Err(GoBinError::Corrupt(format!("first function at {first_entry:#x} is not in an executable segment")));
    }
    Ok(text)
}

/// Find `runtime.pcheader` by its magic when section headers are missing.
fn scan_pclntab(data: &[u8], segs: &[Segment]) -> Option<Region> {
    const MAGICS: [u32; 3] = [pclntab::MAGIC_GO116, pclntab::MAGIC_GO118, pclntab::MAGIC_GO120];
    segs.iter().find_map(|seg| {
        let bytes = elf::seg_bytes(data, seg);
        let is_header = |b: &[u8]| {
            b.len() >= 8 && MAGICS.contains(&u32::from_le_bytes([b[0], b[1], b[2], b[3]])) && b[4..8] == [0, 0, 1, 8]
        };
        elf::scan(data, seg, 8, is_header)
            .find(|&i| {
                let tab = &bytes[i..];
                PclnTable::parse(tab).is_ok_and(|p| p.name(tab, 0).is_some_and(|n| !n.is_empty()))
            })
            .map(|i| Region { vaddr: seg.vaddr + i as u64, offset: seg.offset as usize + i, len: bytes.len() - i })
    })
}

/// Find the build info blob by its magic in writable segments.
fn scan_buildinfo<'d>(data: &'d [u8], segs: &[Segment]) -> Option<&'d [u8]> {
    segs.iter().filter(|s| s.writable()).find_map(|seg| {
        let bytes = elf::seg_bytes(data, seg);
        elf::scan(data, seg, buildinfo::ALIGN as u64, |b| b.starts_with(buildinfo::MAGIC)).next().map(|i| &bytes[i..])
    })
}
