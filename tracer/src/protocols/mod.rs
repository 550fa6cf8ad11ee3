//! Protocol decoders. Each consumes `stream::Segment`s and knows nothing of the kernel.

pub mod etcd;
pub mod etcd_proto;
pub mod grpc;
pub mod hpack;
pub mod http1;
pub mod http2;
pub mod k8s;
