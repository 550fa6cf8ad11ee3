//! Kubernetes semantics for traffic seen by the tracer.
//!
//! * [`request_info`] turns an HTTP method + request-target into the same
//!   `RequestInfo` kube-apiserver's `RequestInfoFactory`
//!   (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`) derives, plus a
//!   low-cardinality route template for span names.
//! * [`parse_registry_key`] describes the etcd keys kube-apiserver reads and
//!   writes (`etcd::printable_key` renders them).
//!
//! Everything here handles hostile input (it comes from captured traffic):
//! nothing panics and every stored string is capped.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::protocols::{http1::STANDARD_METHODS, truncate_str};
pub use crate::span::AttrStr as Text;

mod fields;
mod registry_key;

use fields::{MAX_SEGMENT_LEN, field, known_field, split_segments};
#[cfg(test)]
use registry_key::EtcdKeyInfo;
pub use registry_key::parse_registry_key;

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

#[cfg(test)]
mod tests;
