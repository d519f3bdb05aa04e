//! End to end in a real browser: headless Chromium, driven through chromedriver's WebDriver
//! HTTP interface, signs on the action page of a running Missive on 127.0.0.1, sees errors
//! beside their fields, and follows a confirmation link read from the outbox.
//!
//! The test starts chromedriver itself on a free port and kills it afterwards. Without
//! /usr/bin/chromium and /usr/bin/chromedriver it fails when `CI` is set, and is skipped with a
//! note otherwise. Screenshots of a phone-sized window are written to /tmp for people to look at.

use crate::web_helpers::{
    confirmation_path, free_port, outbox_files, spawn_running, RunningApp, Spawn, SLUG,
};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key under which an element reference is returned.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser is here; panics under CI when it is not.
fn browser_available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{CHROMIUM} and {CHROMEDRIVER} are required for the browser tests \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!("note: skipping the browser test: {CHROMIUM} or {CHROMEDRIVER} is missing");
    }
    present
}

/// One HTTP/1.1 request to chromedriver; returns the status and the JSON body.
async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to chromedriver");
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // chromedriver may keep the connection open: read the head, then exactly the body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "chromedriver closed the connection early");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body_bytes = raw[head_end..].to_vec();
    loop {
        let done = match length {
            Some(n) => body_bytes.len() >= n,
            None if chunked => body_bytes.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        body_bytes.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&body_bytes).into_owned();
    let mut payload: &str = &text;
    let dechunked;
    if chunked {
        let mut out = String::new();
        let mut rest = payload;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        dechunked = out;
        payload = &dechunked;
    }
    (status, serde_json::from_str(payload).unwrap_or(Value::Null))
}

/// chromedriver and one browser session, both ended on drop.
struct Browser {
    port: u16,
    session: String,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        // chromedriver takes a moment to listen: poll its status, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => http(port, "GET", "/status", None).await.1["value"]["ready"] == true,
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=390,844".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let (status, reply) = http(port, "POST", "/session", Some(&caps)).await;
        assert_eq!(status, 200, "new session: {reply}");
        let session = reply["value"]["sessionId"].as_str().unwrap().to_owned();
        Browser {
            port,
            session,
            driver,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let (status, reply) = http(self.port, method, &full, body.as_ref()).await;
        assert_eq!(status, 200, "{method} {path}: {reply}");
        reply["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})))
            .await;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    async fn source(&self) -> String {
        self.call("GET", "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits until the page holds `marker` (a click that submits returns before the next page
    /// may have loaded), or fails after a deadline.
    async fn wait_for(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let page = self.source().await;
            if page.contains(marker) {
                return page;
            }
            assert!(Instant::now() < deadline, "no {marker:?} in {page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn url(&self) -> String {
        self.call("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn property(&self, css: &str, name: &str) -> Value {
        let id = self.find(css).await;
        self.call("GET", &format!("/element/{id}/property/{name}"), None)
            .await
    }

    async fn scroll_to(&self, css: &str) {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "document.querySelector(arguments[0]).scrollIntoView();", "args": [css]})),
        )
        .await;
    }

    async fn screenshot(&self, path: &str) {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    async fn quit(mut self) {
        let path = format!("/session/{}", self.session);
        http(self.port, "DELETE", &path, None).await;
        let _ = self.driver.kill().await;
    }
}

/// Waits until the outbox holds `n` emails, or fails after a deadline.
async fn wait_for_outbox(app: &RunningApp, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let files = outbox_files(&app.outbox);
        if files.len() >= n {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox has {} of {n} emails",
            files.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill_form(browser: &Browser, email: &str) {
    browser.type_into("#f-first_name", "José").await;
    browser.type_into("#f-last_name", "Núñez").await;
    browser.type_into("#f-email", email).await;
    browser.type_into("#f-postal_code", "H2X 1Y4").await;
    browser.type_into("#f-city", "Montréal").await;
    browser.type_into("#f-country", "Canada").await;
    browser
        .type_into("#f-message", "Por favor, actúen ya.")
        .await;
    browser.click("#f-consent_letter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supporter_signs_in_a_browser_sees_errors_beside_fields_and_letters_are_sent() {
    if !browser_available() {
        return;
    }
    let app = spawn_running(Spawn::default()).await;
    let browser = Browser::start().await;

    browser.go(&format!("{}/c/{SLUG}", app.address)).await;
    browser.screenshot("/tmp/missive-action-phone.png").await;
    let counter = browser.property("#f-message-count", "hidden").await;
    assert_eq!(counter, false, "the counter shows once the script runs");
    fill_form(&browser, "jose.example.net").await;
    browser.click("button[type=submit]").await;

    let page = browser.wait_for(r#"id="f-email-error""#).await;
    assert!(page.contains("Enter an email address like name@example.org."));
    assert_eq!(browser.property("#f-first_name", "value").await, "José");
    assert_eq!(browser.property("#f-city", "value").await, "Montréal");
    assert_eq!(browser.property("#f-consent_letter", "checked").await, true);
    assert_eq!(
        browser.property("#f-email", "value").await,
        "jose.example.net"
    );
    browser.scroll_to("#sign").await;
    browser.screenshot("/tmp/missive-form-errors.png").await;

    browser.type_into("#f-email", "jose@example.net").await;
    browser.click("button[type=submit]").await;

    browser.wait_for("Your letters are on their way").await;
    assert!(browser.url().await.ends_with("/thanks?lang=en"));
    let files = wait_for_outbox(&app, 4).await;
    assert_eq!(files.len(), 4);
    let status = app.queue.status(None).await.unwrap();
    assert_eq!(status.signatures, 1);
    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supporter_confirms_by_email_in_a_browser_and_only_then_letters_go() {
    if !browser_available() {
        return;
    }
    let app = spawn_running(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;
    let browser = Browser::start().await;

    browser
        .go(&format!("{}/c/{SLUG}?lang=es", app.address))
        .await;
    fill_form(&browser, "jose@example.net").await;
    browser.click("button[type=submit]").await;
    browser.wait_for("Le hemos enviado un correo").await;
    let files = wait_for_outbox(&app, 1).await;
    assert_eq!(files.len(), 1, "only the confirmation email");
    let link = confirmation_path(&files[0].1);

    browser.go(&format!("{}{link}", app.address)).await;
    browser.wait_for("Confirme su firma").await;
    browser.click("button[type=submit]").await;

    browser.wait_for("Gracias por confirmar").await;
    let files = wait_for_outbox(&app, 5).await;
    assert_eq!(files.len(), 5);
    browser.quit().await;
    app.stop().await;
}
