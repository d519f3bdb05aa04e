//! The web intake: action pages where supporters sign, an embeddable form for partners' sites,
//! double opt-in links, and a JSON API for organisations that run their own forms.
//!
//! `router(state)` is a plain function over `AppState`, so tests drive it with `oneshot` and
//! `startup::Application` serves it on a socket beside the worker. Every response carries the
//! security headers set here (a strict Content-Security-Policy with no inline script or style,
//! `nosniff`, a referrer policy, and `frame-ancestors` that only the embeddable form relaxes).
//! Errors say "an internal error occurred" to the client and log their chain once.
//!
//! Depends on `domain`, `letters`, `queue` and `config`; the signing itself goes through the
//! same parsing (`Signer::parse`, with the same `AddressPolicy`) and rendering
//! (`intake::prepare`) as the CLI.

mod api;
mod client_addr;
mod commit;
mod form;
mod i18n;
mod pages;
mod signing;
mod tokens;

use crate::config::{Settings, TrustedProxies};
use crate::domain::AddressPolicy;
use crate::letters::Registry;
use crate::queue::Queue;
use anyhow::Context as _;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use governor::{DefaultKeyedRateLimiter, Quota};
use secrecy::ExposeSecret as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The largest request body accepted (form or JSON).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Keys kept by a rate limiter before it is pruned early (bounded memory under a flood).
const LIMITER_MAX_KEYS: usize = 100_000;

/// What every handler shares: campaigns, the queue, keys, limiters and page templates.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    registry: Registry,
    queue: Queue,
    /// Shares commits between concurrent signatures.
    commit: commit::GroupCommit,
    keys: tokens::Keys,
    pages: pages::Pages,
    /// `base_url` without a trailing slash: the start of every link we send.
    base_url: String,
    /// `scheme://host[:port]` of `base_url`, which forms must be posted from.
    origin: String,
    secure_cookies: bool,
    /// The `frame-ancestors` sources for the embeddable form.
    embed_ancestors: String,
    /// SHA-256 of each API key: the keys themselves are not kept, and a presented key is
    /// hashed and compared with every one in constant time (`api::authenticate`).
    api_keys: Vec<[u8; 32]>,
    sign_limiter: DefaultKeyedRateLimiter<IpAddr>,
    api_limiter: DefaultKeyedRateLimiter<usize>,
    /// The proxies whose `X-Forwarded-For` is believed (`client_addr`).
    trusted_proxies: TrustedProxies,
    confirm_expiry_ms: i64,
    /// Which signers' addresses are taken (`smtp.smtputf8`).
    addresses: AddressPolicy,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("base_url", &self.0.base_url)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state for `settings`, over campaigns and a queue already opened. Without
    /// `MISSIVE_HTTP__SECRET` a random secret is made, and a warning says that confirmation
    /// links will not survive a restart.
    pub fn new(settings: &Settings, registry: Registry, queue: Queue) -> anyhow::Result<AppState> {
        let http = &settings.http;
        let keys = match &http.secret {
            Some(s) => tokens::Keys::new(s),
            None => {
                tracing::warn!(
                    "MISSIVE_HTTP__SECRET is not set: using a random secret, so confirmation \
                     links and open forms stop working when Missive restarts"
                );
                tokens::Keys::random()
            }
        };
        let base = url::Url::parse(&http.base_url).context("http.base_url")?;
        let origin = base.origin().ascii_serialization();
        let ancestors = http.frame_ancestor_list();
        let per_minute =
            Quota::per_minute(nonzero(http.sign_per_minute)).allow_burst(nonzero(http.sign_burst));
        let per_second =
            Quota::per_second(nonzero(http.api_per_second)).allow_burst(nonzero(http.api_burst));
        Ok(AppState(Arc::new(Inner {
            registry,
            commit: commit::GroupCommit::start(queue.clone()),
            queue,
            keys,
            pages: pages::Pages::new().context("compiling the page templates")?,
            base_url: http.base_url.trim_end_matches('/').to_owned(),
            origin,
            secure_cookies: http.is_https(),
            embed_ancestors: if ancestors.is_empty() {
                "'none'".to_owned()
            } else {
                ancestors.join(" ")
            },
            api_keys: http
                .api_key_list()
                .iter()
                .map(|k| sha2_bytes(k.expose_secret().as_bytes()))
                .collect(),
            sign_limiter: governor::RateLimiter::keyed(per_minute),
            api_limiter: governor::RateLimiter::keyed(per_second),
            trusted_proxies: http.trusted_proxies.clone(),
            confirm_expiry_ms: i64::from(http.confirm_expiry_days) * 86_400_000,
            addresses: settings.smtp.address_policy(),
        })))
    }

    /// The queue signatures are recorded in.
    pub fn queue(&self) -> &Queue {
        &self.0.queue
    }

    /// The campaigns served.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// The client's address for rate limits: the peer, or behind a trusted proxy the address
    /// `X-Forwarded-For` shows that proxy got the request from (`client_addr`). Requests without
    /// a peer (router tests) count as coming from 0.0.0.0.
    fn client_ip(&self, headers: &HeaderMap, peer: Option<&ConnectInfo<SocketAddr>>) -> IpAddr {
        let peer = peer
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        client_addr::client_address(peer, headers, &self.0.trusted_proxies)
    }

    /// Takes one signing from `ip`'s budget; `Err(seconds)` to wait when it is spent.
    fn check_sign_rate(&self, ip: IpAddr) -> Result<(), u64> {
        let limiter = &self.0.sign_limiter;
        if limiter.len() > LIMITER_MAX_KEYS {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs().max(1)
        })
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

fn sha2_bytes(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// Marks a response that another site may show in a frame (the embeddable form and what
/// follows from it), per `http.frame_ancestors`.
#[derive(Debug, Clone, Copy)]
struct Embeddable;

/// Every route of the web intake.
pub fn router(state: AppState) -> Router {
    use axum::routing::post;
    Router::new()
        .route("/", get(form::index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/static/style.css", get(style_css))
        .route("/static/form.js", get(form_js))
        .route("/c/{slug}", get(form::action_page))
        .route("/c/{slug}/embed", get(form::embed_page))
        .route("/c/{slug}/sign", post(form::sign))
        .route("/c/{slug}/thanks", get(form::thanks))
        .route(
            "/confirm/{token}",
            get(form::confirm_page).post(form::confirm),
        )
        .route(
            "/api/v1/campaigns/{slug}/signatures",
            post(api::record_signature),
        )
        .route("/api/v1/signatures/{id}", get(api::signature))
        .fallback(not_found)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

async fn security_headers(State(state): State<AppState>, mut response: Response) -> Response {
    let embeddable = response.extensions().get::<Embeddable>().is_some();
    let ancestors = if embeddable {
        state.0.embed_ancestors.as_str()
    } else {
        "'none'"
    };
    let csp = format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
         form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    );
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if !embeddable {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.queue().ping().await {
        Ok(()) if !state.registry().is_empty() => (StatusCode::OK, "ready\n").into_response(),
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "no campaigns loaded\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

async fn style_css() -> Response {
    static_file("text/css; charset=utf-8", pages::STYLE_CSS)
}

async fn form_js() -> Response {
    static_file("text/javascript; charset=utf-8", pages::FORM_JS)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> WebError {
    WebError::NotFound
}

/// What can go wrong on a page, as the browser is told. Internal errors are logged here with
/// their whole chain, once, and shown only as "an internal error occurred".
#[derive(Debug, thiserror::Error)]
pub(crate) enum WebError {
    #[error("not found")]
    NotFound,
    #[error("the request is too large")]
    TooLarge,
    #[error("the form must be sent as application/x-www-form-urlencoded")]
    UnsupportedMediaType,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("forms may only be sent from this site's own pages")]
    CrossOrigin,
    #[error("too many signatures from your network; please try again in a few minutes")]
    RateLimited { retry_after: u64 },
    #[error("an internal error occurred")]
    Internal(#[from] anyhow::Error),
}

/// What a supporter is told when the database did not answer.
pub(crate) const UNAVAILABLE: &str =
    "the service is briefly unavailable and nothing was recorded; please try again in a moment";

/// Whether `e` is the database not answering for now (a dropped connection, a restarting
/// server), not a fault of the request or of Missive.
pub(crate) fn database_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<crate::queue::QueueError>()
            .is_some_and(|q| q.is_transient())
            || cause
                .downcast_ref::<commit::RecordFailed>()
                .is_some_and(|f| f.transient)
            || cause
                .downcast_ref::<crate::intake::IntakeError>()
                .is_some_and(
                    |i| matches!(i, crate::intake::IntakeError::Queue(q) if q.is_transient()),
                )
    })
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::CrossOrigin => StatusCode::FORBIDDEN,
            WebError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebError::Internal(e) if database_unavailable(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the database did not answer a request"
                );
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error in the web intake");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match status {
            StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE.to_owned(),
            _ => self.to_string(),
        };
        let page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>\
             <body><main><div class=\"message-page\"><h1>{title}</h1><p>{message}.</p>\
             <p><a href=\"/\">Current actions</a></p></div></main></body></html>\n",
            title = status.canonical_reason().unwrap_or("Error"),
            message = html_escape(&message),
        );
        let mut response = (status, Html(page)).into_response();
        if let WebError::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(5));
        }
        response
    }
}

fn html_escape(s: &str) -> String {
    handlebars::html_escape(s)
}

/// Reads a request body of at most `BODY_LIMIT` bytes.
async fn read_body(headers: &HeaderMap, body: axum::body::Body) -> Result<axum::body::Bytes, ()> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(());
    }
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| ())
}

/// Whether the request's `Content-Type` is `wanted` (parameters such as charset allowed).
fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// Keeps the housekeeping going until `stop`: deletes signatures whose confirmation link
/// expired, forgets day-old idempotency keys, and prunes the rate limiters' memory.
pub async fn housekeeping(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        state.0.sign_limiter.retain_recent();
        state.0.sign_limiter.shrink_to_fit();
        state.0.api_limiter.retain_recent();
        state.0.api_limiter.shrink_to_fit();
        if round % 10 == 0 {
            let now = state.queue().now();
            match state.queue().delete_expired_awaiting(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "unconfirmed signatures expired"),
                Err(e) => tracing::warn!(error = %e, "cannot delete expired signatures"),
            }
            if let Err(e) = state.queue().prune_idempotency_keys(now - 86_400_000).await {
                tracing::warn!(error = %e, "cannot prune idempotency keys");
            }
        }
        round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueError;

    fn dropped() -> QueueError {
        QueueError::Database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )))
    }

    #[test]
    fn a_database_that_may_answer_again_is_unavailable_not_an_internal_error() {
        assert!(database_unavailable(&anyhow::Error::new(dropped())));
        assert!(database_unavailable(&anyhow::Error::new(
            crate::intake::IntakeError::Queue(dropped())
        )));
        assert!(database_unavailable(
            &anyhow::Error::new(QueueError::Database(sqlx::Error::PoolTimedOut))
                .context("recording")
        ));
        assert!(!database_unavailable(&anyhow::Error::new(
            QueueError::Database(sqlx::Error::RowNotFound)
        )));
        assert!(!database_unavailable(&anyhow::anyhow!("a template failed")));
    }

    #[test]
    fn a_supporter_is_asked_to_try_again_when_the_database_does_not_answer() {
        let response = WebError::Internal(anyhow::Error::new(dropped())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = WebError::Internal(anyhow::anyhow!("a bug")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
