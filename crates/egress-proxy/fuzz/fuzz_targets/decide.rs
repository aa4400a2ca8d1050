//! Fuzzes request facts against a fixed set of routes: `decide` never panics, and an `Allow`
//! always names a route whose host pattern covers the target and whose scheme is the
//! request's, with any SNI and authority naming the target.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use common::formats::Routes;
use common::formats::routes::Scheme;
use egress_proxy::policy::{Decision, RequestFacts, RequestLine, Via, decide, host_matches, split_authority};
use libfuzzer_sys::fuzz_target;

fn routes() -> &'static Routes {
    static R: OnceLock<Routes> = OnceLock::new();
    R.get_or_init(|| {
        let doc = br#"{"version":1,"routes":[
            {"host":"api.example.com","matches":[{"paths":[{"type":"prefix","value":"/v1/"}],"methods":["GET"],
              "headers":[{"name":"x-team","value":"core"}]}]},
            {"host":"*.wild.com","port":8443},
            {"host":"10.0.0.1"},
            {"host":"::1"},
            {"host":"doh.com","allow_doh":true},
            {"host":"clear.com","scheme":"http"}
        ]}"#;
        Routes::parse(doc, Path::new("routes.json")).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut f = text.split('\u{1}');
    let host = f.next().unwrap_or("").to_ascii_lowercase();
    let port = f.next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(443);
    let sni = f.next().filter(|s| !s.is_empty());
    let authority = f.next().filter(|s| !s.is_empty());
    let method = f.next().unwrap_or("GET");
    let path = f.next().unwrap_or("/");
    let mut headers = http::HeaderMap::new();
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
            headers.append(k, v);
        }
    }
    let auths: Vec<&str> = authority.into_iter().collect();
    for via in [Via::Connect, Via::Tls, Via::PlainHttp] {
        for request in [None, Some(RequestLine { method, path, headers: &headers })] {
            let facts = RequestFacts { via, host: &host, port, sni, authorities: &auths, request };
            if let Decision::Allow { route } = decide(routes(), &facts) {
                let r = &routes().routes[route];
                assert!(host_matches(r, &host, host.parse().ok()), "{host} allowed by {}", r.host);
                match via {
                    Via::Tls => assert_eq!(r.scheme, Scheme::Https, "a TLS request only gets https routes"),
                    Via::PlainHttp => assert_eq!(r.scheme, Scheme::Http, "a cleartext request only gets http routes"),
                    Via::Connect => {}
                }
                if let Some(s) = sni {
                    assert!(s.eq_ignore_ascii_case(&host));
                }
                for a in &auths {
                    let (h, p) = split_authority(a).expect("allowed authorities parse");
                    assert_eq!(h, host);
                    assert!(p.is_none_or(|p| p == port));
                }
                if request.is_some() {
                    assert!(!path.split('/').any(|s| s == ".."), "dot segments are never allowed: {path}");
                }
            }
        }
    }
});
