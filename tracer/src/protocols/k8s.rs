//! Kubernetes semantics for traffic seen by the tracer.
//!
//! * [`request_info`] turns an HTTP method + request-target into the same
//!   `RequestInfo` kube-apiserver's `RequestInfoFactory`
//!   (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`) derives, plus a
//!   low-cardinality route template for span names.
//! * [`parse_registry_key`] / [`printable_key`] describe the etcd keys
//!   kube-apiserver reads and writes.
//!
//! Everything here handles hostile input (it comes from captured traffic):
//! nothing panics and every stored string is capped.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::truncate_str;
pub use crate::span::AttrStr as Text;

/// Cap for names and other path segments: k8s object names are DNS subdomains (≤ 253).
const MAX_SEGMENT_LEN: usize = 253;
/// Cap for `path` and `route`.
const MAX_PATH_LEN: usize = 2048;
/// Cap for a lowercased method used as a non-resource verb.
const MAX_VERB_LEN: usize = 32;

/// Path-prefix verbs (`/api/v1/watch/...`, `/api/v1/proxy/...`), as upstream.
const SPECIAL_VERBS: &[&str] = &["proxy", "watch"];
/// Path-prefix verbs whose trailing segments are not a subresource.
const SPECIAL_VERBS_NO_SUBRESOURCES: &[&str] = &["proxy"];
/// Segments after `namespaces/{name}` that address the namespace itself.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];
/// Subresources whose requests stream (kube-apiserver's long-running check).
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "portforward", "proxy"];
/// The standard methods and their lowercase verbs: kept verbatim in span names (others become
/// `HTTP`, OTel semconv), and held as constants wherever a request's method is stored.
pub(crate) const STANDARD_METHODS: [(&str, &str); 9] = [
    ("GET", "get"),
    ("HEAD", "head"),
    ("POST", "post"),
    ("PUT", "put"),
    ("PATCH", "patch"),
    ("DELETE", "delete"),
    ("OPTIONS", "options"),
    ("CONNECT", "connect"),
    ("TRACE", "trace"),
];

/// What kube-apiserver knows about a request before routing it.
///
/// Empty upstream strings are `None` here, so the core (legacy) API group is
/// `api_group: None` and cluster-scoped requests have `namespace: None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// `get list watch create update patch delete deletecollection proxy`;
    /// lowercased method for non-resource requests; empty for resource
    /// requests with a method upstream does not map (e.g. `OPTIONS`).
    pub verb: Text,
    /// `"api"` or `"apis"`. Also set for `/apis/<group>/<version>` discovery,
    /// which upstream reports as non-resource but with the prefix filled in.
    pub api_prefix: Option<Text>,
    /// `None` for the core group.
    pub api_group: Option<Text>,
    pub api_version: Option<Text>,
    /// For the namespace object itself (`/api/v1/namespaces/foo`) this is
    /// `foo`, as upstream.
    pub namespace: Option<Text>,
    pub resource: Option<Text>,
    pub subresource: Option<Text>,
    /// From the path, or from `fieldSelector=metadata.name=X` on list/watch.
    pub name: Option<Text>,
    /// Request path without query, percent-encoding left as is.
    pub path: String,
    /// Low-cardinality template of the path, e.g.
    /// `/api/v1/namespaces/{namespace}/pods/{name}`.
    pub route: String,
    /// Watches, proxies, exec/attach/portforward, `log?follow=true`, pprof profile.
    pub long_running: bool,
}

/// Resolve `method` + request-target like kube-apiserver's `RequestInfoFactory`.
///
/// The target may be origin-form (`/api/v1/pods?watch=1`), absolute-form
/// (`https://host/api/v1/pods`) or `*`. Segments are matched after
/// percent-decoding, as Go's `URL.Path` is; an invalid escape (which Go would
/// reject with 400) leaves the path undecoded.
pub fn request_info(method: &str, target: &str) -> RequestInfo {
    let (raw_path, raw_query) = split_target(target);
    let path = percent_decode(raw_path, false).unwrap_or(Cow::Borrowed(raw_path));
    let query = Query::parse(raw_query);
    let segments = split_path(&path);

    let mut info =
        resolve_resource(method, &segments, &query).unwrap_or_else(|| non_resource(method, &segments, raw_path));
    info.long_running = is_long_running(&info, &path, &query);
    info.path = crate::span::text_of(truncate_str(raw_path, MAX_PATH_LEN));
    let route_len = truncate_str(&info.route, MAX_PATH_LEN).len();
    info.route.truncate(route_len);
    info
}

/// Span name like kube-apiserver's in-process tracing: `"<METHOD> <route>"`.
///
/// Unknown methods become `HTTP` so a client cannot mint span names.
pub fn span_name(method: &str, info: &RequestInfo) -> String {
    let method = if STANDARD_METHODS.iter().any(|(m, _)| *m == method) { method } else { "HTTP" };
    // Not `format!`: the formatting machinery cost more than the copy, once per span.
    let mut name = crate::span::new_text(method.len() + 1 + info.route.len());
    name.push_str(method);
    name.push(' ');
    name.push_str(&info.route);
    name
}

/// Split a request-target into raw path and raw query, dropping the scheme and
/// authority of an absolute-form target.
fn split_target(target: &str) -> (&str, &str) {
    let origin = strip_scheme_authority(target);
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    if path.is_empty() && origin.len() != target.len() {
        // `http://host?x`: an absolute-form target with an empty path means `/`.
        return ("/", query);
    }
    (path, query)
}

fn strip_scheme_authority(target: &str) -> &str {
    let after_scheme = ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme).then(|| &target[scheme.len()..])
    });
    match after_scheme {
        Some(rest) => rest.find(['/', '?']).map_or("", |i| &rest[i..]),
        None => target,
    }
}

/// Go's `splitPath`: trim slashes at both ends, then split on `/`.
/// Inner empty segments (`//api//v1`) are kept, as upstream.
fn split_path(path: &str) -> SmallVec<[&str; 12]> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return SmallVec::new();
    }
    split_segments(trimmed)
}

/// `s.split('/')`, empty segments included, on the stack: an API path has at most 9 segments,
/// and a vector allocated per request showed in every profile. A byte loop: `str::split`
/// searches for each `/` with a call, which cost more than the rest of the request info
/// together (callgrind, `agent_cost`).
fn split_segments(s: &str) -> SmallVec<[&str; 12]> {
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

/// The resource-request branch of `NewRequestInfo`; `None` means non-resource.
fn resolve_resource(method: &str, segments: &[&str], query: &Query) -> Option<RequestInfo> {
    let (&prefix, rest) = segments.split_first()?;
    if segments.len() < 3 || !matches!(prefix, "api" | "apis") {
        return None;
    }
    let mut route = Route::for_path(segments);
    route.literal(prefix);
    let (group, rest) = if prefix == "apis" {
        if rest.len() < 3 {
            return None;
        }
        route.literal(rest[0]);
        (Some(rest[0]), &rest[1..])
    } else {
        (None, rest)
    };
    let (&version, mut rest) = rest.split_first()?;
    route.literal(version);

    let mut info = RequestInfo {
        is_resource_request: true,
        api_prefix: known_field(prefix),
        api_group: group.and_then(known_field),
        api_version: known_field(version),
        ..RequestInfo::default()
    };

    let first = *rest.first()?;
    if let Some(&special) = SPECIAL_VERBS.iter().find(|v| **v == first) {
        route.literal(first);
        if rest.len() < 2 {
            // Upstream returns an error here ("unable to determine kind and
            // namespace"); keep what it had filled in so far.
            info.verb = lowercase_verb(method);
            info.route = route.finish();
            return Some(info);
        }
        info.verb = Text::Static(special);
        rest = &rest[1..];
    } else {
        info.verb = Text::Static(method_verb(method));
    }

    rest = consume_namespace(rest, &mut info, &mut route);
    fill_parts(rest, &mut info, &mut route);
    info.route = route.finish();
    resolve_collection_verbs(&mut info, query);
    Some(info)
}

/// `namespaces/{ns}/...`: record the namespace and, unless the rest addresses
/// the namespace object itself, skip past it.
fn consume_namespace<'a>(rest: &'a [&'a str], info: &mut RequestInfo, route: &mut Route) -> &'a [&'a str] {
    match rest {
        ["namespaces", ns, next, ..] if !NAMESPACE_SUBRESOURCES.contains(next) => {
            info.namespace = known_field(ns);
            route.literal("namespaces");
            route.placeholder(ns, "{namespace}");
            &rest[2..]
        }
        ["namespaces", ns, ..] => {
            info.namespace = known_field(ns);
            rest
        }
        _ => rest,
    }
}

/// `resource/name/subresource/anything/else`, templated as
/// `resource/{name}/subresource/{path}`.
fn fill_parts(parts: &[&str], info: &mut RequestInfo, route: &mut Route) {
    let Some((&resource, rest)) = parts.split_first() else {
        return;
    };
    info.resource = known_field(resource);
    route.literal(resource);
    let Some((&name, rest)) = rest.split_first() else {
        return;
    };
    info.name = field(name);
    route.placeholder(name, "{name}");
    let mut rest = rest;
    if !SPECIAL_VERBS_NO_SUBRESOURCES.contains(&&*info.verb)
        && let Some((&sub, tail)) = rest.split_first()
    {
        info.subresource = known_field(sub);
        route.literal(sub);
        rest = tail;
    }
    if !rest.is_empty() {
        route.literal("{path}");
    }
}

/// GET without a name is list or watch (with `fieldSelector` naming the
/// object); DELETE without a name is deletecollection.
fn resolve_collection_verbs(info: &mut RequestInfo, query: &Query) {
    if info.name.is_none() && &*info.verb == "get" {
        let opts = ListOptions::decode(query);
        info.verb = Text::Static(if opts.watch { "watch" } else { "list" });
        info.name = opts.name.as_deref().and_then(field);
    }
    if info.name.is_none() && &*info.verb == "delete" {
        info.verb = Text::Static("deletecollection");
    }
}

/// Upstream's method → verb mapping; unknown methods give an empty verb.
fn method_verb(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// Go's `strings.ToLower(method)`, capped (lowercasing may grow the string); a constant for a
/// standard method.
fn lowercase_verb(method: &str) -> Text {
    if let Some((_, lower)) = STANDARD_METHODS.iter().find(|(m, _)| *m == method) {
        return Text::Static(lower);
    }
    let lower = truncate_str(method, MAX_VERB_LEN).to_lowercase();
    Text::Owned(truncate_str(&lower, MAX_VERB_LEN).to_owned())
}

fn non_resource(method: &str, segments: &[&str], raw_path: &str) -> RequestInfo {
    // Upstream records the prefix before finding `/apis/<g>/<v>` too short.
    let api_prefix = match segments {
        ["apis", _, _] => Some(Text::Static("apis")),
        _ => None,
    };
    RequestInfo {
        verb: lowercase_verb(method),
        api_prefix,
        route: non_resource_route(segments, raw_path),
        ..RequestInfo::default()
    }
}

/// Route for non-resource URLs: known endpoints literally, everything else
/// reduced so that arbitrary paths cannot blow up span-name cardinality.
fn non_resource_route(segments: &[&str], raw_path: &str) -> String {
    if raw_path == "*" {
        return "*".to_owned();
    }
    let keep = match segments {
        [] => 0,
        // Health checks: keep `/readyz/<check>`, reduce deeper paths.
        ["healthz" | "livez" | "readyz", check, ..] if is_token(check) => 2,
        ["healthz" | "livez" | "readyz", ..] => 1,
        ["version" | "metrics"] | ["openapi", "v2" | "v3"] | ["metrics", "slis"] => segments.len(),
        ["openapi", "v3", ..] => 2,
        [".well-known", "openid-configuration"] | ["openid", "v1", "jwks"] => segments.len(),
        ["api" | "apis"] => 1,
        ["api", v] if is_version(v) => 2,
        ["apis", g] if is_group(g) => 2,
        ["apis", g, v] if is_group(g) && is_version(v) => 3,
        [first, ..] if is_token(first) => 1,
        _ => 0,
    };
    let mut route = Route::for_path(segments);
    segments[..keep].iter().for_each(|s| route.literal(s));
    if keep < segments.len() {
        route.literal("{path}");
    }
    route.finish()
}

/// Upstream's `BasicLongRunningRequestCheck`, except that `log` only counts
/// with `follow` (a plain log fetch is an ordinary short request).
fn is_long_running(info: &RequestInfo, decoded_path: &str, query: &Query) -> bool {
    if matches!(&*info.verb, "watch" | "proxy") {
        return true;
    }
    if !info.is_resource_request {
        return decoded_path.starts_with("/debug/pprof/profile");
    }
    match info.subresource.as_deref() {
        Some("log") => query.flag("follow"),
        Some(sub) => LONG_RUNNING_SUBRESOURCES.contains(&sub),
        None => false,
    }
}

/// Builds a route template segment by segment.
#[derive(Default)]
struct Route(String);

impl Route {
    /// Room for the path's segments, or their placeholders, without growing.
    fn for_path(segments: &[&str]) -> Self {
        let len = segments.iter().map(|s| 1 + s.len().max("{namespace}".len())).sum::<usize>();
        Route(crate::span::new_text(len.min(MAX_PATH_LEN + 16)))
    }

    fn literal(&mut self, segment: &str) {
        self.0.push('/');
        self.0.push_str(segment);
    }

    /// Empty segments stay empty so the template mirrors the path's shape.
    fn placeholder(&mut self, segment: &str, placeholder: &str) {
        self.literal(if segment.is_empty() { "" } else { placeholder });
    }

    fn finish(self) -> String {
        if self.0.is_empty() { "/".to_owned() } else { self.0 }
    }
}

/// `v1`, `v2beta1`, `v1alpha3`: the API version shape.
fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let (major, level) = match rest.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    digits(major) && (level.is_empty() || ["alpha", "beta"].iter().any(|l| level.strip_prefix(l).is_some_and(digits)))
}

/// DNS-subdomain-like API group name.
fn is_group(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT_LEN
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// A plain path word (health check names, unknown first segments).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The query as Go's `url.ParseQuery` sees it: `&`-separated, `+` is space,
/// pairs with `;` or a bad escape are dropped.
struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Query<'a> {
    fn parse(raw: &'a str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty() && !p.contains(';'))
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Some((percent_decode(k, true)?, percent_decode(v, true)?))
            })
            .collect();
        Query(pairs)
    }

    /// First value of `key`, like Go's `Values.Get`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// Go's query → bool conversion: present and not `0`/`false` means true.
    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }
}

/// The parts of `metainternalversion.ListOptions` that shape `RequestInfo`.
struct ListOptions {
    watch: bool,
    name: Option<String>,
}

impl ListOptions {
    /// Like upstream's `DecodeParameters`: if any parameter fails to decode
    /// only `watch` is honoured. Label selectors are not validated here.
    fn decode(query: &Query) -> Self {
        let watch = query.flag("watch");
        let ints_ok = ["limit", "timeoutSeconds"].iter().all(|k| query.get(k).is_none_or(|v| v.parse::<i64>().is_ok()));
        let selector = query.get("fieldSelector").unwrap_or("");
        let name = match field_selector_name(selector) {
            Some(name) if ints_ok => name.filter(|n| is_valid_path_segment_name(n)),
            _ => None,
        };
        ListOptions { watch, name }
    }
}

/// `fields.ParseSelector(s).RequiresExactMatch("metadata.name")`.
/// Outer `None`: the selector does not parse.
fn field_selector_name(selector: &str) -> Option<Option<String>> {
    let mut terms = split_terms(selector);
    terms.sort_unstable();
    let mut found = None;
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let (field, op, value) = split_term(term)?;
        let value = unescape_selector_value(value)?;
        if found.is_none() && op != "!=" && field == "metadata.name" {
            found = Some(value);
        }
    }
    Some(found)
}

/// Split on `,` not preceded by a backslash escape.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in selector.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Split at the first operator, trying `!=`, `==`, `=` at each position.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    term.char_indices().find_map(|(i, _)| {
        ["!=", "==", "="]
            .iter()
            .find(|op| term[i..].starts_with(**op))
            .map(|op| (&term[..i], *op, &term[i + op.len()..]))
    })
}

/// Only `\\`, `\,`, `\=` are valid escapes; bare `,`/`=` are errors.
fn unescape_selector_value(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        match c {
            '\\' | ',' | '=' if escaped => {
                out.push(c);
                escaped = false;
            }
            _ if escaped => return None,
            '\\' => escaped = true,
            ',' | '=' => return None,
            _ => out.push(c),
        }
    }
    (!escaped).then_some(out)
}

/// `path.IsValidPathSegmentName`: usable as a single URL path segment.
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains(['/', '%'])
}

/// Decode `%XX` (and `+` as space for queries). `None` on a bad escape.
/// Decoded bytes that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str, plus_as_space: bool) -> Option<Cow<'_, str>> {
    if !(s.contains('%') || plus_as_space && s.contains('+')) {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A stored path segment: `None` when empty (Go's zero value), capped otherwise.
fn field(s: &str) -> Option<Text> {
    (!s.is_empty()).then(|| Text::copy(truncate_str(s, MAX_SEGMENT_LEN)))
}

/// [`field`] for a segment that is most often one of a few well-known values (API prefix,
/// version, group, resource, subresource, namespace): those are constants, not copies, since
/// every span carries several of them.
fn known_field(s: &str) -> Option<Text> {
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

// ---------------------------------------------------------------------------
// etcd keys
// ---------------------------------------------------------------------------

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
/// [`CLUSTER_SCOPED`] table fixes the prefix case for cluster-scoped ones.
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

const ELLIPSIS: &str = "…";

/// Printable, truncated copy of an etcd key for the `etcd.key` attribute.
///
/// Valid UTF-8 is kept except control characters; those, invalid bytes and
/// backslashes (so the escaping is unambiguous) are escaped (`\xNN`, `\\`).
/// The output is at most `max` bytes including the `…` appended on
/// truncation (omitted if `max` cannot fit it), and never splits a character
/// or an escape.
pub fn printable_key(key: &[u8], max: usize) -> String {
    let budget = if max >= ELLIPSIS.len() { max - ELLIPSIS.len() } else { max };
    let mut out = String::new();
    let mut fits_budget = 0;
    let complete = for_each_printable_piece(key, |piece| {
        if out.len() + piece.len() > max {
            return false;
        }
        out.push_str(piece);
        if out.len() <= budget {
            fits_budget = out.len();
        }
        true
    });
    if !complete {
        out.truncate(fits_budget);
        if max >= ELLIPSIS.len() {
            out.push_str(ELLIPSIS);
        }
    }
    out
}

/// Feed `key` to `sink` as printable pieces (a char or an escape) until it
/// returns false. Returns whether every piece was accepted.
fn for_each_printable_piece(key: &[u8], mut sink: impl FnMut(&str) -> bool) -> bool {
    let mut buf = [0u8; 4];
    let escape = |bytes: &[u8], sink: &mut dyn FnMut(&str) -> bool| bytes.iter().all(|b| sink(&format!("\\x{b:02X}")));
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            let accepted = match c {
                '\\' => sink("\\\\"),
                c if c.is_control() => escape(c.encode_utf8(&mut buf).as_bytes(), &mut sink),
                c => sink(c.encode_utf8(&mut buf)),
            };
            if !accepted {
                return false;
            }
        }
        if !escape(chunk.invalid(), &mut sink) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_as_str_split_does() {
        for s in ["", "/", "a", "a/b", "/a//b/", "api/v1/namespaces/default/pods/web-0", "é/ü/", "//"] {
            assert_eq!(split_segments(s).as_slice(), s.split('/').collect::<Vec<_>>(), "{s:?}");
        }
        assert_eq!(split_path("//api//v1/").as_slice(), ["api", "", "v1"]);
        assert!(split_path("///").is_empty());
    }

    #[test]
    fn well_known_segments_are_constants() {
        assert!(matches!(known_field("pods"), Some(Text::Static("pods"))));
        // Other segments are copies: short ones in place.
        assert!(matches!(known_field("my-pod"), Some(Text::Inline(n)) if n.as_str() == "my-pod"));
        let long = "my-deployment-7c5ddbdf54-x2v9k";
        assert!(matches!(known_field(long), Some(Text::Owned(n)) if n == long));
        assert_eq!(known_field(""), None);
        let info = request_info("GET", "/api/v1/namespaces/default/pods/my-pod");
        for v in [
            Some(&info.verb),
            info.api_prefix.as_ref(),
            info.api_version.as_ref(),
            info.namespace.as_ref(),
            info.resource.as_ref(),
        ] {
            assert!(matches!(v, Some(Text::Static(_))), "{v:?}");
        }
        assert_eq!(info.name.as_deref(), Some("my-pod"));
        assert!(matches!(request_info("PROPFIND", "/x").verb, Text::Owned(v) if v == "propfind"));
    }

    /// One-line summary of a `RequestInfo` for table-driven tests.
    fn describe(info: &RequestInfo) -> String {
        let mut out = vec![
            if info.is_resource_request { "res" } else { "nonres" }.to_owned(),
            if info.verb.is_empty() { "''".to_owned() } else { info.verb.to_string() },
        ];
        let fields = [
            ("p", &info.api_prefix),
            ("g", &info.api_group),
            ("v", &info.api_version),
            ("ns", &info.namespace),
            ("r", &info.resource),
            ("sub", &info.subresource),
            ("n", &info.name),
        ];
        for (label, value) in fields {
            if let Some(v) = value {
                out.push(format!("{label}={v}"));
            }
        }
        if info.long_running {
            out.push("long".to_owned());
        }
        out.push(info.route.clone());
        out.join(" ")
    }

    #[rustfmt::skip]
    const URL_CASES: &[(&str, &str, &str)] = &[
        // core, namespaced
        ("GET", "/api/v1/namespaces/default/pods", "res list p=api v=v1 ns=default r=pods /api/v1/namespaces/{namespace}/pods"),
        ("GET", "/api/v1/namespaces/default/pods/nginx", "res get p=api v=v1 ns=default r=pods n=nginx /api/v1/namespaces/{namespace}/pods/{name}"),
        ("HEAD", "/api/v1/namespaces/default/pods/nginx", "res get p=api v=v1 ns=default r=pods n=nginx /api/v1/namespaces/{namespace}/pods/{name}"),
        ("POST", "/api/v1/namespaces/default/pods", "res create p=api v=v1 ns=default r=pods /api/v1/namespaces/{namespace}/pods"),
        ("PUT", "/api/v1/namespaces/default/pods/nginx", "res update p=api v=v1 ns=default r=pods n=nginx /api/v1/namespaces/{namespace}/pods/{name}"),
        ("PATCH", "/api/v1/namespaces/default/pods/nginx", "res patch p=api v=v1 ns=default r=pods n=nginx /api/v1/namespaces/{namespace}/pods/{name}"),
        ("DELETE", "/api/v1/namespaces/default/pods/nginx", "res delete p=api v=v1 ns=default r=pods n=nginx /api/v1/namespaces/{namespace}/pods/{name}"),
        ("DELETE", "/api/v1/namespaces/default/pods", "res deletecollection p=api v=v1 ns=default r=pods /api/v1/namespaces/{namespace}/pods"),
        // core, cluster-scoped and all-namespaces
        ("GET", "/api/v1/nodes", "res list p=api v=v1 r=nodes /api/v1/nodes"),
        ("GET", "/api/v1/nodes/node-1", "res get p=api v=v1 r=nodes n=node-1 /api/v1/nodes/{name}"),
        ("GET", "/api/v1/pods", "res list p=api v=v1 r=pods /api/v1/pods"),
        ("PUT", "/api/v1/nodes/node-1/status", "res update p=api v=v1 r=nodes sub=status n=node-1 /api/v1/nodes/{name}/status"),
        // namespace objects
        ("GET", "/api/v1/namespaces", "res list p=api v=v1 r=namespaces /api/v1/namespaces"),
        ("GET", "/api/v1/namespaces/kube-system", "res get p=api v=v1 ns=kube-system r=namespaces n=kube-system /api/v1/namespaces/{name}"),
        ("PUT", "/api/v1/namespaces/foo/status", "res update p=api v=v1 ns=foo r=namespaces sub=status n=foo /api/v1/namespaces/{name}/status"),
        ("PUT", "/api/v1/namespaces/foo/finalize", "res update p=api v=v1 ns=foo r=namespaces sub=finalize n=foo /api/v1/namespaces/{name}/finalize"),
        ("DELETE", "/api/v1/namespaces/foo", "res delete p=api v=v1 ns=foo r=namespaces n=foo /api/v1/namespaces/{name}"),
        // subresources
        ("PATCH", "/api/v1/namespaces/default/pods/nginx/status", "res patch p=api v=v1 ns=default r=pods sub=status n=nginx /api/v1/namespaces/{namespace}/pods/{name}/status"),
        ("GET", "/api/v1/namespaces/default/pods/nginx/log", "res get p=api v=v1 ns=default r=pods sub=log n=nginx /api/v1/namespaces/{namespace}/pods/{name}/log"),
        ("GET", "/api/v1/namespaces/default/pods/nginx/log?follow=true&container=c", "res get p=api v=v1 ns=default r=pods sub=log n=nginx long /api/v1/namespaces/{namespace}/pods/{name}/log"),
        ("GET", "/api/v1/namespaces/default/pods/nginx/log?follow=false", "res get p=api v=v1 ns=default r=pods sub=log n=nginx /api/v1/namespaces/{namespace}/pods/{name}/log"),
        ("POST", "/api/v1/namespaces/default/pods/nginx/exec?command=ls&stdout=true", "res create p=api v=v1 ns=default r=pods sub=exec n=nginx long /api/v1/namespaces/{namespace}/pods/{name}/exec"),
        ("GET", "/api/v1/namespaces/default/pods/nginx/attach", "res get p=api v=v1 ns=default r=pods sub=attach n=nginx long /api/v1/namespaces/{namespace}/pods/{name}/attach"),
        ("POST", "/api/v1/namespaces/default/pods/nginx/portforward", "res create p=api v=v1 ns=default r=pods sub=portforward n=nginx long /api/v1/namespaces/{namespace}/pods/{name}/portforward"),
        ("POST", "/api/v1/namespaces/default/pods/nginx/binding", "res create p=api v=v1 ns=default r=pods sub=binding n=nginx /api/v1/namespaces/{namespace}/pods/{name}/binding"),
        ("POST", "/api/v1/namespaces/default/pods/nginx/eviction", "res create p=api v=v1 ns=default r=pods sub=eviction n=nginx /api/v1/namespaces/{namespace}/pods/{name}/eviction"),
        ("GET", "/api/v1/namespaces/default/pods/nginx/proxy/metrics/x", "res get p=api v=v1 ns=default r=pods sub=proxy n=nginx long /api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}"),
        ("GET", "/api/v1/nodes/node-1/proxy/stats/summary", "res get p=api v=v1 r=nodes sub=proxy n=node-1 long /api/v1/nodes/{name}/proxy/{path}"),
        ("GET", "/api/v1/proxy/namespaces/default/pods/nginx/healthz", "res proxy p=api v=v1 ns=default r=pods n=nginx long /api/v1/proxy/namespaces/{namespace}/pods/{name}/{path}"),
        // group APIs
        ("GET", "/apis/apps/v1/namespaces/default/deployments", "res list p=apis g=apps v=v1 ns=default r=deployments /apis/apps/v1/namespaces/{namespace}/deployments"),
        ("GET", "/apis/apps/v1/namespaces/default/deployments/web/scale", "res get p=apis g=apps v=v1 ns=default r=deployments sub=scale n=web /apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler", "res update p=apis g=coordination.k8s.io v=v1 ns=kube-system r=leases n=kube-scheduler /apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", "res get p=apis g=rbac.authorization.k8s.io v=v1 r=clusterroles n=admin /apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"),
        ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "res create p=apis g=authorization.k8s.io v=v1 r=subjectaccessreviews /apis/authorization.k8s.io/v1/subjectaccessreviews"),
        ("DELETE", "/apis/example.com/v1alpha1/namespaces/ns1/widgets", "res deletecollection p=apis g=example.com v=v1alpha1 ns=ns1 r=widgets /apis/example.com/v1alpha1/namespaces/{namespace}/widgets"),
        ("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "res create p=api v=v1 ns=default r=serviceaccounts sub=token n=default /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
        // watch, both forms
        ("GET", "/api/v1/namespaces/default/pods?watch=true&resourceVersion=10", "res watch p=api v=v1 ns=default r=pods long /api/v1/namespaces/{namespace}/pods"),
        ("GET", "/api/v1/pods?watch=1", "res watch p=api v=v1 r=pods long /api/v1/pods"),
        ("GET", "/api/v1/pods?watch=false", "res list p=api v=v1 r=pods /api/v1/pods"),
        ("GET", "/api/v1/pods?watch=0", "res list p=api v=v1 r=pods /api/v1/pods"),
        ("GET", "/api/v1/pods?watch", "res watch p=api v=v1 r=pods long /api/v1/pods"),
        ("GET", "/api/v1/watch/namespaces/default/pods", "res watch p=api v=v1 ns=default r=pods long /api/v1/watch/namespaces/{namespace}/pods"),
        ("GET", "/api/v1/watch/namespaces/default/pods/nginx", "res watch p=api v=v1 ns=default r=pods n=nginx long /api/v1/watch/namespaces/{namespace}/pods/{name}"),
        ("GET", "/api/v1/watch/namespaces/default", "res watch p=api v=v1 ns=default r=namespaces n=default long /api/v1/watch/namespaces/{name}"),
        ("GET", "/apis/apps/v1/watch/deployments", "res watch p=apis g=apps v=v1 r=deployments long /apis/apps/v1/watch/deployments"),
        // fieldSelector name
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dnginx", "res list p=api v=v1 ns=default r=pods n=nginx /api/v1/namespaces/{namespace}/pods"),
        ("GET", "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name=cm1&watch=true", "res watch p=api v=v1 ns=default r=configmaps n=cm1 long /api/v1/namespaces/{namespace}/configmaps"),
        ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1,metadata.name%3D%3Dp1", "res list p=api v=v1 r=pods n=p1 /api/v1/pods"),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name!%3Dp1", "res list p=api v=v1 r=pods /api/v1/pods"),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%2Fb", "res list p=api v=v1 r=pods /api/v1/pods"),
        ("GET", "/api/v1/pods?fieldSelector=bogus&watch=1", "res watch p=api v=v1 r=pods long /api/v1/pods"),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dp1&limit=abc", "res list p=api v=v1 r=pods /api/v1/pods"),
        // non-resource
        ("GET", "/healthz", "nonres get /healthz"),
        ("GET", "/livez?verbose", "nonres get /livez"),
        ("GET", "/readyz/etcd", "nonres get /readyz/etcd"),
        ("GET", "/livez/poststarthook/start-apiextensions-informers", "nonres get /livez/poststarthook/{path}"),
        ("GET", "/version", "nonres get /version"),
        ("GET", "/metrics", "nonres get /metrics"),
        ("GET", "/openapi/v2", "nonres get /openapi/v2"),
        ("GET", "/openapi/v3", "nonres get /openapi/v3"),
        ("GET", "/openapi/v3/apis/apps/v1?hash=ABC", "nonres get /openapi/v3/{path}"),
        ("GET", "/api", "nonres get /api"),
        ("GET", "/api/v1", "nonres get /api/v1"),
        ("GET", "/apis", "nonres get /apis"),
        ("GET", "/apis/apps", "nonres get /apis/apps"),
        ("GET", "/apis/apps/v1", "nonres get p=apis /apis/apps/v1"),
        ("GET", "/apis/Bad_Group/v1", "nonres get p=apis /apis/{path}"),
        ("GET", "/foo/bar/baz", "nonres get /foo/{path}"),
        ("GET", "/debug/pprof/profile?seconds=30", "nonres get long /debug/{path}"),
        ("GET", "/", "nonres get /"),
        ("POST", "/.well-known/openid-configuration", "nonres post /.well-known/openid-configuration"),
        // query strings, trailing slashes, odd forms
        ("GET", "/api/v1/namespaces/default/pods/", "res list p=api v=v1 ns=default r=pods /api/v1/namespaces/{namespace}/pods"),
        ("GET", "/healthz/", "nonres get /healthz"),
        ("GET", "https://10.0.0.1:6443/api/v1/nodes/n1?x=1", "res get p=api v=v1 r=nodes n=n1 /api/v1/nodes/{name}"),
        ("GET", "http://host", "nonres get /"),
        ("OPTIONS", "*", "nonres options *"),
        ("GET", "", "nonres get /"),
        ("OPTIONS", "/api/v1/pods", "res '' p=api v=v1 r=pods /api/v1/pods"),
        ("BREW", "/coffee/pot", "nonres brew /coffee/{path}"),
        ("GET", "//api//v1", "res list p=api r=v1 /api//v1"),
        ("GET", "/api/v1/watch", "res get p=api v=v1 /api/v1/watch"),
        ("GET", "/api/v1/namespaces/default/pods/a%2Fb", "res get p=api v=v1 ns=default r=pods sub=b n=a /api/v1/namespaces/{namespace}/pods/{name}/b"),
        ("GET", "/api/v1/namespaces/default/pods/bad%zz", "res get p=api v=v1 ns=default r=pods n=bad%zz /api/v1/namespaces/{namespace}/pods/{name}"),
        ("GET", "/api/v1/namespaces//pods//status", "res list p=api v=v1 r=pods sub=status /api/v1/namespaces//pods//status"),
        ("GET", "/%00%ff/\u{e9}", "nonres get /{path}"),
    ];

    #[test]
    fn url_table() {
        let mut failures = Vec::new();
        for (method, target, want) in URL_CASES {
            let got = describe(&request_info(method, target));
            if got != *want {
                failures.push(format!("{method} {target}\n  want: {want}\n  got:  {got}"));
            }
        }
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
        assert!(URL_CASES.len() >= 40);
    }

    #[test]
    fn span_names() {
        let cases = [
            ("GET", "/api/v1/namespaces/default/pods/p?x=1", "GET /api/v1/namespaces/{namespace}/pods/{name}"),
            ("GET", "/api/v1/watch/namespaces/ns/pods", "GET /api/v1/watch/namespaces/{namespace}/pods"),
            ("PUT", "/api/v1/namespaces/ns/status", "PUT /api/v1/namespaces/{name}/status"),
            ("GET", "/readyz/etcd", "GET /readyz/etcd"),
            ("GET", "/openapi/v3/apis/apps/v1", "GET /openapi/v3/{path}"),
            ("BREW", "/api/v1/pods", "HTTP /api/v1/pods"),
            ("get", "/healthz", "HTTP /healthz"),
        ];
        for (method, target, want) in cases {
            assert_eq!(span_name(method, &request_info(method, target)), want, "{method} {target}");
        }
    }

    #[test]
    fn path_keeps_raw_encoding_and_drops_query() {
        let info = request_info("GET", "http://h/api/v1/namespaces/a%2Db/pods?watch=1");
        assert_eq!(info.path, "/api/v1/namespaces/a%2Db/pods");
        assert_eq!(info.namespace.as_deref(), Some("a-b"));
        assert_eq!(request_info("OPTIONS", "*").path, "*");
    }

    #[test]
    fn overlong_inputs_are_capped_at_char_boundaries() {
        let name = "é".repeat(400); // 800 bytes
        let target = format!("/api/v1/namespaces/{name}/pods/{name}/{}", "x/".repeat(2000));
        let info = request_info(&"M".repeat(100), &target);
        let stored = [&info.namespace, &info.name, &info.subresource];
        assert!(stored.iter().all(|s| s.as_ref().is_some_and(|s| s.len() <= MAX_SEGMENT_LEN)));
        assert_eq!(info.name.as_deref().map(str::len), Some(252));
        assert!(info.path.len() <= MAX_PATH_LEN && info.route.len() <= MAX_PATH_LEN);
        assert_eq!(info.route, "/api/v1/namespaces/{namespace}/pods/{name}/x/{path}");
        // Unknown methods give resource requests an empty verb, as upstream.
        assert_eq!(info.verb, "");
        assert_eq!(request_info(&"M".repeat(100), "/x").verb, &*"m".repeat(MAX_VERB_LEN));
    }

    fn describe_key(info: Option<EtcdKeyInfo>) -> String {
        let Some(info) = info else {
            return "none".to_owned();
        };
        let fields = [("g", info.group), ("r", info.resource), ("ns", info.namespace), ("n", info.name)];
        let mut out: Vec<String> =
            fields.into_iter().filter_map(|(label, v)| v.map(|v| format!("{label}={v}"))).collect();
        if info.is_prefix {
            out.push("prefix".to_owned());
        }
        out.join(" ")
    }

    #[rustfmt::skip]
    const KEY_CASES: &[(&str, &[u8], &str)] = &[
        ("/registry", b"/registry/pods/default/nginx", "r=pods ns=default n=nginx"),
        ("/registry", b"/registry/pods/default/", "r=pods ns=default prefix"),
        ("/registry", b"/registry/pods/", "r=pods prefix"),
        ("/registry", b"/registry/pods/default", "r=pods n=default"),
        ("/registry", b"/registry/namespaces/default", "r=namespaces n=default"),
        ("/registry", b"/registry/namespaces/", "r=namespaces prefix"),
        ("/registry", b"/registry/minions/node-1", "r=nodes n=node-1"),
        ("/registry", b"/registry/services/specs/default/kubernetes", "r=services ns=default n=kubernetes"),
        ("/registry", b"/registry/services/endpoints/kube-system/kube-dns", "r=endpoints ns=kube-system n=kube-dns"),
        ("/registry", b"/registry/services/specs/", "r=services prefix"),
        ("/registry", b"/registry/controllers/default/rc1", "r=replicationcontrollers ns=default n=rc1"),
        ("/registry", b"/registry/deployments/default/nginx", "r=deployments ns=default n=nginx"),
        ("/registry", b"/registry/leases/kube-system/kube-scheduler", "r=leases ns=kube-system n=kube-scheduler"),
        ("/registry", b"/registry/events/default/nginx.17a2b3c4d5e6f7", "r=events ns=default n=nginx.17a2b3c4d5e6f7"),
        ("/registry", b"/registry/clusterroles/system:admin", "r=clusterroles n=system:admin"),
        ("/registry", b"/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com", "g=apiextensions.k8s.io r=customresourcedefinitions n=widgets.example.com"),
        ("/registry", b"/registry/apiregistration.k8s.io/apiservices/v1.apps", "g=apiregistration.k8s.io r=apiservices n=v1.apps"),
        ("/registry", b"/registry/example.com/widgets/default/w1", "g=example.com r=widgets ns=default n=w1"),
        ("/registry", b"/registry/example.com/widgets/default/", "g=example.com r=widgets ns=default prefix"),
        ("/registry", b"/registry/example.com/clusterwidgets/cw1", "g=example.com r=clusterwidgets n=cw1"),
        ("/registry", b"/registry/masterleases/10.0.0.1", "r=masterleases n=10.0.0.1"),
        ("/registry", b"/registry/ranges/serviceips", "r=ranges n=serviceips"),
        ("/registry", b"/registry/health", "r=health"),
        ("/registry", b"/registry/", "prefix"),
        ("/registry", b"/registry", "none"),
        ("/registry", b"compact_rev_key", "none"),
        ("/registry", b"/registryx/pods/a/b", "none"),
        ("/registry", b"/other/pods/a/b", "none"),
        ("registry/", b"/registry/secrets/ns/s", "r=secrets ns=ns n=s"),
        ("/kubernetes.io", b"/kubernetes.io/configmaps/ns/cm", "r=configmaps ns=ns n=cm"),
        ("/", b"/pods/ns/p", "r=pods ns=ns n=p"),
        ("/registry", b"/registry/pods/ns/a/b", "r=pods ns=ns n=a/b"),
        ("/registry", b"/registry/pods/ns\xff/p\x00", "r=pods ns=ns\u{fffd} n=p\u{0}"),
        ("/registry", b"/registry//x", "n=x"),
    ];

    #[test]
    fn etcd_key_table() {
        let mut failures = Vec::new();
        for (prefix, key, want) in KEY_CASES {
            let got = describe_key(parse_registry_key(prefix, key));
            if got != *want {
                failures.push(format!("{prefix} {}\n  want: {want}\n  got:  {got}", printable_key(key, 200)));
            }
        }
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
        assert!(KEY_CASES.len() >= 20);
    }

    #[test]
    fn etcd_key_fields_are_capped() {
        let key = format!("/registry/pods/ns/{}", "n".repeat(1000));
        let info = parse_registry_key("/registry", key.as_bytes()).unwrap();
        assert_eq!(info.name.map(|n| n.len()), Some(MAX_SEGMENT_LEN));
    }

    #[test]
    fn printable_keys() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"/registry/pods/default/nginx", 100, "/registry/pods/default/nginx"),
            (b"/registry/pods/default/nginx", 28, "/registry/pods/default/nginx"),
            (b"/registry/pods/default/nginx", 27, "/registry/pods/default/n…"),
            (b"a\x00b\x7f\n", 100, "a\\x00b\\x7F\\x0A"),
            (b"a\xffb\xc3", 100, "a\\xFFb\\xC3"),
            (b"back\\slash", 100, "back\\\\slash"),
            ("héllo".as_bytes(), 100, "héllo"),
            // "aé…" would be 6 bytes; "é" is 2 bytes and may not be split.
            ("aébcd".as_bytes(), 5, "a…"),
            ("aébc".as_bytes(), 5, "aébc"),
            ("ééé".as_bytes(), 6, "ééé"),
            ("éééé".as_bytes(), 7, "éé…"),
            ("日本語キー".as_bytes(), 10, "日本…"),
            // An escape is never split either.
            (b"ab\xff", 5, "ab…"),
            (b"abcdef", 2, "ab"),
            (b"abcdef", 0, ""),
            (b"", 5, ""),
        ];
        for (key, max, want) in cases {
            let got = printable_key(key, *max);
            assert_eq!(got, *want, "key {key:?} max {max}");
            assert!(got.len() <= *max);
        }
    }

    /// Deterministic LCG (Knuth's MMIX constants) so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Bytes biased towards characters the parsers care about.
        fn bytes(&mut self) -> Vec<u8> {
            const ALPHABET: &[u8] = b"//////??&&==%%%.,\\+;:*abvnx1 \x00\xff\xc3\xa9\xe2\x80";
            const WORDS: &[&str] = &[
                "api",
                "apis",
                "v1",
                "namespaces",
                "watch",
                "proxy",
                "status",
                "fieldSelector=metadata.name",
                "%3D",
                "registry",
                "http://h",
                "pods",
                "log",
                "follow=1",
            ];
            let len = self.below(64);
            let mut out = Vec::new();
            for _ in 0..len {
                if self.below(4) == 0 {
                    out.extend_from_slice(WORDS[self.below(WORDS.len())].as_bytes());
                } else {
                    out.push(ALPHABET[self.below(ALPHABET.len())]);
                }
            }
            out
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        const METHODS: &[&str] = &["GET", "POST", "DELETE", "HEAD", "", "wAtCh", "PATCH"];
        let mut rng = Lcg(0x5eed);
        for _ in 0..20_000 {
            let bytes = rng.bytes();
            let target = String::from_utf8_lossy(&bytes);
            let method = METHODS[rng.below(METHODS.len())];
            let info = request_info(method, &target);
            assert!(info.path.len() <= MAX_PATH_LEN && info.route.len() <= MAX_PATH_LEN);
            assert!(info.verb.len() <= MAX_VERB_LEN);
            let fields = [&info.api_group, &info.api_version, &info.namespace, &info.resource];
            let fields = fields.into_iter().chain([&info.subresource, &info.name]);
            assert!(fields.flatten().all(|f| !f.is_empty() && f.len() <= MAX_SEGMENT_LEN));
            assert!(info.route.starts_with('/') || info.route == "*", "{target:?} → {}", info.route);
            let _ = span_name(method, &info);

            let prefix = ["/registry", "/", "", "registry/"][rng.below(4)];
            let _ = parse_registry_key(prefix, &bytes);
            let mut key = b"/registry/".to_vec();
            key.extend_from_slice(&bytes);
            let _ = parse_registry_key("/registry", &key);

            let max = rng.below(40);
            assert!(printable_key(&bytes, max).len() <= max);
        }
    }
}
