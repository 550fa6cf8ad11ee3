//! Traces on the API-server-like target (tests/go/apiserver): every etcd and webhook call nested
//! under the API request that caused it, checked span by span against the ground truth (each
//! request's own namespace, found again in the etcd key and the webhook path of its calls), as
//! the OTLP receiver gets them. Both builds: Go 1.19 with the etcd client over grpc-go (its etcd
//! connection opened and used for every method before the tracer attaches), and Go 1.27 with the
//! standard library alone.

mod common;
mod concurrency;
mod etcd;
mod goroutines;
mod traceparent;
