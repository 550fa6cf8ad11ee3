//! etcd keys: the Kubernetes object kube-apiserver stores under a key.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::fields::{field, known_field, split_segments};
use crate::span::AttrStr as Text;

/// The Kubernetes object an etcd key belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdKeyInfo {
    /// Only set when the key itself carries the group (CRDs, custom
    /// resources, `apiregistration.k8s.io`, ...); most built-in groups are
    /// stored without it.
    pub group: Option<Text>,
    /// API resource name; storage-only prefixes are mapped back
    /// (`minions` → `nodes`, `services/specs` → `services`, ...).
    pub resource: Option<Text>,
    pub namespace: Option<Text>,
    pub name: Option<Text>,
    /// The key ends in `/`: a range (list/watch) over everything below it.
    pub is_prefix: bool,
}

/// Storage prefixes kube-apiserver uses instead of the resource name
/// (`specialDefaultResourcePrefixes`); two-segment ones come first.
const STORAGE_PREFIXES: &[(&[&str], &str)] = &[
    (&["services", "specs"], "services"),
    (&["services", "endpoints"], "endpoints"),
    (&["minions"], "nodes"),
    (&["controllers"], "replicationcontrollers"),
    (&["ingress"], "ingresses"),
    (&["podsecuritypolicy"], "podsecuritypolicies"),
];

/// Resources known to be cluster-scoped, so `<resource>/<x>/` is a name, not
/// a namespace. Unknown resources fall back to the segment-count rule.
const CLUSTER_SCOPED: &[&str] = &[
    "apiservices",
    "certificatesigningrequests",
    "clusterrolebindings",
    "clusterroles",
    "csidrivers",
    "csinodes",
    "customresourcedefinitions",
    "flowschemas",
    "ingressclasses",
    "ipaddresses",
    "masterleases",
    "mutatingwebhookconfigurations",
    "namespaces",
    "nodes",
    "persistentvolumes",
    "podsecuritypolicies",
    "priorityclasses",
    "prioritylevelconfigurations",
    "ranges",
    "runtimeclasses",
    "servicecidrs",
    "storageclasses",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "validatingwebhookconfigurations",
    "volumeattachments",
];

/// Map an etcd key under `prefix` (the apiserver's `--etcd-prefix`, default
/// `/registry`) to the object it stores. `None` if the key is not under it
/// (e.g. `compact_rev_key`).
///
/// Layout: `<prefix>/[<group>/]<resource>/[<namespace>/]<name>`. A first
/// segment with a dot is a group. After the resource, two segments are
/// namespace + name; one segment is a name, or a namespace when the key is a
/// range prefix (`/registry/pods/default/`). Without knowing a resource's
/// scope `/registry/pods/default` (never issued by the apiserver) and
/// `/registry/namespaces/default` look alike: both give `name`, and only the
/// `CLUSTER_SCOPED` table fixes the prefix case for cluster-scoped ones.
/// Other non-object keys come out literally (`/registry/health` → resource
/// `health`, `/registry/masterleases/10.0.0.1` → name `10.0.0.1`).
/// Invalid UTF-8 is replaced by U+FFFD.
pub fn parse_registry_key(prefix: &str, key: &[u8]) -> Option<EtcdKeyInfo> {
    // Like the etcd3 store: the key starts with `path.Join("/", prefix)` plus a slash. Matched in
    // place (one call per etcd span: formatting the prefix each time showed in profiles).
    let p = prefix.trim_matches('/');
    let after_root = key.strip_prefix(b"/")?;
    let after_prefix =
        if p.is_empty() { after_root } else { after_root.strip_prefix(p.as_bytes())?.strip_prefix(b"/")? };
    let rest = String::from_utf8_lossy(after_prefix);
    let is_prefix = rest.is_empty() || rest.ends_with('/');
    let rest = rest.strip_suffix('/').unwrap_or(&rest);
    // Every segment kept, empty ones too (unlike `split_path`).
    let segments = if rest.is_empty() { SmallVec::new() } else { split_segments(rest) };

    let (group, resource, rest) = split_group_resource(&segments);
    let cluster_scoped = resource.is_some_and(|r| CLUSTER_SCOPED.contains(&r));
    let (namespace, name) = match rest {
        [] => (None, None),
        [one] if is_prefix && !cluster_scoped => (Some(*one), None),
        [ns, name @ ..] if !cluster_scoped && !name.is_empty() => (Some(*ns), Some(joined(name))),
        all => (None, Some(joined(all))),
    };
    Some(EtcdKeyInfo {
        group: group.and_then(known_field),
        resource: resource.and_then(known_field),
        namespace: namespace.and_then(known_field),
        name: name.as_deref().and_then(field),
        is_prefix,
    })
}

/// Segments joined by `/`; one segment is borrowed as it is.
fn joined<'a>(segments: &[&'a str]) -> Cow<'a, str> {
    match segments {
        [one] => Cow::Borrowed(one),
        more => Cow::Owned(more.join("/")),
    }
}

/// Returns (group, resource, segments after the resource).
/// `segments` is borrowed for `'s`, its strings for `'a`.
fn split_group_resource<'s, 'a>(segments: &'s [&'a str]) -> (Option<&'a str>, Option<&'a str>, &'s [&'a str]) {
    match segments {
        [] => (None, None, &[]),
        [group, rest @ ..] if group.contains('.') => {
            (Some(*group), rest.first().copied(), rest.get(1..).unwrap_or(&[]))
        }
        [first, rest @ ..] => STORAGE_PREFIXES
            .iter()
            .find(|(storage, _)| segments.starts_with(storage))
            .map_or((None, Some(*first), rest), |(storage, resource)| {
                (None, Some(*resource), &segments[storage.len()..])
            }),
    }
}
