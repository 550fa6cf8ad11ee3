//! RET instruction finder. Go functions are probed at each RET with plain
//! uprobes because uretprobes break Go: the runtime moves goroutine stacks
//! and the return-address trampoline ends up in the wrong place.
//!
//! Also read from the code: whether a function keeps its first register
//! arguments in their spill slots (where a probe at its RET can still read
//! them), and where its stack check ends (a probe there runs once per call).

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// Addresses of every `ret` (C3, C2 imm16) in `code`, which starts at virtual
/// address `ip`. Decoding is linear from the start, so `code` must begin at a
/// function entry and end at an instruction boundary. On an undecodable or
/// cut-off instruction, returns its address as the error: the caller must not
/// trust any offset then, since a uprobe inside an instruction corrupts it.
pub fn find_rets(code: &[u8], ip: u64) -> Result<Vec<u64>, u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut rets = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            return Err(ins.ip());
        }
        // Mnemonic::Ret is near return only (far return is Retf).
        if ins.mnemonic() == Mnemonic::Ret {
            rets.push(ins.ip());
        }
    }
    Ok(rets)
}

/// Whether the function at `ip` (its code in `code`) stores RAX, RBX and RCX,
/// its first three integer arguments in Go's register ABI, into their spill
/// slots above the return address (entry RSP + 8, + 16, + 24) before its first
/// call. Those slots belong to the caller's frame: the function does not reuse
/// them, so at its RET they still hold the arguments.
///
/// Decoded from the entry: the stack check (`cmp` and a forward branch to
/// morestack), `push rbp` and `sub rsp, N` give the frame size; any other
/// change of RSP, a call, a return or a jump ends the search.
pub fn spills_first_three_args(code: &[u8], ip: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    // Bytes RSP is below its value at entry.
    let mut below: i64 = 0;
    let mut found = [false; 3];
    for _ in 0..64 {
        if !decoder.can_decode() {
            return false;
        }
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            return false;
        }
        match ins.flow_control() {
            FlowControl::Next => {}
            // The stack check's branch to morestack is taken only when the stack must grow.
            FlowControl::ConditionalBranch => continue,
            _ => return false,
        }
        match ins.mnemonic() {
            Mnemonic::Push if ins.op0_register() == Register::RBP => below += 8,
            Mnemonic::Sub
                if ins.op0_register() == Register::RSP
                    && matches!(ins.op1_kind(), OpKind::Immediate8to64 | OpKind::Immediate32to64) =>
            {
                below += ins.immediate(1) as i64;
            }
            Mnemonic::Mov if ins.op0_kind() == OpKind::Memory && ins.memory_base() == Register::RSP && ins.memory_index() == Register::None => {
                let slot = ins.memory_displacement64() as i64 - below - 8;
                let arg = match (slot, ins.op1_register()) {
                    (0, Register::RAX) => 0,
                    (8, Register::RBX) => 1,
                    (16, Register::RCX) => 2,
                    _ => continue,
                };
                found[arg] = true;
                if found == [true; 3] {
                    return true;
                }
            }
            // The stack check compares RSP; anything else naming it first may move it.
            Mnemonic::Cmp | Mnemonic::Test => {}
            _ if ins.op0_register() == Register::RSP => return false,
            _ => {}
        }
    }
    false
}

/// The address of the first instruction after Go's stack check (`cmp rsp or r12,
/// [r14+0x10]` — the goroutine's stack guard — then a conditional branch to
/// morestack), if the function at `ip` starts with one. A probe there runs
/// once per call: a probe at the entry runs again when the stack must grow,
/// since morestack restarts the function from its entry. The registers still
/// hold the arguments there.
pub fn after_stack_check(code: &[u8], ip: u64) -> Option<u64> {
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
            _ if checked && ins.flow_control() == FlowControl::ConditionalBranch => {
                return Some(ins.next_ip());
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{after_stack_check, find_rets, spills_first_three_args};

    #[test]
    fn finds_the_end_of_both_stack_checks() {
        // Small frame: cmp rsp, [r14+0x10]; jbe; push rbp
        assert_eq!(after_stack_check(&READ_PROLOGUE, 0x5bfce0), Some(0x5bfcea));
        // Large frame, crypto/tls.(*Conn).Write in Go 1.27: lea r12, [rsp-0x48];
        // cmp r12, [r14+0x10]; jbe; push rbp
        let write = [
            0x4c, 0x8d, 0x64, 0x24, 0xb8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xb3, 0x07, 0x00,
            0x00, 0x55,
        ];
        assert_eq!(after_stack_check(&write, 0x5be840), Some(0x5be84f));
        // No stack check (a NOSPLIT function): none.
        assert_eq!(after_stack_check(&[0x55, 0x48, 0x89, 0xe5, 0xc3], 0x10), None);
        // A comparison with another field is not the stack guard.
        let mut other = READ_PROLOGUE;
        other[3] = 0x18;
        assert_eq!(after_stack_check(&other, 0x10), None);
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

    #[test]
    fn go_read_prologue_spills_receiver_and_slice() {
        assert!(spills_first_three_args(&READ_PROLOGUE, 0x5bfce0));
    }

    #[test]
    fn missing_or_misplaced_spills_are_refused() {
        // Without the store of RBX.
        let mut no_rbx = READ_PROLOGUE.to_vec();
        no_rbx.drain(35..40);
        assert!(!spills_first_three_args(&no_rbx, 0x1000));
        // A frame 8 bytes larger: the stores no longer hit the argument slots.
        let mut other_frame = READ_PROLOGUE;
        other_frame[17] = 0x60;
        assert!(!spills_first_three_args(&other_frame, 0x1000));
        // A call before the stores.
        let mut call_first = vec![0xe8, 0, 0, 0, 0];
        call_first.extend_from_slice(&READ_PROLOGUE);
        assert!(!spills_first_three_args(&call_first, 0x1000));
    }

    #[test]
    fn finds_both_ret_forms() {
        // push rbp; ret; ret 8; mov eax, 0xc3c3c3c3 (C3 bytes inside an imm); int3
        let code = [
            0x55, 0xc3, 0xc2, 0x08, 0x00, 0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xcc,
        ];
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
