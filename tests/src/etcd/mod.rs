//! etcd as the tests meet it: real servers and clients ([`server`], [`grpc_client`]) and what its
//! spans must be ([`checks`]).
//!
//! Everything listens and connects on 127.0.0.1. Missing tools make tests fail with a clear
//! message: nothing is skipped.

mod checks;
mod grpc_client;
mod server;

pub use checks::*;
pub use grpc_client::*;
pub use server::*;
