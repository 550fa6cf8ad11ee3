//! RET instruction finder. Go functions are probed at each RET with plain
//! uprobes because uretprobes break Go: the runtime moves goroutine stacks
//! and the return-address trampoline ends up in the wrong place.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

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

#[cfg(test)]
mod tests {
    use super::find_rets;

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
