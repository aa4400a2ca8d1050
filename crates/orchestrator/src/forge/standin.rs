//! A forge stand-in for tests: an axum server on loopback implementing the deploy-key endpoints
//! of the Gitea/Forgejo and GitHub REST APIs as they are documented — `POST
//! {api}/repos/{owner}/{repo}/keys` with `{title, key, read_only}` → 201 `{id, title, key,
//! read_only}`, 422 when the key or title is already registered, 401 without the token;
//! `GET {api}/repos/{owner}/{repo}/keys` → 200 `[{id, title, key, read_only}]`;
//! `DELETE {api}/repos/{owner}/{repo}/keys/{id}` → 204, 404 when there is no such key — recording
//! every call. A test can make the next calls fail with a chosen status, and have the registered
//! keys written to an `authorized_keys` file (for an `sshd` upstream that trusts exactly them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde::Deserialize;
use serde_json::json;

/// One call the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    /// The `Authorization` scheme it carried (`token`, `Bearer`), or empty.
    pub auth: String,
    /// What it answered.
    pub status: u16,
}

/// A registered deploy key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub id: u64,
    pub title: String,
    pub key: String,
    pub read_only: bool,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    keys: Vec<Key>,
    next_id: u64,
    fail_create: Option<u16>,
    fail_delete: Option<u16>,
    authorized_keys: Option<PathBuf>,
}

/// The stand-in's shared state.
#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Mutex<Inner>>,
    token: String,
    pub addr: SocketAddr,
}

#[derive(Deserialize)]
struct NewKey {
    title: String,
    key: String,
    #[serde(default)]
    read_only: bool,
}

impl StandIn {
    /// Serves on 127.0.0.1:0 from the current tokio runtime; `token` is the one it accepts
    /// (as `token <t>` or `Bearer <t>`).
    pub async fn start(token: &str) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the forge stand-in");
        let addr = listener.local_addr().expect("address");
        let s = StandIn { inner: Arc::default(), token: token.to_string(), addr };
        let app = axum::Router::new()
            .route("/{*rest}", post(create).delete(remove).get(list))
            .route("/", delete(|| async { StatusCode::NOT_FOUND }))
            .with_state(s.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        s
    }

    /// Gitea's API base on this stand-in.
    pub fn gitea_api(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// GitHub's API base on this stand-in.
    pub fn github_api(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn keys(&self) -> Vec<Key> {
        self.inner.lock().unwrap().keys.clone()
    }

    /// Every create answers `status` from now on.
    pub fn fail_create(&self, status: u16) {
        self.inner.lock().unwrap().fail_create = Some(status);
    }

    /// Every delete answers `status` from now on.
    pub fn fail_delete(&self, status: u16) {
        self.inner.lock().unwrap().fail_delete = Some(status);
    }

    /// Forgets key `id` without a call (someone deleted it on the forge).
    pub fn forget(&self, id: u64) {
        let mut i = self.inner.lock().unwrap();
        i.keys.retain(|k| k.id != id);
        write_authorized(&i);
    }

    /// Keeps `file` holding exactly the registered keys.
    pub fn authorized_keys(&self, file: PathBuf) {
        let mut i = self.inner.lock().unwrap();
        i.authorized_keys = Some(file);
        write_authorized(&i);
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else { return false };
        v == format!("token {}", self.token) || v == format!("Bearer {}", self.token)
    }
}

fn write_authorized(i: &Inner) {
    if let Some(f) = &i.authorized_keys {
        let text: String = i.keys.iter().map(|k| format!("{}\n", k.key)).collect();
        std::fs::write(f, text).expect("writing authorized_keys");
    }
}

/// `…/repos/{owner}/{repo}/keys` → the repository, `None` when the path is something else.
fn keys_path(rest: &str) -> Option<(&str, Option<&str>)> {
    let parts: Vec<&str> = rest.split('/').collect();
    let i = parts.iter().position(|p| *p == "repos")?;
    match &parts[i..] {
        ["repos", _, _, "keys"] => Some((rest, None)),
        ["repos", _, _, "keys", id] => Some((rest, Some(id))),
        _ => None,
    }
}

fn scheme(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(' ').next())
        .unwrap_or("")
        .to_string()
}

fn answer(s: &StandIn, req: (&'static str, &str, &HeaderMap), status: StatusCode, body: serde_json::Value) -> Response {
    let (method, path, headers) = req;
    let call = Call { method, path: path.to_string(), auth: scheme(headers), status: status.as_u16() };
    s.inner.lock().unwrap().calls.push(call);
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    (status, Json(body)).into_response()
}

async fn create(State(s): State<StandIn>, Path(rest): Path<String>, headers: HeaderMap, body: String) -> Response {
    let path = format!("/{rest}");
    if !matches!(keys_path(&rest), Some((_, None))) {
        return answer(&s, ("POST", &path, &headers), StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    }
    if !s.authorized(&headers) {
        return answer(&s, ("POST", &path, &headers), StatusCode::UNAUTHORIZED, json!({"message": "Bad credentials"}));
    }
    let fail = s.inner.lock().unwrap().fail_create;
    if let Some(code) = fail {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return answer(&s, ("POST", &path, &headers), status, json!({"message": "refused by the test"}));
    }
    let Ok(new) = serde_json::from_str::<NewKey>(&body) else {
        return answer(
            &s,
            ("POST", &path, &headers),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Invalid request"}),
        );
    };
    let mut i = s.inner.lock().unwrap();
    if i.keys.iter().any(|k| k.key == new.key || k.title == new.title) {
        drop(i);
        return answer(
            &s,
            ("POST", &path, &headers),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "key is already in use"}),
        );
    }
    i.next_id += 1;
    let key = Key { id: i.next_id, title: new.title, key: new.key, read_only: new.read_only };
    i.keys.push(key.clone());
    write_authorized(&i);
    drop(i);
    let body = json!({"id": key.id, "title": key.title, "key": key.key, "read_only": key.read_only});
    answer(&s, ("POST", &path, &headers), StatusCode::CREATED, body)
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    page: Option<u32>,
}

/// `GET …/keys`: every key on page 1 (the documented list shape), none after.
async fn list(
    State(s): State<StandIn>,
    Path(rest): Path<String>,
    Query(q): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/{rest}");
    if !matches!(keys_path(&rest), Some((_, None))) {
        return answer(&s, ("GET", &path, &headers), StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    }
    if !s.authorized(&headers) {
        return answer(&s, ("GET", &path, &headers), StatusCode::UNAUTHORIZED, json!({"message": "Bad credentials"}));
    }
    let keys: Vec<serde_json::Value> = if q.page.unwrap_or(1) > 1 {
        Vec::new()
    } else {
        let i = s.inner.lock().unwrap();
        i.keys.iter().map(|k| json!({"id": k.id, "title": k.title, "key": k.key, "read_only": k.read_only})).collect()
    };
    answer(&s, ("GET", &path, &headers), StatusCode::OK, json!(keys))
}

async fn remove(State(s): State<StandIn>, Path(rest): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/{rest}");
    let Some((_, Some(id))) = keys_path(&rest) else {
        return answer(&s, ("DELETE", &path, &headers), StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    if !s.authorized(&headers) {
        return answer(
            &s,
            ("DELETE", &path, &headers),
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        );
    }
    let fail = s.inner.lock().unwrap().fail_delete;
    if let Some(code) = fail {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return answer(&s, ("DELETE", &path, &headers), status, json!({"message": "refused by the test"}));
    }
    let id: u64 = id.parse().unwrap_or(0);
    let mut i = s.inner.lock().unwrap();
    let before = i.keys.len();
    i.keys.retain(|k| k.id != id);
    let found = i.keys.len() != before;
    write_authorized(&i);
    drop(i);
    if found {
        answer(&s, ("DELETE", &path, &headers), StatusCode::NO_CONTENT, json!(null))
    } else {
        answer(&s, ("DELETE", &path, &headers), StatusCode::NOT_FOUND, json!({"message": "Not Found"}))
    }
}
