//! ELF plumbing: header checks, PT_LOAD mapping (uprobes take file offsets),
//! section lookup, and the scans used when section headers are gone.

use object::LittleEndian as LE;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Rela, SectionHeader, Sym};

use super::GoBinError;
use super::pclntab::u64_at;

pub(crate) type Elf64 = elf::FileHeader64<LE>;

/// A PT_LOAD segment's file-backed part.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

impl Segment {
    /// File offset of `addr`, if this segment maps it from file.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        (addr >= self.vaddr && addr - self.vaddr < self.filesz).then(|| self.offset + (addr - self.vaddr))
    }

    pub fn executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
}

/// A table located in the file: its virtual address and file range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Region {
    pub vaddr: u64,
    pub offset: usize,
    pub len: usize,
}

fn bad(e: object::read::Error) -> GoBinError {
    GoBinError::BadElf(e.to_string())
}

/// Check ident and machine ourselves for precise errors, then let `object`
/// validate the rest.
pub(crate) fn header(data: &[u8]) -> Result<&Elf64, GoBinError> {
    if data.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(GoBinError::NotElf);
    }
    if data.len() < 64 {
        return Err(GoBinError::BadElf(format!("truncated ELF header ({} bytes)", data.len())));
    }
    match (data[4], data[5]) {
        (elf::ELFCLASS32, _) => return Err(GoBinError::UnsupportedArch("32-bit ELF".into())),
        (elf::ELFCLASS64, elf::ELFDATA2MSB) => {
            return Err(GoBinError::UnsupportedArch("big-endian ELF".into()));
        }
        (elf::ELFCLASS64, elf::ELFDATA2LSB) => {}
        _ => {
            return Err(GoBinError::BadElf("invalid ELF class or data encoding".into()));
        }
    }
    let machine = u16::from_le_bytes([data[18], data[19]]);
    if machine != elf::EM_X86_64 {
        let name = match machine {
            elf::EM_AARCH64 => "aarch64".to_string(),
            elf::EM_386 => "i386".to_string(),
            elf::EM_ARM => "arm".to_string(),
            elf::EM_RISCV => "riscv".to_string(),
            elf::EM_PPC64 => "ppc64".to_string(),
            elf::EM_S390 => "s390x".to_string(),
            m => format!("ELF machine {m}"),
        };
        return Err(GoBinError::UnsupportedArch(name));
    }
    Elf64::parse(data).map_err(bad)
}

/// PT_LOAD segments; a segment whose file range runs past EOF means the file
/// is truncated, which we report rather than half-analyse.
pub(crate) fn load_segments(hdr: &Elf64, data: &[u8]) -> Result<Vec<Segment>, GoBinError> {
    let phdrs = hdr.program_headers(LE, data).map_err(bad)?;
    let mut segs = Vec::new();
    for ph in phdrs.iter().filter(|ph| ph.p_type(LE) == elf::PT_LOAD) {
        let seg =
            Segment { vaddr: ph.p_vaddr(LE), offset: ph.p_offset(LE), filesz: ph.p_filesz(LE), flags: ph.p_flags(LE) };
        let end = seg.offset.checked_add(seg.filesz);
        if end.is_none_or(|e| e > data.len() as u64) || seg.vaddr.checked_add(seg.filesz).is_none() {
            return Err(GoBinError::BadElf(format!(
                "segment at file offset {:#x} (+{:#x}) runs past the end of the file ({:#x} bytes): truncated?",
                seg.offset,
                seg.filesz,
                data.len()
            )));
        }
        segs.push(seg);
    }
    if segs.is_empty() {
        return Err(GoBinError::BadElf("no loadable segments".into()));
    }
    Ok(segs)
}

/// Section headers may be absent (then we scan segments) but not broken:
/// a cut-off table means a truncated file.
pub(crate) fn check_sections(hdr: &Elf64, data: &[u8]) -> Result<(), GoBinError> {
    hdr.sections(LE, data)
        .map(drop)
        .map_err(|e| GoBinError::BadElf(format!("{e} (section headers past the end of the file: truncated?)")))
}

/// A section's address and file range, if it exists and lies inside the file.
/// Unreadable section headers count as absent: callers then scan segments.
pub(crate) fn section(data: &[u8], name: &[u8]) -> Option<Region> {
    let hdr = Elf64::parse(data).ok()?;
    let sections = hdr.sections(LE, data).ok()?;
    let (_, sh) = sections.section_by_name(LE, name)?;
    let (offset, len) = sh.file_range(LE)?;
    let (offset, len) = (usize::try_from(offset).ok()?, usize::try_from(len).ok()?);
    data.get(offset..offset.checked_add(len)?)?;
    Some(Region { vaddr: sh.sh_addr(LE), offset, len })
}

/// (value, size) of a function symbol in `.symtab`, for unstripped binaries.
pub(crate) fn symtab_func(data: &[u8], name: &[u8]) -> Option<(u64, u64)> {
    let hdr = Elf64::parse(data).ok()?;
    let sections = hdr.sections(LE, data).ok()?;
    let symtab = sections.symbols(LE, data, elf::SHT_SYMTAB).ok()?;
    symtab
        .iter()
        .find(|s| s.st_type() == elf::STT_FUNC && s.name(LE, symtab.strings()) == Ok(name))
        .map(|s| (s.st_value(LE), s.st_size(LE)))
}

/// File bytes of segment `seg`.
pub(crate) fn seg_bytes<'d>(data: &'d [u8], seg: &Segment) -> &'d [u8] {
    // load_segments checked the range.
    &data[seg.offset as usize..(seg.offset + seg.filesz) as usize]
}

/// Offsets (within the segment) of `align`-aligned virtual addresses where
/// `pred(bytes_from_there)` holds.
pub(crate) fn scan<'d>(
    data: &'d [u8],
    seg: &Segment,
    align: u64,
    pred: impl Fn(&'d [u8]) -> bool,
) -> impl Iterator<Item = usize> {
    let bytes = seg_bytes(data, seg);
    let first = (align - seg.vaddr % align) % align;
    (first as usize..bytes.len()).step_by(align as usize).filter(move |&i| pred(&bytes[i..]))
}

/// Text start from the runtime's `moduledata`, whose fields `pcHeader` and
/// `text` point at the pclntab and at runtime.text. Go >= 1.26 no longer
/// stores textStart in the pclntab header, and `.text` is not runtime.text
/// when an external linker put C code first.
///
/// moduledata (amd64, Go 1.16+): +0 pcHeader, +8 funcnametab.ptr, ...,
/// +160 minpc, +168 maxpc, +176 text. Accepted only if minpc equals
/// text + first functab offset, so a stray matching word is not taken.
pub(crate) fn moduledata_text(
    data: &[u8],
    segs: &[Segment],
    pcln_vaddr: u64,
    funcname_vaddr: u64,
    first_entry_off: u64,
) -> Option<u64> {
    let check = |ptr: &dyn Fn(u64) -> Option<u64>, md: u64| -> Option<u64> {
        if ptr(md.checked_add(8)?)? != funcname_vaddr {
            return None;
        }
        let (minpc, text) = (ptr(md.checked_add(160)?)?, ptr(md.checked_add(176)?)?);
        (text != 0 && text.checked_add(first_entry_off) == Some(minpc)).then_some(text)
    };
    let file_word = |addr: u64| read_u64(data, segs, addr);
    for seg in segs.iter().filter(|s| s.writable()) {
        let found = scan(data, seg, 8, |b| u64_at(b, 0) == Some(pcln_vaddr))
            .find_map(|i| check(&file_word, seg.vaddr + i as u64));
        if found.is_some() {
            return found;
        }
    }
    // PIE linked by a linker that leaves relocated words 0 in the file (lld):
    // read pointers from R_X86_64_RELATIVE addends instead.
    let relocs = relative_relocs(data);
    if relocs.is_empty() {
        return None;
    }
    let reloc_word = |addr: u64| match file_word(addr) {
        Some(0) | None => relocs.get(&addr).copied(),
        w => w,
    };
    relocs.iter().filter(|&(_, &addend)| addend == pcln_vaddr).find_map(|(&md, _)| check(&reloc_word, md))
}

/// R_X86_64_RELATIVE relocations (offset -> addend) from SHT_RELA sections.
fn relative_relocs(data: &[u8]) -> std::collections::HashMap<u64, u64> {
    let mut map = std::collections::HashMap::new();
    let Ok(hdr) = Elf64::parse(data) else {
        return map;
    };
    let Ok(sections) = hdr.sections(LE, data) else {
        return map;
    };
    for sh in sections.iter() {
        if let Ok(Some((relas, _))) = sh.rela(LE, data) {
            for r in relas.iter().filter(|r| r.r_type(LE, false) == elf::R_X86_64_RELATIVE) {
                map.insert(r.r_offset(LE), r.r_addend(LE) as u64);
            }
        }
    }
    map
}

/// File offset of a virtual address, via the PT_LOAD that maps it from file.
pub(crate) fn vaddr_to_offset(segs: &[Segment], addr: u64) -> Option<u64> {
    segs.iter().find_map(|s| s.file_offset(addr))
}

/// `len` file-backed bytes at `addr`, all inside one segment.
pub(crate) fn read_vaddr<'d>(data: &'d [u8], segs: &[Segment], addr: u64, len: u64) -> Option<&'d [u8]> {
    let seg = segs.iter().find(|s| addr >= s.vaddr && addr - s.vaddr < s.filesz)?;
    let rel = addr - seg.vaddr;
    if len > seg.filesz - rel {
        return None;
    }
    let start = usize::try_from(seg.offset + rel).ok()?;
    data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
}

fn read_u64(data: &[u8], segs: &[Segment], addr: u64) -> Option<u64> {
    u64_at(read_vaddr(data, segs, addr, 8)?, 0)
}
