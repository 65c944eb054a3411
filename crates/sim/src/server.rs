//! Serving: a listener whose connections the simulator can cut without answering, and the
//! request pipeline (record → fault → route → respond).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::fault::{self, FaultAction, HIBERNATING_PAGE, TRANSACTION_CANCELLED_ERROR};
use crate::state::Shared;
use crate::{RecordedRequest, Target, answer, companion, instance, table_api};

/// Largest request body the simulator reads.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Per-connection switch: once killed, the connection fails every read and write, so hyper
/// closes it without having sent a byte of the pending response.
#[derive(Debug, Default)]
pub(crate) struct ConnCtl {
    killed: AtomicBool,
}

impl ConnCtl {
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// Connection info handed to the handler: the connection's kill switch.
#[derive(Clone, Debug)]
pub(crate) struct ConnAddr {
    pub ctl: Arc<ConnCtl>,
}

impl Connected<IncomingStream<'_, SimListener>> for ConnAddr {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// TCP listener wrapping each accepted stream in a killable [`SimIo`].
pub(crate) struct SimListener {
    pub inner: TcpListener,
    pub shared: Arc<Shared>,
}

impl Listener for SimListener {
    type Io = SimIo;
    type Addr = ConnAddr;

    async fn accept(&mut self) -> (SimIo, ConnAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let ctl = Arc::new(ConnCtl::default());
                    let mut conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
                    conns.retain(|c| c.strong_count() > 0);
                    conns.push(Arc::downgrade(&ctl));
                    drop(conns);
                    return (
                        SimIo {
                            stream,
                            ctl: Arc::clone(&ctl),
                        },
                        ConnAddr { ctl },
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnAddr> {
        self.inner.local_addr()?;
        Ok(ConnAddr {
            ctl: Arc::new(ConnCtl::default()),
        })
    }
}

/// A TCP stream that starts failing once its [`ConnCtl`] is killed.
pub(crate) struct SimIo {
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by fault injection",
    )
}

impl AsyncRead for SimIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ctl.is_killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ctl.is_killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ctl.is_killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Kills every live connection (shutdown).
pub(crate) fn kill_all(shared: &Shared) {
    let conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    conns
        .iter()
        .filter_map(Weak::upgrade)
        .for_each(|c| c.kill());
}

/// A request as the simulator's handlers see it.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub method: String,
    pub path: String,
    /// Raw, undecoded query string.
    pub query: String,
    /// Header names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One decoded query parameter, with its raw `key=value` spelling for `Link` echoing.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub key: String,
    pub value: String,
    pub raw: String,
}

impl Incoming {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a field of a form-encoded body; empty when there is none.
    pub(crate) fn form_field(&self, name: &str) -> String {
        url::form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    pub(crate) fn params(&self) -> Vec<Param> {
        self.query
            .split('&')
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                let (key, value) = url::form_urlencoded::parse(raw.as_bytes())
                    .next()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .unwrap_or_default();
                Param {
                    key,
                    value,
                    raw: raw.to_owned(),
                }
            })
            .collect()
    }

    /// The first value of a parameter.
    pub(crate) fn param(&self, key: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|p| p.key == key)
            .map(|p| p.value)
    }
}

/// A response before it goes on the wire (so faults can mangle it).
#[derive(Debug, Clone)]
pub(crate) struct SimResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SimResponse {
    fn with_content_type(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }
}

/// The router: one fallback handler that does its own routing, so every request (routed or
/// not) is recorded and subject to faults.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Which part of the simulator a path belongs to.
pub(crate) fn classify(path: &str, companion_path: &str) -> Target {
    let table_prefixes = [
        "/api/now/table/",
        "/api/now/v1/table/",
        "/api/now/v2/table/",
    ];
    if table_prefixes.iter().any(|p| path.starts_with(p)) {
        return Target::TableApi;
    }
    if path == companion_path
        || path
            .strip_prefix(companion_path)
            .is_some_and(|rest| rest.starts_with('/'))
    {
        return Target::Companion;
    }
    if path == crate::INSTANCE_TOKEN_PATH {
        return Target::InstanceOAuth;
    }
    if let Some(rest) = path.strip_prefix("/oauth2/")
        && let Some(id) = rest.split('/').next()
        && !id.is_empty()
    {
        return Target::Provider(id.to_owned());
    }
    // Entra's own shapes, the provider id standing for the tenant:
    // `/{tenant}/oauth2/token` (v1) and `/{tenant}/oauth2/v2.0/token` (v2).
    if let Some((tenant, rest)) = path.trim_start_matches('/').split_once('/')
        && !tenant.is_empty()
        && (rest == "oauth2/token" || rest == "oauth2/v2.0/token")
    {
        return Target::Provider(tenant.to_owned());
    }
    Target::Other
}

enum Outcome {
    Respond(SimResponse),
    Drop,
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes.to_vec(),
        Err(_) => {
            let mut resp = Response::new(Body::from("request body too large or unreadable"));
            *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return resp;
        }
    };
    let incoming = Incoming {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let target = classify(&incoming.path, &shared.companion_path);
    let (seq, fault) = arrive(&shared, &incoming, &target);
    let outcome = match fault {
        None => Outcome::Respond(process(&shared, &incoming, &target)),
        Some(FaultAction::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            Outcome::Respond(process(&shared, &incoming, &target))
        }
        Some(FaultAction::Status {
            status,
            body,
            headers,
        }) => {
            let mut resp = SimResponse {
                status,
                headers: Vec::new(),
                body: body.clone().into_bytes(),
            };
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                let trimmed = body.trim_start();
                let content_type = if trimmed.starts_with('{') || trimmed.starts_with('[') {
                    "application/json;charset=UTF-8"
                } else {
                    "text/plain;charset=UTF-8"
                };
                resp.headers
                    .push(("Content-Type".to_owned(), content_type.to_owned()));
            }
            resp.headers.extend(headers);
            Outcome::Respond(resp)
        }
        Some(FaultAction::DiscardFields(fields)) => Outcome::Respond(process(
            &shared,
            &without_fields(incoming, &fields),
            &target,
        )),
        Some(FaultAction::DropConnection) => Outcome::Drop,
        Some(FaultAction::DropAfterProcessing) => {
            let _ = process(&shared, &incoming, &target);
            Outcome::Drop
        }
        Some(FaultAction::HtmlPage) => Outcome::Respond(SimResponse::with_content_type(
            200,
            "text/html;charset=UTF-8",
            HIBERNATING_PAGE,
        )),
        Some(FaultAction::Garbage) => Outcome::Respond(SimResponse::with_content_type(
            200,
            "application/json;charset=UTF-8",
            "<<<\u{1}this is not JSON: upstream proxy error>>> {\"result\":",
        )),
        Some(FaultAction::TruncatedJson) => {
            let mut resp = process(&shared, &incoming, &target);
            let half = resp.body.len() / 2;
            resp.body.truncate(half);
            resp.status = 200;
            Outcome::Respond(resp)
        }
        Some(FaultAction::TransactionCancelled) => {
            let resp = process(&shared, &incoming, &target);
            Outcome::Respond(cancelled(resp))
        }
        Some(FaultAction::Bytes {
            status,
            body,
            content_type,
        }) => Outcome::Respond(SimResponse::with_content_type(status, &content_type, body)),
        Some(FaultAction::EchoRequest { status }) => {
            Outcome::Respond(echo(&incoming, &target, status))
        }
    };
    match outcome {
        Outcome::Respond(resp) => {
            finish(&shared, seq, resp.status);
            to_response(resp)
        }
        Outcome::Drop => {
            finish(&shared, seq, 0);
            conn.ctl.kill();
            Response::new(Body::empty())
        }
    }
}

/// The request as a data policy or business rule that throws `fields` of a JSON body away
/// leaves it: the rest is processed as sent.
fn without_fields(mut req: Incoming, fields: &[String]) -> Incoming {
    if let Ok(serde_json::Value::Object(mut body)) =
        serde_json::from_slice::<serde_json::Value>(&req.body)
    {
        for field in fields {
            body.remove(field);
        }
        req.body = serde_json::Value::Object(body).to_string().into_bytes();
    }
    req
}

/// An error repeating what `req` carried in every text field of `target`'s error shape, after
/// 290 characters of padding (see [`FaultAction::EchoRequest`]).
fn echo(req: &Incoming, target: &Target, status: u16) -> SimResponse {
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let authorization = req.header("authorization").unwrap_or_default().to_owned();
    let pad = "x".repeat(290);
    let value = match target {
        Target::Provider(_) => {
            let field = |name: &str| req.form_field(name);
            serde_json::json!({
                "error": field("refresh_token"),
                "error_description": format!("{pad}{} was refused; the request was {body}", field("refresh_token")),
                "suberror": field("client_secret"),
                "trace_id": body,
                "correlation_id": format!("{authorization} {}", field("client_assertion")),
            })
        }
        _ => {
            let written = serde_json::from_slice::<serde_json::Value>(&req.body)
                .ok()
                .and_then(|v| {
                    v.get("token_received")
                        .and_then(|t| t.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            serde_json::json!({
                "error": {
                    "message": format!("{pad}{written} is not a valid value"),
                    "detail": format!("{body} {authorization}"),
                },
                "status": "failure",
            })
        }
    };
    SimResponse::with_content_type(status, "application/json;charset=UTF-8", value.to_string())
}

/// Records the request, counts token POSTs and picks the fault (all under one lock, so the
/// log order is the arrival order).
fn arrive(shared: &Shared, req: &Incoming, target: &Target) -> (u64, Option<FaultAction>) {
    let mut st = shared.lock();
    let seq = st.next_seq;
    st.next_seq += 1;
    let headers = req
        .headers
        .iter()
        .map(|(k, v)| {
            // The scheme stays visible (tests tell Basic from Bearer); the credential does not.
            let v = if k.eq_ignore_ascii_case("authorization") {
                match v.trim().split_once(' ') {
                    Some((scheme, _)) => format!("{scheme} <redacted>"),
                    None => "<redacted>".to_owned(),
                }
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    st.log.push((
        seq,
        RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers,
            // The instance's token endpoint gets the integration user's password and client
            // secret: they stay out of the log.
            body: if *target == Target::InstanceOAuth {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(&req.body).into_owned()
            },
            status: 0,
            target: target.clone(),
            at: crate::clock::wall_now(),
        },
    ));
    if let Target::Provider(id) = target
        && req.method.eq_ignore_ascii_case("POST")
        && let Some(provider) = st.providers.get_mut(id)
    {
        provider.token_requests += 1;
    }
    let action = fault::take(&mut st.faults, target, &req.method, &req.path);
    (seq, action)
}

fn finish(shared: &Shared, seq: u64, status: u16) {
    let mut st = shared.lock();
    if let Some((_, entry)) = st.log.iter_mut().rev().find(|(s, _)| *s == seq) {
        entry.status = status;
    }
}

fn process(shared: &Shared, req: &Incoming, target: &Target) -> SimResponse {
    match target {
        Target::TableApi => table_api::handle(shared, req),
        Target::Companion => companion::handle(shared, req),
        Target::InstanceOAuth => {
            let mut st = shared.lock();
            instance::token_endpoint(&mut st, req)
        }
        Target::Provider(id) => {
            let mut st = shared.lock();
            let now = st.now();
            let st = &mut *st;
            match st.providers.get_mut(id) {
                Some(provider) => provider.token_endpoint(req, now, &mut st.rng),
                None => SimResponse::with_content_type(
                    404,
                    "application/json; charset=utf-8",
                    r#"{"error":"invalid_request","error_description":"Unknown tenant or provider."}"#,
                ),
            }
        }
        Target::Other if req.path.starts_with("/api/") => {
            let mut st = shared.lock();
            if let Err(resp) = answer::authenticate(&mut st, req) {
                return resp;
            }
            answer::error(
                &mut st,
                400,
                "Requested URI does not represent any resource",
                None,
            )
        }
        Target::Other => SimResponse::with_content_type(
            404,
            "text/html;charset=UTF-8",
            "<html><head><title>ServiceNow</title></head><body>Page not found</body></html>",
        ),
    }
}

/// The quota-cancellation answer: HTTP 200, at most half of the result rows, then the error.
fn cancelled(resp: SimResponse) -> SimResponse {
    let rows = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| match v.get("result") {
            Some(Value::Array(rows)) => Some(rows.clone()),
            _ => None,
        });
    let body = match rows {
        Some(rows) => {
            let kept: Vec<Value> = rows.iter().take(rows.len() / 2).cloned().collect();
            format!(
                "{{\"result\":{},{TRANSACTION_CANCELLED_ERROR}}}",
                Value::Array(kept)
            )
        }
        None => format!("{{{TRANSACTION_CANCELLED_ERROR}}}"),
    };
    SimResponse {
        status: 200,
        headers: resp.headers,
        body: body.into_bytes(),
    }
}

fn to_response(resp: SimResponse) -> Response {
    let mut out = Response::new(Body::from(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in resp.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let c = "/api/snok/oauth_keeper";
        assert_eq!(
            classify("/api/now/table/oauth_credential", c),
            Target::TableApi
        );
        assert_eq!(classify("/api/now/v2/table/x/1", c), Target::TableApi);
        assert_eq!(
            classify("/api/snok/oauth_keeper/secrets", c),
            Target::Companion
        );
        assert_eq!(classify("/api/snok/oauth_keeperx", c), Target::Other);
        assert_eq!(
            classify("/oauth2/entra/token", c),
            Target::Provider("entra".to_owned())
        );
        assert_eq!(classify("/oauth2/", c), Target::Other);
        assert_eq!(
            classify("/organizations/oauth2/v2.0/token", c),
            Target::Provider("organizations".to_owned())
        );
        assert_eq!(
            classify("/0b5e1f4c-8d2a-4c55-9d0e-6a1f2c3d4e5f/oauth2/token", c),
            Target::Provider("0b5e1f4c-8d2a-4c55-9d0e-6a1f2c3d4e5f".to_owned())
        );
        assert_eq!(classify("/common/oauth2/authorize", c), Target::Other);
        assert_eq!(classify("/", c), Target::Other);
        assert_eq!(classify("/oauth_token.do", c), Target::InstanceOAuth);
    }

    #[test]
    fn cancellation_keeps_half_the_rows() {
        let resp = SimResponse {
            status: 200,
            headers: Vec::new(),
            body: br#"{"result":[{"a":"1"},{"a":"2"},{"a":"3"},{"a":"4"}]}"#.to_vec(),
        };
        let body = String::from_utf8(cancelled(resp).body).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(parsed["result"].as_array().map(Vec::len), Some(2));
        assert!(body.ends_with(r#""status":"failure"}"#));
    }
}
