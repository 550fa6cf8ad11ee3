#![no_std]
// The probes live in the `tracer` binary target (src/main.rs); this lib only exists so the
// userspace crate can declare a build-dependency on this package (see aya-build).
