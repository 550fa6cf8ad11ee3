use super::*;
use crate::meaning::etcd::{KEY_MAX, printable_key};
use crate::protocols::test_rng::Lcg;

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
    let mut out: Vec<String> = fields.into_iter().filter_map(|(label, v)| v.map(|v| format!("{label}={v}"))).collect();
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
            failures.push(format!("{prefix} {}\n  want: {want}\n  got:  {got}", printable_key(key)));
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

/// Random bytes biased towards characters the parsers care about.
fn biased_bytes(rng: &mut Lcg) -> Vec<u8> {
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
    let len = rng.below(64);
    let mut out = Vec::new();
    for _ in 0..len {
        if rng.below(4) == 0 {
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        } else {
            out.push(ALPHABET[rng.below(ALPHABET.len())]);
        }
    }
    out
}

#[test]
fn random_inputs_never_panic() {
    const METHODS: &[&str] = &["GET", "POST", "DELETE", "HEAD", "", "wAtCh", "PATCH"];
    let mut rng = Lcg(0x5eed);
    for _ in 0..20_000 {
        let bytes = biased_bytes(&mut rng);
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

        assert!(printable_key(&bytes).len() <= KEY_MAX);
    }
}
