//! The CGI side of serving `git http-backend`: which requests are smart-HTTP git requests for
//! a configured repo (everything else is 404), and parsing the CGI response header block
//! (`Status:` plus ordinary headers) into an HTTP status and header map.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Largest CGI header block accepted from http-backend.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The two git services the gate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}

/// A request the gate will hand to http-backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest<'a> {
    pub repo: &'a str,
    pub service: Service,
    /// `GET …/info/refs?service=…` (ref advertisement) rather than the `POST` RPC.
    pub advertisement: bool,
}

/// Classifies a request by method, raw (undecoded) path and query. `None` means 404: not
/// `/<name>.git/info/refs?service=git-{upload,receive}-pack` (GET) or
/// `/<name>.git/git-{upload,receive}-pack` (POST) with `<name>` a plain repo name. Whether
/// `<name>` is configured is the caller's check.
pub fn classify<'a>(method: &Method, path: &'a str, query: Option<&str>) -> Option<GitRequest<'a>> {
    let rest = path.strip_prefix('/')?;
    let (repo_git, tail) = rest.split_once('/')?;
    let repo = repo_git.strip_suffix(".git")?;
    if !common::formats::git_gate::is_repo_name(repo) {
        return None;
    }
    let service_of = |s: &str| match s {
        "git-upload-pack" => Some(Service::UploadPack),
        "git-receive-pack" => Some(Service::ReceivePack),
        _ => None,
    };
    if *method == Method::GET && tail == "info/refs" {
        let service = service_of(query?.strip_prefix("service=")?)?;
        return Some(GitRequest { repo, service, advertisement: true });
    }
    if *method == Method::POST {
        let service = service_of(tail)?;
        return Some(GitRequest { repo, service, advertisement: false });
    }
    None
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CgiError {
    #[error("malformed CGI header line {0:?}")]
    BadLine(String),
    #[error("bad CGI Status {0:?}")]
    BadStatus(String),
}

/// Parses CGI response header lines (without the blank terminator; `\r` tolerated).
pub fn parse_headers(lines: &[String]) -> Result<(StatusCode, HeaderMap), CgiError> {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for raw in lines {
        let line = raw.trim_end_matches(['\r', '\n']);
        let (name, value) = line.split_once(':').ok_or_else(|| CgiError::BadLine(line.into()))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| CgiError::BadStatus(value.into()))?;
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| CgiError::BadLine(line.into()))?;
        let value = HeaderValue::from_str(value).map_err(|_| CgiError::BadLine(line.into()))?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

/// One pkt-line `ERR <message>`: what a git client prints as `remote error: <message>`.
pub fn err_pkt(message: &str) -> Vec<u8> {
    let msg: String = message.chars().map(|c| if c == '\n' { ' ' } else { c }).take(60_000).collect();
    let body = format!("ERR {msg}\n");
    let mut out = format!("{:04x}", body.len() + 4).into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_only_smart_http_paths() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            classify(&get, "/app.git/info/refs", Some("service=git-upload-pack")),
            Some(GitRequest { repo: "app", service: Service::UploadPack, advertisement: true })
        );
        assert_eq!(
            classify(&post, "/app.git/git-receive-pack", None),
            Some(GitRequest { repo: "app", service: Service::ReceivePack, advertisement: false })
        );
        for (m, p, q) in [
            (&get, "/app.git/info/refs", None),
            (&get, "/app.git/info/refs", Some("service=git-upload-archive")),
            (&get, "/app.git/HEAD", None),
            (&get, "/app.git/objects/info/packs", None),
            (&get, "/app.git/hooks/pre-receive", None),
            (&get, "/app.git/config", None),
            (&post, "/app/git-upload-pack", None),
            (&post, "/../app.git/git-upload-pack", None),
            (&post, "/%2e%2e/app.git/git-upload-pack", None),
            (&post, "/app.git/../x.git/git-upload-pack", None),
            (&get, "/app.git/../../etc/passwd", None),
            (&post, "/a/b.git/git-upload-pack", None),
            (&post, "/.git/git-upload-pack", None),
            (&get, "/app.git/git-upload-pack", None),
            (&Method::PUT, "/app.git/git-receive-pack", None),
            (&get, "", None),
        ] {
            assert_eq!(classify(m, p, q), None, "{m} {p} {q:?}");
        }
    }

    #[test]
    fn parses_status_and_headers() {
        let lines = vec![
            "Status: 403 Forbidden\r".to_string(),
            "Content-Type: text/plain\r".to_string(),
            "Expires: Fri, 01 Jan 1980 00:00:00 GMT".to_string(),
        ];
        let (s, h) = parse_headers(&lines).unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h.len(), 2);
        let (s, _) = parse_headers(&["Content-Type: application/x-git-upload-pack-result".into()]).unwrap();
        assert_eq!(s, StatusCode::OK);
        assert_eq!(parse_headers(&["nonsense".into()]), Err(CgiError::BadLine("nonsense".into())));
        assert_eq!(parse_headers(&["Status: abc".into()]), Err(CgiError::BadStatus("abc".into())));
    }

    #[test]
    fn err_pkt_is_a_pkt_line() {
        assert_eq!(err_pkt("no"), b"000bERR no\n".to_vec());
        assert_eq!(err_pkt("a\nb"), b"000cERR a b\n".to_vec());
    }
}
