//! RET instruction finder. Go functions are probed at each RET with plain
//! uprobes because uretprobes break Go: the runtime moves goroutine stacks
//! and the return-address trampoline ends up in the wrong place.
//!
//! Also read from the code: whether a function keeps its first register
//! arguments in their spill slots (where a probe at its RET, or in its body,
//! can still read them), the branch of its stack check, and its direct calls
//! to a function. Where a probe goes matters: the kernel emulates a probed
//! branch or call in one trap, and single-steps most other instructions,
//! `ret` included, in two.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// Addresses of every `ret` (C3, C2 imm16) in `code`, which starts at virtual
/// address `ip`. Decoding is linear from the start, so `code` must begin at a
/// function entry and end at an instruction boundary. On an undecodable or
/// cut-off instruction, returns its address as the error: the caller must not
/// trust any offset then, since a uprobe inside an instruction corrupts it.
pub fn find_rets(code: &[u8], ip: u64) -> Result<Vec<u64>, u64> {
    // Mnemonic::Ret is near return only (far return is Retf).
    find_all(code, ip, |ins| ins.mnemonic() == Mnemonic::Ret)
}

/// Addresses of the direct calls (`call rel32`) to `target` in `code`, decoded as in
/// [`find_rets`].
pub fn direct_calls(code: &[u8], ip: u64, target: u64) -> Result<Vec<u64>, u64> {
    find_all(code, ip, |ins| {
        ins.mnemonic() == Mnemonic::Call && ins.op0_kind() == OpKind::NearBranch64 && ins.near_branch_target() == target
    })
}

/// Addresses of the instructions of `code` (at `ip`) that `wanted` picks, decoding linearly.
fn find_all(code: &[u8], ip: u64, wanted: impl Fn(&Instruction) -> bool) -> Result<Vec<u64>, u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut found = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            return Err(ins.ip());
        }
        if wanted(&ins) {
            found.push(ins.ip());
        }
    }
    Ok(found)
}

/// The frame of the function at `ip` (its code in `code`): how many bytes RSP is below the return
/// address in its body, when the function stores RAX, RBX and RCX, its first three integer
/// arguments in Go's register ABI, into their spill slots above the return address (entry
/// RSP + 8, + 16, + 24) before its first call. Those slots belong to the caller's frame: the
/// function does not reuse them, so until it returns they hold the arguments. A probe in the
/// body finds the receiver at RSP + frame + 8, one at a RET at RSP + 8.
///
/// Decoded from the entry: the stack check (`cmp` and a forward branch to morestack), `push rbp`
/// and `sub rsp, N` give the frame size; any other change of RSP, a call, a return or a jump ends
/// the search.
pub fn arg_spill_frame(code: &[u8], ip: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    // Bytes RSP is below its value at entry.
    let mut below: u64 = 0;
    let mut found = [false; 3];
    for _ in 0..64 {
        if !decoder.can_decode() {
            return None;
        }
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            return None;
        }
        match ins.flow_control() {
            FlowControl::Next => {}
            // The stack check's branch to morestack is taken only when the stack must grow.
            FlowControl::ConditionalBranch => continue,
            _ => return None,
        }
        match ins.mnemonic() {
            Mnemonic::Push if ins.op0_register() == Register::RBP => below += 8,
            Mnemonic::Sub
                if ins.op0_register() == Register::RSP
                    && matches!(ins.op1_kind(), OpKind::Immediate8to64 | OpKind::Immediate32to64) =>
            {
                below = below.checked_add(ins.immediate(1))?;
            }
            Mnemonic::Mov
                if ins.op0_kind() == OpKind::Memory
                    && ins.memory_base() == Register::RSP
                    && ins.memory_index() == Register::None =>
            {
                let slot = ins.memory_displacement64() as i64 - below as i64 - 8;
                let arg = match (slot, ins.op1_register()) {
                    (0, Register::RAX) => 0,
                    (8, Register::RBX) => 1,
                    (16, Register::RCX) => 2,
                    _ => continue,
                };
                found[arg] = true;
                if found == [true; 3] {
                    return Some(below);
                }
            }
            // The stack check compares RSP; anything else naming it first may move it.
            Mnemonic::Cmp | Mnemonic::Test => {}
            _ if ins.op0_register() == Register::RSP => return None,
            _ => {}
        }
    }
    None
}

/// The address of the conditional branch that ends Go's stack check (`cmp rsp or r12,
/// [r14+0x10]` — the goroutine's stack guard — then `jbe` to morestack), if the function at `ip`
/// starts with one. The registers still hold the arguments there, and a probe on a branch costs
/// one trap where most instructions cost two (the kernel emulates branches; others it
/// single-steps). The branch is taken when the stack must grow: morestack then restarts the
/// function from its entry, so a probe there that reports a call must skip the run whose
/// flags say the branch is taken (CF or ZF set).
pub fn stack_check_branch(code: &[u8], ip: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut checked = false;
    for _ in 0..3 {
        if !decoder.can_decode() {
            return None;
        }
        decoder.decode_out(&mut ins);
        match ins.mnemonic() {
            // Large frames compare the future stack pointer: lea r12, [rsp-N].
            Mnemonic::Lea if ins.op0_register() == Register::R12 && ins.memory_base() == Register::RSP => {}
            Mnemonic::Cmp
                if matches!(ins.op0_register(), Register::RSP | Register::R12)
                    && ins.op1_kind() == OpKind::Memory
                    && ins.memory_base() == Register::R14
                    && ins.memory_displacement64() == 0x10 =>
            {
                checked = true
            }
            // Go's JLS: unsigned lower or same.
            Mnemonic::Jbe if checked => return Some(ins.ip()),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{arg_spill_frame, direct_calls, find_rets, stack_check_branch};

    #[test]
    fn finds_the_branch_of_both_stack_checks() {
        // Small frame: cmp rsp, [r14+0x10]; jbe; push rbp
        assert_eq!(stack_check_branch(&READ_PROLOGUE, 0x5bfce0), Some(0x5bfce4));
        // Large frame, crypto/tls.(*Conn).Write in Go 1.27: lea r12, [rsp-0x48];
        // cmp r12, [r14+0x10]; jbe; push rbp
        let write = [0x4c, 0x8d, 0x64, 0x24, 0xb8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xb3, 0x07, 0x00, 0x00, 0x55];
        assert_eq!(stack_check_branch(&write, 0x5be840), Some(0x5be849));
        // Go 1.19 (etcd's Read): no push rbp after the branch.
        assert_eq!(stack_check_branch(&READ_PROLOGUE_GO119, 0x6388c0), Some(0x6388c4));
        // No stack check (a NOSPLIT function): none.
        assert_eq!(stack_check_branch(&[0x55, 0x48, 0x89, 0xe5, 0xc3], 0x10), None);
        // A comparison with another field is not the stack guard.
        let mut other = READ_PROLOGUE;
        other[3] = 0x18;
        assert_eq!(stack_check_branch(&other, 0x10), None);
        // Another condition (jb) is not Go's stack check branch.
        let mut jb = READ_PROLOGUE;
        jb[5] = 0x82;
        assert_eq!(stack_check_branch(&jb, 0x10), None);
    }

    /// The prologue of crypto/tls.(*Conn).Read as Go 1.27 compiles it.
    const READ_PROLOGUE: [u8; 41] = [
        0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
        0x0f, 0x86, 0x51, 0x03, 0x00, 0x00, // jbe morestack
        0x55, // push rbp
        0x48, 0x89, 0xe5, // mov rbp, rsp
        0x48, 0x83, 0xec, 0x58, // sub rsp, 0x58
        0x66, 0x44, 0x0f, 0xd6, 0x7c, 0x24, 0x50, // movq [rsp+0x50], xmm15
        0x48, 0x89, 0x44, 0x24, 0x68, // mov [rsp+0x68], rax
        0x48, 0x89, 0x4c, 0x24, 0x78, // mov [rsp+0x78], rcx
        0x48, 0x89, 0x5c, 0x24, 0x70, // mov [rsp+0x70], rbx
        0xc3,
    ];

    /// The prologue of crypto/tls.(*Conn).Read as Go 1.19 compiles it (Debian's etcd).
    const READ_PROLOGUE_GO119: [u8; 54] = [
        0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
        0x0f, 0x86, 0xc2, 0x03, 0x00, 0x00, // jbe morestack
        0x48, 0x83, 0xec, 0x68, // sub rsp, 0x68
        0x48, 0x89, 0x6c, 0x24, 0x60, // mov [rsp+0x60], rbp
        0x48, 0x8d, 0x6c, 0x24, 0x60, // lea rbp, [rsp+0x60]
        0x49, 0xc7, 0xc5, 0x00, 0x00, 0x00, 0x00, // mov r13, 0
        0x4c, 0x89, 0x6c, 0x24, 0x58, // mov [rsp+0x58], r13
        0x48, 0x89, 0x8c, 0x24, 0x80, 0x00, 0x00, 0x00, // mov [rsp+0x80], rcx
        0x48, 0x89, 0x5c, 0x24, 0x78, // mov [rsp+0x78], rbx
        0x48, 0x89, 0x44, 0x24, 0x70, // mov [rsp+0x70], rax
    ];

    #[test]
    fn go_read_prologues_spill_receiver_and_slice() {
        // push rbp + sub rsp, 0x58: the receiver is at RSP + 0x60 + 8 in the body.
        assert_eq!(arg_spill_frame(&READ_PROLOGUE, 0x5bfce0), Some(0x60));
        assert_eq!(arg_spill_frame(&READ_PROLOGUE_GO119, 0x6388c0), Some(0x68));
    }

    #[test]
    fn missing_or_misplaced_spills_are_refused() {
        // Without the store of RBX.
        let mut no_rbx = READ_PROLOGUE.to_vec();
        no_rbx.drain(35..40);
        assert_eq!(arg_spill_frame(&no_rbx, 0x1000), None);
        // A frame 8 bytes larger: the stores no longer hit the argument slots.
        let mut other_frame = READ_PROLOGUE;
        other_frame[17] = 0x60;
        assert_eq!(arg_spill_frame(&other_frame, 0x1000), None);
        // A call before the stores.
        let mut call_first = vec![0xe8, 0, 0, 0, 0];
        call_first.extend_from_slice(&READ_PROLOGUE);
        assert_eq!(arg_spill_frame(&call_first, 0x1000), None);
    }

    #[test]
    fn finds_direct_calls_to_one_target() {
        // The copy of Go 1.27's Read (bytes.Reader.Read inlined): mov [rsp+0x28], rcx;
        // call runtime.memmove; then call rax (indirect), call elsewhere, call memmove again.
        let code = [
            0x48, 0x89, 0x4c, 0x24, 0x28, // 0x5bfebe mov [rsp+0x28], rcx
            0xe8, 0xf8, 0xce, 0xec, 0xff, // 0x5bfec3 call 0x48cdc0
            0xff, 0xd0, // 0x5bfec8 call rax
            0xe8, 0x00, 0x00, 0x00, 0x00, // 0x5bfeca call 0x5bfecf
            0xe8, 0xec, 0xce, 0xec, 0xff, // 0x5bfecf call 0x48cdc0
        ];
        assert_eq!(direct_calls(&code, 0x5bfebe, 0x48cdc0), Ok(vec![0x5bfec3, 0x5bfecf]));
        assert_eq!(direct_calls(&code, 0x5bfebe, 0x1234), Ok(vec![]));
        assert_eq!(direct_calls(&[0x90, 0x06], 0x10, 0x1234), Err(0x11));
    }

    #[test]
    fn finds_both_ret_forms() {
        // push rbp; ret; ret 8; mov eax, 0xc3c3c3c3 (C3 bytes inside an imm); int3
        let code = [0x55, 0xc3, 0xc2, 0x08, 0x00, 0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xcc];
        assert_eq!(find_rets(&code, 0x1000), Ok(vec![0x1001, 0x1002]));
    }

    #[test]
    fn rejects_bad_code() {
        // 0x06 (push es) does not exist in 64-bit mode.
        assert_eq!(find_rets(&[0x90, 0x06, 0xc3], 0x10), Err(0x11));
        // call rel32 cut off by the end of the range.
        assert_eq!(find_rets(&[0xc3, 0xe8, 0x00], 0x10), Err(0x11));
        assert_eq!(find_rets(&[], 0x10), Ok(vec![]));
    }
}
