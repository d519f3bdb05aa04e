//! Spawning Missive for the web intake tests: a fresh database (an SQLite file, or a PostgreSQL
//! database of its own with `MISSIVE_TEST_DATABASE_URL`: `db_helpers`), and a copy of the
//! example campaign (optionally with double opt-in), an outbox folder and settings from
//! `MISSIVE_*` pairs, in a temporary folder per test. Tests drive the router directly with
//! `oneshot` (no socket) or, for the browser, run the whole application on 127.0.0.1:0.

#![allow(
    dead_code,
    reason = "test support, used piecemeal by the web and browser tests"
)]

use crate::db_helpers::TestDatabase;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use missive::config::Settings;
use missive::intake::web::{router, AppState};
use missive::queue::Queue;
use missive::startup::{App, Application, ServeOptions};
use missive::worker::RunOptions;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The API key tests present.
pub(crate) const API_KEY: &str = "test-key-0123456789-abcdefghijkl";
/// The campaign every test signs.
pub(crate) const SLUG: &str = "mexico-deportations";
/// The signing secret tests use (so tokens survive rebuilding the state).
const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";

/// How to spawn.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spawn {
    /// Turn on double opt-in in the copy of the campaign.
    pub(crate) confirm: bool,
    /// Extra `MISSIVE_*` settings.
    pub(crate) env: Vec<(&'static str, String)>,
}

/// One test's Missive.
pub(crate) struct TestApp {
    pub(crate) app: App,
    pub(crate) state: AppState,
    pub(crate) outbox: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    /// Last, so it is dropped after the app's pool (a PostgreSQL database goes with it).
    pub(crate) database: TestDatabase,
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    /// The value of a header, or "".
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Copies the repository's example campaign into `dir`, with `confirm` set as asked.
pub(crate) fn copy_letters(dir: &Path, confirm: bool) -> PathBuf {
    let letters = dir.join("letters");
    crate::helpers::copy_campaigns(&letters);
    if confirm {
        let toml = letters.join(SLUG).join("campaign.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        assert!(text.contains("confirm = false"));
        std::fs::write(&toml, text.replace("confirm = false", "confirm = true")).unwrap();
    }
    letters
}

/// Settings for a test in `dir` on the database at `database_url`.
pub(crate) fn settings(dir: &Path, database_url: &str, opts: &Spawn) -> Settings {
    let letters = copy_letters(dir, opts.confirm);
    let mut env: Vec<(String, String)> = vec![
        ("MISSIVE_DATABASE__URL".into(), database_url.to_owned()),
        ("MISSIVE_DATABASE__MIGRATE_ON_START".into(), "true".into()),
        ("MISSIVE_LETTERS__DIR".into(), letters.display().to_string()),
        (
            "MISSIVE_OUTBOX__DIR".into(),
            dir.join("outbox").display().to_string(),
        ),
        ("MISSIVE_HTTP__BIND".into(), "127.0.0.1:0".into()),
        ("MISSIVE_HTTP__API_KEYS".into(), API_KEY.into()),
        ("MISSIVE_HTTP__SECRET".into(), SECRET.into()),
        ("MISSIVE_SENDING__RATE_PER_SECOND".into(), "1000".into()),
        ("MISSIVE_SENDING__BURST".into(), "1000".into()),
        ("MISSIVE_HTTP__SIGN_PER_MINUTE".into(), "1000".into()),
        ("MISSIVE_HTTP__SIGN_BURST".into(), "1000".into()),
    ];
    for (k, v) in &opts.env {
        env.push(((*k).to_owned(), v.clone()));
    }
    Settings::load(None, env).expect("test settings load")
}

/// A Missive for router tests: built, migrated, not listening.
pub(crate) async fn spawn(opts: Spawn) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(dir.path()).await;
    let settings = settings(dir.path(), database.url(), &opts);
    let app = App::build(settings).await.expect("the app builds");
    let state = AppState::new(&app.settings, app.registry.clone(), app.queue.clone()).unwrap();
    TestApp {
        outbox: dir.path().join("outbox"),
        app,
        state,
        dir,
        database,
    }
}

/// A port free on 127.0.0.1 a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Missive (web intake and worker) on 127.0.0.1, stopped when dropped.
pub(crate) struct RunningApp {
    pub(crate) address: String,
    pub(crate) queue: Queue,
    pub(crate) outbox: PathBuf,
    pub(crate) letters: PathBuf,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _database: TestDatabase,
}

/// Runs the whole application (server and worker) on a free port.
pub(crate) async fn spawn_running(mut opts: Spawn) -> RunningApp {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(dir.path()).await;
    // The browser posts forms with its Origin, which must be base_url's: pick the port first.
    let port = free_port();
    opts.env
        .push(("MISSIVE_HTTP__BIND", format!("127.0.0.1:{port}")));
    opts.env
        .push(("MISSIVE_HTTP__BASE_URL", format!("http://127.0.0.1:{port}")));
    let settings = settings(dir.path(), database.url(), &opts);
    let application = Application::build_with(settings, ServeOptions::default())
        .await
        .expect("the application builds");
    let port = application.port();
    let queue = application.app().queue.clone();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(application.run_until_stopped(stop.clone()));
    RunningApp {
        address: format!("http://127.0.0.1:{port}"),
        queue,
        outbox: dir.path().join("outbox"),
        letters: dir.path().join("letters"),
        stop,
        handle: Some(handle),
        _dir: dir,
        _database: database,
    }
}

impl RunningApp {
    /// Stops the server and worker and waits for them.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// The queue.
    pub(crate) fn queue(&self) -> &Queue {
        &self.app.queue
    }

    /// Sends one request through the router.
    pub(crate) async fn request(&self, request: Request<Body>) -> Reply {
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `GET path` with extra headers.
    pub(crate) async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(Body::empty()).unwrap()).await
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[]).await
    }

    /// Opens the action page and returns the cookie and form token a browser would hold.
    pub(crate) async fn form_session(&self) -> FormSession {
        let page = self.get(&format!("/c/{SLUG}")).await;
        assert_eq!(page.status, StatusCode::OK);
        let set_cookie = page.header("set-cookie");
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        FormSession {
            cookie,
            csrf: hidden_value(&page.body, "csrf"),
        }
    }

    /// Posts a form body with the session's cookie.
    pub(crate) async fn post_form(
        &self,
        path: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::post(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(body.into()).unwrap()).await
    }

    /// Signs through the form with `fields` (on top of a valid José Núñez signature).
    pub(crate) async fn sign_form(&self, session: &FormSession, fields: &[(&str, &str)]) -> Reply {
        let body = form_body(session, fields);
        self.post_form(
            &format!("/c/{SLUG}/sign"),
            body,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &session.cookie),
            ],
        )
        .await
    }

    /// Signs through the form as a real server would see it from `peer` (the TCP peer, e.g.
    /// a reverse proxy's `10.0.0.2:40000`), with extra `headers` such as `X-Forwarded-For`
    /// (a name may repeat: each is a header line of its own).
    pub(crate) async fn sign_form_from(
        &self,
        session: &FormSession,
        fields: &[(&str, &str)],
        peer: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let peer: std::net::SocketAddr = peer.parse().unwrap();
        let mut b = Request::post(format!("/c/{SLUG}/sign"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &session.cookie)
            .extension(axum::extract::ConnectInfo(peer));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(Body::from(form_body(session, fields))).unwrap())
            .await
    }

    /// Posts JSON to the API with the test key (or `auth` as the Authorization header).
    pub(crate) async fn post_api(
        &self,
        path: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::post(path);
        let mut has_auth = false;
        let mut has_type = false;
        for (k, v) in headers {
            has_auth |= k.eq_ignore_ascii_case("authorization");
            has_type |= k.eq_ignore_ascii_case("content-type");
            b = b.header(*k, *v);
        }
        if !has_auth {
            b = b.header(header::AUTHORIZATION, format!("Bearer {API_KEY}"));
        }
        if !has_type {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        self.request(b.body(body.into()).unwrap()).await
    }

    /// Sends every due letter and email into the outbox, as one `missive send` would.
    pub(crate) async fn drain(&self) -> missive::worker::RunSummary {
        self.app
            .dispatcher()
            .run(&RunOptions::default(), CancellationToken::new())
            .await
            .unwrap()
    }

    /// Every `.eml` file in the outbox, as text, by file name.
    pub(crate) fn outbox_files(&self) -> Vec<(String, String)> {
        outbox_files(&self.outbox)
    }

    /// Emails in the queue, whatever their state: letters and confirmation emails.
    pub(crate) async fn email_count(&self) -> i64 {
        let s = self.queue().status(None).await.unwrap();
        s.by_state.values().sum::<i64>() + s.confirmations.values().sum::<i64>()
    }

    /// Each signature's email, contact consent (1 or 0) and referrer, read straight from the
    /// database. The consent is BOOLEAN on PostgreSQL and 0 or 1 on SQLite: `CASE WHEN` reads
    /// both as the same integer.
    pub(crate) async fn signature_rows(&self) -> Vec<(String, i64, Option<String>)> {
        use sqlx::Row as _;
        let pool = self.database.connect().await;
        let rows = sqlx::query(
            "SELECT email, CASE WHEN consent_contact THEN 1 ELSE 0 END, referrer
               FROM signatures ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let out = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        pool.close().await;
        out
    }
}

/// Every `.eml` file in `dir`, as text, by file name.
pub(crate) fn outbox_files(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The confirmation link in an email (the path, from `/confirm/`). Quoted-printable or base64
/// bodies are decoded by looking for the link in the decoded text.
pub(crate) fn confirmation_path(eml: &str) -> String {
    let text = decode_body(eml);
    let at = text.find("/confirm/").expect("a confirmation link");
    text[at..]
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

/// The body of a single-part email, decoded from base64 or quoted-printable when needed.
pub(crate) fn decode_body(eml: &str) -> String {
    let (head, body) = eml.split_once("\r\n\r\n").unwrap_or((eml, ""));
    let lower = head.to_ascii_lowercase();
    if lower.contains("content-transfer-encoding: base64") {
        use base64::Engine as _;
        let joined: String = body.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap(),
        )
        .unwrap()
    } else if lower.contains("content-transfer-encoding: quoted-printable") {
        let soft = body.replace("=\r\n", "");
        let mut out = Vec::new();
        let bytes = soft.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&soft[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    } else {
        body.to_owned()
    }
}

/// A browser's cookie and form token for the action page.
#[derive(Debug, Clone)]
pub(crate) struct FormSession {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

/// The value of the hidden input `name` in a page.
pub(crate) fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in the page"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// A url-encoded valid signature from José Núñez, with `fields` replacing or adding values.
pub(crate) fn form_body(session: &FormSession, fields: &[(&str, &str)]) -> String {
    let mut values: Vec<(&str, &str)> = vec![
        ("csrf", &session.csrf),
        ("page_lang", "en"),
        ("first_name", "José"),
        ("last_name", "Núñez"),
        ("email", "jose@example.net"),
        ("postal_code", "H2X 1Y4"),
        ("city", "Montréal"),
        ("country", "Canada"),
        ("language", "fr"),
        ("message", ""),
        ("website", ""),
        ("consent_letter", "yes"),
    ];
    for (k, v) in fields {
        match values.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v,
            None => values.push((k, v)),
        }
    }
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(values.iter().filter(|(_, v)| *v != "\u{0}"))
        .finish()
}

/// A valid API body for `email`.
pub(crate) fn api_body(email: &str) -> String {
    serde_json::json!({
        "person": {
            "given_name": "Ana",
            "family_name": "Example",
            "email_addresses": [{"address": email, "primary": true}],
            "postal_addresses": [{"postal_code": "M5V 2T6", "locality": "Toronto", "country": "Canada"}],
            "languages_spoken": ["es"]
        },
        "comment": "Please act now.",
        "consents": {"send_letters": true, "contact": true},
        "referrer_data": {"source": "partner-form", "url": "https://www.example.org/act"}
    })
    .to_string()
}
