//! `git-gate serve`: the smart-HTTP front. Each git request for a configured repo runs
//! `git http-backend` as a CGI child (through [`crate::proc`]), with the request body streamed
//! into its stdin and its stdout streamed back as the response (headers parsed from the CGI
//! header block), so neither side is ever buffered whole.
//!
//! Every ref advertisement and upload-pack first fetches the mirror from upstream; a failed
//! fetch answers with a git `ERR` packet naming the problem (fail closed). A receive-pack runs
//! under the mirror's lock; its pre-receive hook ([`crate::hook`]) enforces policy, scans and
//! forwards upstream. Anything that is not one of the smart-HTTP endpoints of a configured
//! repo is 404.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::formats::GitGateConfig;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;
use tracing::{Instrument, info, info_span, warn};

use crate::cgi::{self, GitRequest, Service};
use crate::mirror::{Mirror, MirrorError};
use crate::proc::{Cmd, wait_bounded};

/// Bound on one http-backend run (a whole clone or push, including the hook's upstream push).
pub const CGI_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `REMOTE_USER` for http-backend (receive-pack is refused without one).
const REMOTE_USER: &str = "agent";

/// Everything `serve` needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub gate: GitGateConfig,
    /// Absolute path of config.json (the hook re-reads it).
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// The binary the pre-receive hook execs (normally `current_exe`).
    pub exe: PathBuf,
    /// Where a push with only low-confidence findings is held for the operator.
    pub hold: Option<crate::hook::Hold>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("creating {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("serving http: {0}")]
    Serve(std::io::Error),
}

struct Gate {
    mirrors: HashMap<String, Arc<Mirror>>,
    repos_dir: PathBuf,
    home: PathBuf,
}

impl Gate {
    async fn prepare(config: &ServeConfig) -> Result<Gate, ServeError> {
        let repos_dir = config.data_dir.join("repos");
        let home = config.data_dir.join("home");
        for d in [&repos_dir, &home] {
            std::fs::create_dir_all(d).map_err(|source| ServeError::DataDir { path: d.clone(), source })?;
        }
        let mut mirrors = HashMap::new();
        for repo in &config.gate.repos {
            let m = Mirror::new(repo.clone(), &repos_dir, &home);
            m.init(&config.exe, &config.config_path, config.hold.as_ref()).await?;
            mirrors.insert(repo.name.clone(), Arc::new(m));
        }
        Ok(Gate { mirrors, repos_dir, home })
    }
}

/// The mirrors, initialised and checked (configuration and hook written, the hook executable):
/// what must hold before the gate says it is listening.
pub struct Prepared(Arc<Gate>);

/// Initialises every mirror; local only (no upstream is contacted).
pub async fn prepare(config: &ServeConfig) -> Result<Prepared, ServeError> {
    Ok(Prepared(Arc::new(Gate::prepare(config).await?)))
}

/// [`prepare`], then [`serve`].
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let prepared = prepare(&config).await?;
    serve(config, prepared, listener, shutdown).await
}

/// Starts each mirror's first fetch in the background, then serves `listener` until `shutdown`
/// resolves; in-flight requests then get [`common::shutdown::GRACE`] to finish.
pub async fn serve(
    config: ServeConfig,
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let gate = prepared.0;
    for m in gate.mirrors.values() {
        let m = m.clone();
        tokio::spawn(async move {
            match m.fetch(Instant::now()).await {
                Ok(()) => info!(repo = m.name(), "mirror fetched from upstream"),
                Err(e) => warn!(repo = m.name(), "initial fetch failed (fetches will retry and fail closed): {e}"),
            }
        });
    }
    info!(repos = gate.mirrors.len(), data_dir = %config.data_dir.display(), "git-gate serving");
    let app = axum::Router::new().fallback(handle).with_state(gate);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop2 = stop.clone();
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { stop2.notified().await });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(ServeError::Serve),
        () = shutdown => stop.notify_one(),
    }
    match tokio::time::timeout(common::shutdown::GRACE, server).await {
        Ok(r) => r.map_err(ServeError::Serve),
        Err(_) => {
            warn!("requests still running after the shutdown grace period; dropping them");
            Ok(())
        }
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// A git-protocol error the client prints as `remote error: <message>`.
fn git_error(req: &GitRequest<'_>, message: &str) -> Response {
    let kind = if req.advertisement { "advertisement" } else { "result" };
    let ct = format!("application/x-{}-{kind}", req.service.name());
    let mut r = Response::new(Body::from(cgi::err_pkt(message)));
    if let Ok(v) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn handle(State(gate): State<Arc<Gate>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let arrived = Instant::now();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let Some(greq) = cgi::classify(req.method(), &path, query.as_deref()) else {
        info!(method = %req.method(), path, "404: not a git endpoint");
        return not_found();
    };
    let Some(mirror) = gate.mirrors.get(greq.repo).cloned() else {
        info!(repo = greq.repo, "404: repo not configured");
        return not_found();
    };
    let span = info_span!("git", repo = greq.repo, service = greq.service.name(), adv = greq.advertisement, %peer);
    async {
        // Fresh refs before every advertisement and upload-pack (also before a push's
        // advertisement, so policy and leases are judged against the upstream's state).
        if (greq.advertisement || greq.service == Service::UploadPack)
            && let Err(e) = mirror.fetch(arrived).await
        {
            warn!("{e}");
            return git_error(&greq, &format!("git-gate: {e}"));
        }
        let guard =
            if greq.service == Service::ReceivePack && !greq.advertisement { Some(mirror.lock().await) } else { None };
        match backend(&gate, &path, query.as_deref(), peer, req, guard).await {
            Ok(r) => r,
            Err(e) => {
                warn!("http-backend: {e}");
                (StatusCode::BAD_GATEWAY, format!("git-gate: {e}\n")).into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// Runs http-backend for one request and streams its answer back.
async fn backend(
    gate: &Gate,
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
    req: Request,
    guard: Option<tokio::sync::OwnedMutexGuard<crate::mirror::FetchState>>,
) -> Result<Response, String> {
    let mut cmd = Cmd::git(&gate.repos_dir, &gate.home, CGI_TIMEOUT);
    cmd.arg("http-backend").describe("git http-backend");
    cmd.env("GIT_PROJECT_ROOT", &gate.repos_dir)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query.unwrap_or(""))
        .env("REQUEST_METHOD", req.method().as_str())
        .env("REMOTE_USER", REMOTE_USER)
        .env("REMOTE_ADDR", peer.ip().to_string());
    let h = req.headers();
    let header_str = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(v) = header_str(header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", v);
    }
    if let Some(v) = header_str(header::CONTENT_LENGTH) {
        cmd.env("CONTENT_LENGTH", v);
    }
    if let Some(v) = header_str(header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = h.get("git-protocol").and_then(|v| v.to_str().ok()) {
        cmd.env("GIT_PROTOCOL", v);
    }
    let (mut child, what, timeout) = cmd.spawn_piped().map_err(|e| e.to_string())?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("http-backend started without pipes".into());
    };

    // Request body → stdin, chunk by chunk; EOF when the body ends.
    let mut body = req.into_body().into_data_stream();
    tokio::spawn(
        async move {
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(bytes) => {
                        if stdin.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!("reading the request body: {e}");
                        break;
                    }
                }
            }
            let _ = stdin.shutdown().await;
        }
        .in_current_span(),
    );
    // stderr → log (http-backend's own complaints; hook output goes to the client in-band).
    tokio::spawn(
        async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                warn!("http-backend: {line}");
            }
        }
        .in_current_span(),
    );
    // The child (and, for a push, the mirror lock) lives until http-backend exits.
    tokio::spawn(
        async move {
            let _guard = guard;
            match wait_bounded(&mut child, &what, timeout).await {
                Ok(s) if s.success() => {}
                Ok(s) => warn!("http-backend exited with {s}"),
                Err(e) => warn!("{e}"),
            }
        }
        .in_current_span(),
    );

    let mut out = BufReader::new(stdout);
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = String::new();
        let n = (&mut out).take((cgi::MAX_HEADER_BYTES - total) as u64 + 1).read_line(&mut line).await;
        let n = n.map_err(|e| format!("reading http-backend output: {e}"))?;
        if n == 0 {
            return Err("http-backend ended before its headers".into());
        }
        total += n;
        if total > cgi::MAX_HEADER_BYTES {
            return Err("http-backend header block too large".into());
        }
        if line.trim_end_matches(['\r', '\n']).is_empty() {
            break;
        }
        lines.push(line);
    }
    let (status, headers) = cgi::parse_headers(&lines).map_err(|e| e.to_string())?;
    let mut resp = Response::new(Body::from_stream(ReaderStream::new(out)));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}
