#![no_main]
//! Ring-buffer records as the agent parses them: corrupt bytes are errors, never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tracer::internals::parse_event(data);
});
