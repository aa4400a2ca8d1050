//! The MCP server: an rmcp `ServerHandler` whose tools file requests in the bottle's queue and
//! wait (bounded) for the operator's answer, served over streamable HTTP at `/mcp` by axum.
//!
//! Every request passes [`crate::access`] first (Host, Origin, bearer token); a refused one
//! never reaches rmcp, so it files nothing.
//!
//! Invariants: a tool call never reports approval unless a parseable response file says so; a
//! timeout is a normal `{"status":"pending","id":…}` result and the request stays queued; a
//! request id is only ever looked up in this bottle's queue and only if it was filed for this
//! bottle; argument values are never logged.

use std::future::Future;
use std::sync::Arc;

use common::formats::{QueueRequest, QueueResponse};
use common::queue::Queue;
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::config::Config;
use crate::tools::{self, InvalidArguments};

/// The name the server gives in `initialize` / `server/discover`.
pub const SERVER_NAME: &str = "bot-bottle-supervise";

const INSTRUCTIONS: &str = "Tools to reach the human operator of this sandbox: ask a question, ask for a blocked \
network host or a capability, see which hosts are allowed, and check on earlier requests. Answers can take a while; \
a 'pending' result is normal — keep working and check_request later.";

/// Most unanswered requests one bottle may have queued: an agent cannot flood the operator.
pub const MAX_UNANSWERED: usize = 64;

/// One handler per MCP session; cheap to clone (everything shared is behind an `Arc`).
#[derive(Clone)]
pub struct Supervise {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    queue: Queue,
    /// Cancelled at shutdown: waiting tool calls then answer `pending` at once.
    shutdown: CancellationToken,
    /// Tool calls still running, so shutdown can let their answers out before closing streams.
    in_flight: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts a running tool call; wakes the shutdown drain when the last one ends.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> InFlight<'a> {
        inner.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Supervise {
    pub fn new(config: Config, shutdown: CancellationToken) -> Supervise {
        let queue = Queue::new(&config.queue_dir);
        Supervise {
            inner: Arc::new(Inner {
                config,
                queue,
                shutdown,
                in_flight: Default::default(),
                idle: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The tools with their schemas and descriptions, as `tools/list` shows them.
    pub fn tools() -> Vec<Tool> {
        fn schema<T: schemars::JsonSchema + 'static>() -> Arc<rmcp::model::JsonObject> {
            schema_for_input::<T>().unwrap_or_else(|_| schema_for_empty_input())
        }
        let read_only = ToolAnnotations::new().read_only(true);
        vec![
            Tool::new(tools::ASK_OPERATOR, tools::ASK_OPERATOR_DESCRIPTION, schema::<tools::AskOperator>())
                .with_title("Ask the operator"),
            Tool::new(tools::REQUEST_EGRESS, tools::REQUEST_EGRESS_DESCRIPTION, schema::<tools::RequestEgress>())
                .with_title("Request network access"),
            Tool::new(
                tools::REQUEST_CAPABILITY,
                tools::REQUEST_CAPABILITY_DESCRIPTION,
                schema::<tools::RequestCapability>(),
            )
            .with_title("Request a capability"),
            Tool::new(tools::LIST_EGRESS_ROUTES, tools::LIST_EGRESS_ROUTES_DESCRIPTION, schema_for_empty_input())
                .with_title("List allowed network routes")
                .with_annotations(read_only.clone()),
            Tool::new(tools::CHECK_REQUEST, tools::CHECK_REQUEST_DESCRIPTION, schema::<tools::CheckRequest>())
                .with_title("Check an earlier request")
                .with_annotations(read_only),
        ]
    }

    /// Resolves when no tool call is running (used after shutdown began).
    pub async fn drained(&self) {
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    async fn dispatch(&self, name: &str, args: Option<rmcp::model::JsonObject>) -> Result<CallToolResult, ErrorData> {
        let _running = InFlight::enter(&self.inner);
        let outcome = match name {
            tools::ASK_OPERATOR => {
                match tools::parse::<tools::AskOperator>(tools::ASK_OPERATOR, args).and_then(|a| a.validate()) {
                    Ok(a) => self.file_and_wait(tools::ASK_OPERATOR, tools::to_value(a)).await,
                    Err(e) => Err(e.to_string()),
                }
            }
            tools::REQUEST_EGRESS => {
                match tools::parse::<tools::RequestEgress>(tools::REQUEST_EGRESS, args).and_then(|a| a.validate()) {
                    Ok(a) => self.file_and_wait(tools::REQUEST_EGRESS, tools::to_value(a)).await,
                    Err(e) => Err(e.to_string()),
                }
            }
            tools::REQUEST_CAPABILITY => {
                match tools::parse::<tools::RequestCapability>(tools::REQUEST_CAPABILITY, args)
                    .and_then(|a| a.validate())
                {
                    Ok(a) => self.file_and_wait(tools::REQUEST_CAPABILITY, tools::to_value(a)).await,
                    Err(e) => Err(e.to_string()),
                }
            }
            tools::LIST_EGRESS_ROUTES => match tools::parse::<tools::ListEgressRoutes>(tools::LIST_EGRESS_ROUTES, args)
            {
                Ok(_) => self.list_routes(),
                Err(e) => Err(e.to_string()),
            },
            tools::CHECK_REQUEST => match tools::parse::<tools::CheckRequest>(tools::CHECK_REQUEST, args) {
                Ok(a) => self.check(&a.id),
                Err(e) => Err(e.to_string()),
            },
            other => {
                return Err(ErrorData::invalid_params(
                    format!(
                        "unknown tool {other:?}; the tools are ask_operator, request_egress, request_capability, list_egress_routes, check_request"
                    ),
                    None,
                ));
            }
        };
        Ok(match outcome {
            Ok(v) => CallToolResult::structured(v),
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        })
    }

    async fn file_and_wait(&self, tool: &'static str, arguments: Value) -> Result<Value, String> {
        let inner = &self.inner;
        if self.unanswered() >= MAX_UNANSWERED {
            return Err(format!(
                "{MAX_UNANSWERED} requests are already waiting for the operator; \
                 check on them with check_request before asking again"
            ));
        }
        let queue = inner.queue.clone();
        let bottle = inner.config.bottle.clone();
        let req = tokio::task::spawn_blocking(move || queue.file(&bottle, tool, arguments))
            .await
            .map_err(|e| format!("cannot file the request: {e}"))?
            .map_err(|e| {
                tracing::error!(bottle = %inner.config.bottle, tool, "cannot file request: {e}");
                format!("cannot file the request with the operator: {e}")
            })?;
        tracing::info!(bottle = %req.bottle, tool, id = %req.id, "request filed");
        let answer = tokio::select! {
            r = inner.queue.wait(&req.id, inner.config.wait_timeout) => r,
            () = inner.shutdown.cancelled() => Ok(None),
        };
        match answer {
            Ok(Some(resp)) => {
                tracing::info!(bottle = %req.bottle, tool, id = %req.id, status = ?resp.status, "answered");
                Ok(answered(&req, &resp))
            }
            Ok(None) => {
                tracing::info!(bottle = %req.bottle, tool, id = %req.id, "no answer yet: pending");
                Ok(json!({"status": "pending", "id": req.id}))
            }
            Err(e) => Err(broken_answer(&req.id, &e)),
        }
    }

    /// Requests of this queue with no answer yet (unreadable entries count too).
    fn unanswered(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(self.inner.queue.dir()) else { return 0 };
        rd.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".request.json")).map(str::to_string))
            .filter(|id| !id.starts_with('.') && !self.inner.queue.response_path(id).exists())
            .count()
    }

    fn list_routes(&self) -> Result<Value, String> {
        let Some(path) = &self.inner.config.routes else {
            return Err("this sandbox's route list is not available to supervise (no --routes configured); \
                        ask the operator with ask_operator instead"
                .into());
        };
        match common::formats::Routes::load(path) {
            Ok(routes) => Ok(tools::public_routes(&routes)),
            Err(e) => {
                tracing::error!(bottle = %self.inner.config.bottle, "cannot read routes: {e}");
                Err("the route list cannot be read right now; try again shortly".into())
            }
        }
    }

    fn check(&self, id: &str) -> Result<Value, String> {
        let not_found = || format!("no request with id {id:?} in this sandbox; use the id from a 'pending' result");
        let req = match self.inner.queue.request(id) {
            Ok(Some(req)) if req.bottle == self.inner.config.bottle => req,
            Ok(_) => return Err(not_found()),
            Err(e) => {
                tracing::error!(bottle = %self.inner.config.bottle, id, "unreadable request: {e}");
                return Err(not_found());
            }
        };
        match self.inner.queue.response(id) {
            Ok(Some(resp)) => Ok(answered(&req, &resp)),
            Ok(None) => Ok(json!({"status": "pending", "id": req.id, "tool": req.tool})),
            Err(e) => Err(broken_answer(id, &e)),
        }
    }
}

fn answered(req: &QueueRequest, resp: &QueueResponse) -> Value {
    let mut v = json!({"status": resp.status, "id": req.id, "tool": req.tool, "notes": resp.notes});
    if let Some(a) = &resp.arguments {
        v["arguments"] = a.clone();
    }
    v
}

/// A response file that does not parse is never taken as an answer, let alone an approval.
fn broken_answer(id: &str, e: &common::formats::FormatError) -> String {
    tracing::error!(id, "unreadable answer: {e}");
    format!("the operator's answer to request {id} is unreadable; ask the operator to answer it again")
}

impl ServerHandler for Supervise {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(Supervise::tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        Supervise::tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.dispatch(&request.name, request.arguments).await.map(Into::into)
    }
}

impl From<InvalidArguments> for ErrorData {
    fn from(e: InvalidArguments) -> ErrorData {
        ErrorData::invalid_params(e.to_string(), None)
    }
}

/// Serves MCP at `/mcp` on `listener` until `shutdown` resolves, then drains in-flight calls
/// (they answer `pending` at once) for at most [`common::shutdown::GRACE`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Two stages: `calls` makes waiting tool calls answer `pending`; once they have (bounded),
    // `transport` closes the MCP sessions and their streams so the HTTP server can finish.
    let calls = CancellationToken::new();
    let transport = CancellationToken::new();
    // Host, Origin and token are checked by `guard` on every request before rmcp sees it
    // (rmcp's own Host check compares names without normalising them, so it is off).
    let http = StreamableHttpServerConfig::default()
        .with_cancellation_token(transport.clone())
        .disable_allowed_hosts()
        .disable_allowed_origins();
    let access = Arc::new(Access::for_this_host(&config.allowed_hosts, config.auth_token.as_ref()));
    if !access.has_token() {
        tracing::warn!(
            bottle = %config.bottle,
            "no --auth-token-file: supervise is unauthenticated; any client that reaches it and names an allowed \
             Host can file requests as this bottle (the orchestrator always sets a token)"
        );
    }
    let handler = Supervise::new(config, calls.clone());
    let factory = handler.clone();
    let service: StreamableHttpService<Supervise, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(factory.clone()), Default::default(), http);
    let router =
        axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn_with_state(access, guard));
    let server = axum::serve(listener, router).with_graceful_shutdown({
        let (calls, transport) = (calls.clone(), transport.clone());
        async move {
            shutdown.await;
            calls.cancel();
            let _ = tokio::time::timeout(common::shutdown::GRACE, handler.drained()).await;
            // Let the last answers leave before their streams are closed.
            tokio::time::sleep(STREAM_FLUSH).await;
            transport.cancel();
        }
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        () = async { transport.cancelled().await; tokio::time::sleep(common::shutdown::GRACE).await } => {
            tracing::warn!("connections still open after the grace period; closing them");
            Ok(())
        }
    }
}

/// Refuses (before anything is filed) a request whose Host, Origin or token [`Access`] rejects.
async fn guard(
    axum::extract::State(access): axum::extract::State<Arc<Access>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match access.check(req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => {
            tracing::warn!(method = %req.method(), path = req.uri().path(), "request refused: {refused}");
            let mut resp = axum::response::Response::new(axum::body::Body::from(format!(
                "bot-bottle supervise: refused: {refused}\n"
            )));
            *resp.status_mut() = refused.status();
            let h = resp.headers_mut();
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
            if refused.status() == http::StatusCode::UNAUTHORIZED {
                h.insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"supervise\""));
            }
            resp
        }
    }
}

/// Pause between the last tool call returning and the MCP streams being closed at shutdown.
const STREAM_FLUSH: std::time::Duration = std::time::Duration::from_millis(250);
