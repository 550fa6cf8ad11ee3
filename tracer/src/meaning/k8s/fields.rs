//! Path segments as spans store them: capped copies, or constants for the well-known ones.

use smallvec::SmallVec;

use crate::protocols::truncate_str;
use crate::span::AttrStr as Text;

/// Cap for names and other path segments: k8s object names are DNS subdomains (≤ 253).
pub(super) const MAX_SEGMENT_LEN: usize = 253;

/// `s.split('/')`, empty segments included, on the stack: an API path has at most 9 segments,
/// and a vector allocated per request showed in every profile. A byte loop: `str::split`
/// searches for each `/` with a call, which cost more than the rest of the request info
/// together (callgrind, `agent_cost`).
pub(super) fn split_segments(s: &str) -> SmallVec<[&str; 12]> {
    let mut segments = SmallVec::new();
    let mut from = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b == b'/' {
            segments.push(&s[from..i]);
            from = i + 1;
        }
    }
    segments.push(&s[from..]);
    segments
}

/// A stored path segment: `None` when empty (Go's zero value), capped otherwise.
pub(super) fn field(s: &str) -> Option<Text> {
    (!s.is_empty()).then(|| Text::copy(truncate_str(s, MAX_SEGMENT_LEN)))
}

/// [`field`] for a segment that is most often one of a few well-known values (API prefix,
/// version, group, resource, subresource, namespace): those are constants, not copies, since
/// every span carries several of them.
pub(super) fn known_field(s: &str) -> Option<Text> {
    match well_known(s) {
        Some(k) => Some(Text::Static(k)),
        None => field(s),
    }
}

/// The segment as a constant when it is a common API prefix, version, group, resource,
/// subresource or namespace. A `match` on strings compares lengths first, so a miss is cheap.
fn well_known(s: &str) -> Option<&'static str> {
    /// Each value once: the arm returns the literal it matched.
    macro_rules! constants {
        ($($k:literal),* $(,)?) => {
            match s {
                $($k => Some($k),)*
                _ => None,
            }
        };
    }
    constants![
        "api",
        "apis",
        "v1",
        "v1beta1",
        "v1beta2",
        "v1beta3",
        "v1alpha1",
        "v2",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "certificates.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "scheduling.k8s.io",
        "node.k8s.io",
        "pods",
        "services",
        "endpoints",
        "endpointslices",
        "configmaps",
        "secrets",
        "nodes",
        "namespaces",
        "events",
        "leases",
        "serviceaccounts",
        "persistentvolumes",
        "persistentvolumeclaims",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "controllerrevisions",
        "jobs",
        "cronjobs",
        "ingresses",
        "networkpolicies",
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
        "customresourcedefinitions",
        "apiservices",
        "storageclasses",
        "csinodes",
        "csidrivers",
        "volumeattachments",
        "priorityclasses",
        "poddisruptionbudgets",
        "horizontalpodautoscalers",
        "resourcequotas",
        "limitranges",
        "replicationcontrollers",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "certificatesigningrequests",
        "flowschemas",
        "prioritylevelconfigurations",
        "status",
        "log",
        "exec",
        "attach",
        "portforward",
        "proxy",
        "binding",
        "eviction",
        "scale",
        "token",
        "finalize",
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ]
}
