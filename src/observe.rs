//! Hooks through which the adapters and the engine report what they do, without knowing who
//! listens: the daemon's metrics count HTTP exchanges, a terminal progress bar follows the
//! refreshes of a cycle.
//!
//! An [`Exchange`] carries a bounded endpoint id (a Table API table, the companion, a token
//! endpoint's host), never a URL with its query, a header or a body: whatever an observer does
//! with it cannot leak a token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which peer an exchange was with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The ServiceNow instance (Table API and companion).
    Instance,
    /// An OAuth provider's token endpoint.
    TokenEndpoint,
}

impl Peer {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Peer::Instance => "instance",
            Peer::TokenEndpoint => "token_endpoint",
        }
    }
}

/// One HTTP request and its answer, as far as an observer may know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Who answered.
    pub peer: Peer,
    /// A bounded id of the endpoint: `table/oauth_credential`, `companion/secrets`, or a token
    /// endpoint's `host[:port]`.
    pub endpoint: String,
    /// The HTTP method.
    pub method: String,
    /// The HTTP status; `None` when no answer came (connection failed, timed out, or the
    /// request was abandoned).
    pub status: Option<u16>,
    /// From sending the request to the end of reading the answer (or to the failure).
    pub duration: Duration,
}

/// Listens to what the keeper does. Every method has an empty default, so a listener implements
/// only what it cares about.
pub trait Observe: Send + Sync + fmt::Debug {
    /// An HTTP exchange ended (successfully or not).
    fn exchange(&self, exchange: &Exchange) {
        let _ = exchange;
    }

    /// A cycle starts refreshing `total` credentials.
    fn refreshes_started(&self, total: usize) {
        let _ = total;
    }

    /// One of those refreshes ended, whatever its outcome.
    fn refresh_finished(&self) {}

    /// The cycle's refreshes are over.
    fn refreshes_ended(&self) {}
}

/// A cheap, cloneable handle on an optional listener: what the adapters and the engine hold.
#[derive(Clone, Default)]
pub struct Observer(Option<Arc<dyn Observe>>);

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

impl Observer {
    /// A handle that reports to `listener`.
    pub fn new(listener: Arc<dyn Observe>) -> Observer {
        Observer(Some(listener))
    }

    /// A handle that reports nowhere.
    pub fn none() -> Observer {
        Observer(None)
    }

    /// Starts timing one request. The exchange is reported when the probe is dropped, so every
    /// exit path of the caller — an early `?`, a cancelled future — is counted, not only the
    /// happy one.
    pub fn probe(&self, peer: Peer, endpoint: String, method: &str) -> Probe {
        Probe {
            observer: self.0.clone(),
            peer,
            endpoint,
            method: method.to_string(),
            status: None,
            started: Instant::now(),
        }
    }

    /// See [`Observe::refreshes_started`].
    pub fn refreshes_started(&self, total: usize) {
        if let Some(o) = &self.0 {
            o.refreshes_started(total);
        }
    }

    /// See [`Observe::refresh_finished`].
    pub fn refresh_finished(&self) {
        if let Some(o) = &self.0 {
            o.refresh_finished();
        }
    }

    /// See [`Observe::refreshes_ended`].
    pub fn refreshes_ended(&self) {
        if let Some(o) = &self.0 {
            o.refreshes_ended();
        }
    }
}

/// Times one request; reports it when dropped. See [`Observer::probe`].
#[derive(Debug)]
pub struct Probe {
    observer: Option<Arc<dyn Observe>>,
    peer: Peer,
    endpoint: String,
    method: String,
    status: Option<u16>,
    started: Instant,
}

impl Probe {
    /// Notes the answer's status.
    pub fn status(&mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(o) = &self.observer {
            o.exchange(&Exchange {
                peer: self.peer,
                endpoint: std::mem::take(&mut self.endpoint),
                method: std::mem::take(&mut self.method),
                status: self.status,
                duration: self.started.elapsed(),
            });
        }
    }
}

/// The endpoint id of a call to the instance: `table/<table>` for the Table API (the row's
/// sys_id left out), `companion/<resource>` for the companion, `other` for anything else.
/// `base_path` is the instance URL's own path (usually empty); `companion_path` the configured
/// companion base path. Table and resource names come from the keeper's code, so the set of ids
/// is small and fixed.
pub fn instance_endpoint(path: &str, base_path: &str, companion_path: &str) -> String {
    let path = path
        .strip_prefix(base_path.trim_end_matches('/'))
        .unwrap_or(path);
    if let Some(rest) = path.strip_prefix(companion_path.trim_end_matches('/'))
        && !companion_path.is_empty()
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let resource = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        return if resource.is_empty() {
            "companion".to_string()
        } else {
            format!("companion/{}", bounded(resource))
        };
    }
    let mut segments = path.trim_start_matches('/').split('/');
    // /api/now/table/<t>, /api/now/v1/table/<t>, /api/now/v2/table/<t>
    if segments.next() == Some("api") && segments.next() == Some("now") {
        let mut next = segments.next();
        if next.is_some_and(|s| s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())) {
            next = segments.next();
        }
        if next == Some("table")
            && let Some(table) = segments.next().filter(|t| !t.is_empty())
        {
            return format!("table/{}", bounded(table));
        }
    }
    "other".to_string()
}

/// The endpoint id of a token endpoint: its host and, when not the scheme's default, its port.
/// The path (which may hold a tenant id) and the query are left out.
pub fn token_endpoint(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("unknown");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Keeps an id segment to identifier characters, so no odd byte reaches a label.
fn bounded(segment: &str) -> String {
    segment
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn instance_endpoints_are_bounded_ids() {
        let companion = "/api/x_snok/oauth_keeper";
        let cases = [
            ("/api/now/table/oauth_credential", "table/oauth_credential"),
            (
                "/api/now/table/oauth_credential/0123456789abcdef0123456789abcdef",
                "table/oauth_credential",
            ),
            ("/api/now/v2/table/sys_user", "table/sys_user"),
            ("/api/x_snok/oauth_keeper/secrets", "companion/secrets"),
            ("/api/x_snok/oauth_keeper", "companion"),
            ("/api/x_snok/oauth_keeperish/secrets", "other"),
            ("/login.do", "other"),
        ];
        for (path, want) in cases {
            assert_eq!(instance_endpoint(path, "", companion), want, "{path}");
        }
        assert_eq!(
            instance_endpoint("/sn/api/now/table/sys_user", "/sn", companion),
            "table/sys_user"
        );
    }

    #[test]
    fn token_endpoints_are_hosts_without_path_or_query() {
        let url = url::Url::parse(
            "https://login.microsoftonline.com/tenant-id/oauth2/v2.0/token?x=secret",
        )
        .unwrap();
        assert_eq!(token_endpoint(&url), "login.microsoftonline.com");
        let local = url::Url::parse("http://127.0.0.1:8080/oauth/entra/token").unwrap();
        assert_eq!(token_endpoint(&local), "127.0.0.1:8080");
    }

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Exchange>>);

    impl Observe for Recorder {
        fn exchange(&self, exchange: &Exchange) {
            self.0.lock().unwrap().push(exchange.clone());
        }
    }

    #[test]
    fn a_probe_reports_on_every_exit_path() {
        let recorder = Arc::new(Recorder::default());
        let observer = Observer::new(recorder.clone());
        {
            let mut probe = observer.probe(Peer::Instance, "table/sys_user".into(), "GET");
            probe.status(200);
        }
        {
            // Dropped before any answer: an abandoned or failed request.
            let _probe = observer.probe(Peer::TokenEndpoint, "idp.example".into(), "POST");
        }
        let seen = recorder.0.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].status, Some(200));
        assert_eq!(seen[0].endpoint, "table/sys_user");
        assert_eq!(seen[1].status, None);
        assert_eq!(seen[1].peer, Peer::TokenEndpoint);
        drop(seen);
        // A handle without a listener costs nothing and reports nowhere.
        drop(Observer::none().probe(Peer::Instance, "x".into(), "GET"));
    }
}
