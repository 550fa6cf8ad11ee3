//! Processes traced from their first instruction: short-lived Go clients (the real `kubectl`, the
//! stripped Go 1.27 client of `tests/go`) started after the tracer under `--comm`, one process per
//! run, each of whose requests must have its HTTP span, and a Go TLS server (`tests/go/apiserver`)
//! restarted under load, whose first request after each restart must have its span while the
//! agent's memory stays flat.

mod clients;
mod common;
mod restart;
