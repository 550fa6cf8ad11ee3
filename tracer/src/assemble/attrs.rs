//! Attribute sets shared by span kinds, and span construction.

use std::sync::Arc;

use crate::{
    connections::Endpoint,
    meaning::k8s,
    span::{AttrStr, AttrValue, LatencyClass, ProcessInfo, SpanKind, SpanRecord, SpanStatus},
    stream::Role,
};

use super::Conn;

pub type Attrs = crate::span::Attributes;

fn push_addr(a: &mut Attrs, addr_key: &'static str, port_key: &'static str, ep: Option<&Endpoint>) {
    if let Some(ep) = ep {
        a.push((addr_key, ep.address.clone().into()));
        a.push((port_key, ep.port.into()));
    }
}

/// Room for an HTTP/1 span's attributes, in a vector that is new (the exporter returns vectors
/// for reuse, see `span::recycle`): growing the vector showed in profiles. 25 hold the most an
/// HTTP/1 span carries: 7 transport, 10 HTTP and 8 k8s attributes. 25 × 40 bytes stays within
/// glibc's per-thread cache (1032 bytes); at 32, each span's allocation made glibc consolidate
/// its free lists, which showed in the agent's profile.
const ATTRS_CAPACITY: usize = 25;

/// Transport attributes of a connection, by role: for a server span the peer is the client.
pub fn connection(conn: &Conn) -> Attrs {
    let mut a = crate::span::new_attributes(ATTRS_CAPACITY);
    a.push(("network.transport", "tcp".into()));
    let (local, peer) = (conn.local_endpoint(), conn.peer_endpoint());
    push_addr(&mut a, "network.peer.address", "network.peer.port", peer);
    let (client, server) = match conn.role {
        Role::Server => (peer, local),
        Role::Client => (local, peer),
    };
    push_addr(&mut a, "server.address", "server.port", server);
    push_addr(&mut a, "client.address", "client.port", client);
    a
}

/// `url.scheme` of an HTTP request on `conn`: `https` once Go TLS plaintext was seen on it.
pub fn url_scheme(conn: &Conn) -> &'static str {
    if conn.plaintext { "https" } else { "http" }
}

/// The name the client asked for (Host, `:authority`) as `server.address`, in place of the
/// connection's address; when it is that address, as it is for a client that dials an IP,
/// nothing is copied.
pub fn set_server_address(a: &mut Attrs, host: &str) {
    match a.iter_mut().find(|(k, _)| *k == "server.address") {
        Some((_, AttrValue::Str(v))) if **v == *host => {}
        Some((_, v)) => *v = AttrStr::copy(host).into(),
        None => a.push(("server.address", AttrStr::copy(host).into())),
    }
}

pub fn new_span(
    name: String,
    kind: SpanKind,
    start_unix_nano: u64,
    end_unix_nano: u64,
    status: SpanStatus,
    attributes: Attrs,
    process: Arc<ProcessInfo>,
) -> SpanRecord {
    SpanRecord {
        // Ids are correlation's: it gives them when the span leaves assembly.
        trace_id: [0; 16],
        span_id: [0; 8],
        parent_span_id: None,
        name,
        kind,
        start_unix_nano,
        end_unix_nano: end_unix_nano.max(start_unix_nano),
        status,
        attributes,
        process,
        remote_parent: None,
        latency_class: LatencyClass::Other,
        sampled: true,
        origin: Default::default(),
    }
}

/// The Kubernetes request attributes of a resource request.
pub fn k8s_attrs(info: k8s::RequestInfo, a: &mut Attrs) {
    if !info.is_resource_request {
        return;
    }
    a.push(("k8s.verb", info.verb.into()));
    for (key, v) in [
        ("k8s.api.group", info.api_group),
        ("k8s.api.version", info.api_version),
        ("k8s.resource", info.resource),
        ("k8s.subresource", info.subresource),
        ("k8s.namespace.name", info.namespace),
        ("k8s.object.name", info.name),
    ] {
        if let Some(v) = v {
            a.push((key, v.into()));
        }
    }
    if info.long_running {
        a.push(("k8s.long_running", true.into()));
    }
}

/// The latency class of a request (see [`LatencyClass`]), by the scope the apiserver's own request
/// metrics give it: a named object or a create, else a namespace, else the cluster. Long-running
/// requests (watches included) are streaming.
pub fn latency_class(info: &k8s::RequestInfo) -> LatencyClass {
    if info.long_running {
        LatencyClass::Streaming
    } else if !info.is_resource_request {
        LatencyClass::Other
    } else if info.name.is_some() || &*info.verb == "create" {
        LatencyClass::SingleObject
    } else if info.namespace.is_some() {
        LatencyClass::NamespaceCollection
    } else {
        LatencyClass::ClusterCollection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_classes_follow_the_request_scope() {
        for (method, target, class) in [
            ("GET", "/api/v1/namespaces/default/pods/web-0", LatencyClass::SingleObject),
            ("PUT", "/api/v1/namespaces/default/pods/web-0", LatencyClass::SingleObject),
            ("POST", "/api/v1/namespaces/default/pods", LatencyClass::SingleObject),
            ("GET", "/api/v1/namespaces/default/pods", LatencyClass::NamespaceCollection),
            ("DELETE", "/api/v1/namespaces/default/pods", LatencyClass::NamespaceCollection),
            ("GET", "/api/v1/pods", LatencyClass::ClusterCollection),
            ("GET", "/api/v1/namespaces", LatencyClass::ClusterCollection),
            ("GET", "/api/v1/namespaces/default", LatencyClass::SingleObject),
            ("GET", "/api/v1/pods?watch=true", LatencyClass::Streaming),
            ("GET", "/api/v1/namespaces/default/pods/web-0/log?follow=true", LatencyClass::Streaming),
            ("GET", "/healthz", LatencyClass::Other),
            ("GET", "/apis", LatencyClass::Other),
        ] {
            assert_eq!(latency_class(&k8s::request_info(method, target)), class, "{method} {target}");
        }
    }

    #[test]
    fn attribute_vector_fits_glibc_thread_cache() {
        assert!(ATTRS_CAPACITY * size_of::<(&str, AttrValue)>() <= 1032);
    }
}
