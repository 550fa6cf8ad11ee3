//! What the decoded messages mean: Kubernetes request info from an HTTP request, the objects
//! behind etcd registry keys, and etcd's gRPC messages. Built on the wire decoders of
//! `protocols`, never the other way round.

pub mod etcd;
pub mod k8s;
