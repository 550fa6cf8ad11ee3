//! Fuzz the Go binary parser: arbitrary bytes must give Ok or Err, never a
//! panic, hang or out-of-bounds read. Useful seed: a stripped Go binary
//! (e.g. tests/go/https-server built with -ldflags="-s -w", ~7 MiB; run with
//! -max_len above its size), since random bytes rarely get past the ELF header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bin) = tracer::internals::GoBinary::from_bytes(data.to_vec()) {
        let _ = bin.go_version();
        let _ = bin.module_path();
        let _ = bin.register_abi();
        // Walk the function table and decode code: the deep paths. main.main
        // exists in every Go program, crypto/tls only in some.
        if let Some(f) = bin.function("main.main") {
            let _ = bin.ret_offsets(&f);
        }
        let _ = bin.tls_probe_points();
    }
});
