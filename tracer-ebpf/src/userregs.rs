//! The user registers a task saved when it entered the kernel (x86-64 `struct pt_regs`).
//!
//! Hooks inside a syscall read its number and arguments from there: `orig_ax` is the syscall
//! number, `di, si, dx, r10` its first four arguments, and R14 holds a Go goroutine's `g`.

use aya_ebpf::helpers::generated;

/// The task's `struct pt_regs`, read in place. `bpf_task_pt_regs` returns a BTF-typed pointer,
/// so the verifier allows plain loads from it (guarded by the kernel's exception table) instead
/// of a `bpf_probe_read_kernel` copy of the whole block, which showed in profiles.
pub struct UserRegs(*const u64);

/// Word indexes in `struct pt_regs`: r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx,
/// si, di, orig_ax.
pub mod word {
    pub const R14: usize = 1;
    pub const R10: usize = 7;
    pub const DX: usize = 12;
    pub const SI: usize = 13;
    pub const DI: usize = 14;
    pub const ORIG_AX: usize = 15;
}

impl UserRegs {
    /// The current task's saved registers (`bpf_task_pt_regs`, Linux ≥ 5.15).
    #[inline(always)]
    pub fn current() -> Option<UserRegs> {
        let regs = unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) };
        if regs == 0 {
            return None;
        }
        Some(UserRegs(regs as *const u64))
    }

    #[inline(always)]
    fn word(&self, index: usize) -> u64 {
        // Volatile: one 8-byte load at the field's offset, as the verifier checks it against BTF.
        unsafe { core::ptr::read_volatile(self.0.add(index)) }
    }

    #[inline(always)]
    pub fn r14(&self) -> u64 {
        self.word(word::R14)
    }
    #[inline(always)]
    pub fn r10(&self) -> u64 {
        self.word(word::R10)
    }
    #[inline(always)]
    pub fn dx(&self) -> u64 {
        self.word(word::DX)
    }
    #[inline(always)]
    pub fn si(&self) -> u64 {
        self.word(word::SI)
    }
    #[inline(always)]
    pub fn di(&self) -> u64 {
        self.word(word::DI)
    }
    #[inline(always)]
    pub fn syscall(&self) -> i64 {
        self.word(word::ORIG_AX) as i64
    }
}

/// x86-64 syscall numbers.
pub mod nr {
    pub const READ: i64 = 0;
    pub const WRITE: i64 = 1;
    pub const CLOSE: i64 = 3;
    pub const READV: i64 = 19;
    pub const WRITEV: i64 = 20;
    pub const SENDFILE: i64 = 40;
    pub const CONNECT: i64 = 42;
    pub const ACCEPT: i64 = 43;
    pub const SENDTO: i64 = 44;
    pub const RECVFROM: i64 = 45;
    pub const SENDMSG: i64 = 46;
    pub const RECVMSG: i64 = 47;
    pub const SHUTDOWN: i64 = 48;
    pub const SPLICE: i64 = 275;
    pub const ACCEPT4: i64 = 288;
}
