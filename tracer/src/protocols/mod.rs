//! Protocol decoders. Each consumes `stream::Segment`s and knows nothing of the kernel.

pub mod http1;
pub mod k8s;
