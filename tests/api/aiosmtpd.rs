//! End to end through a real SMTP server nobody here wrote, one that insists on what relays
//! insist on: aiosmtpd (PyPI) run by `tests/python/smtpd.py`, requiring STARTTLS before
//! anything else and AUTH before MAIL, with a certificate from [`TestCa`]. Signers are imported
//! and sent with the real binary; each message the server accepts is written to a folder with
//! its envelope and whether its session was TLS and authenticated.
//!
//! Needs `python3` with aiosmtpd (`pip install aiosmtpd`); without them the tests print a note
//! and pass, except under `CI=true`, where `.ci/run` installs them.

use crate::helpers::{run, spawn_app_with, TestApp, CAMPAIGN};
use crate::python_email::python3_available;
use crate::smtp_server::TestCa;
use mailparse::{addrparse_header, MailHeaderMap, ParsedMail};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USERNAME: &str = "letters@example.org";
const PASSWORD: &str = "s3cret pass";
const SIGNERS: usize = 20;
/// The example campaign writes one letter per target.
const TARGETS: usize = 4;

/// Whether aiosmtpd can be imported, with a note when it cannot; in CI that is a failure.
fn aiosmtpd_available() -> bool {
    if !python3_available("the aiosmtpd end-to-end test") {
        return false;
    }
    let imports = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !imports {
        assert!(
            std::env::var_os("CI").is_none(),
            "aiosmtpd is missing for python3: .ci/run installs it with pip"
        );
        eprintln!(
            "note: aiosmtpd not installed for python3; skipping the aiosmtpd end-to-end test \
             (python3 -m pip install aiosmtpd)"
        );
    }
    imports
}

/// `tests/python/smtpd.py`, running; stopped with SIGTERM (then SIGKILL) when dropped.
struct Smtpd {
    child: Child,
    port: u16,
    spool: PathBuf,
    log: PathBuf,
}

impl Smtpd {
    /// Starts the server in `dir` with the certificate of `ca` on a free port, accepting
    /// [`USERNAME`] and [`PASSWORD`]; returns once it says `ready`.
    fn start(dir: &Path, ca: &TestCa) -> Smtpd {
        let (cert, key) = ca.server_pem_files();
        let spool = dir.join("spool");
        let log = dir.join("smtpd.log");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/smtpd.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["--username", USERNAME, "--password", PASSWORD])
            .arg("--spool")
            .arg(&spool)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let server = Smtpd {
            child,
            port,
            spool,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => return server,
                Ok(_) => continue,
                Err(e) => panic!("smtpd.py did not say ready ({e}):\n{}", server.log()),
            }
        }
    }

    fn url(&self) -> String {
        // The certificate names localhost and 127.0.0.1; the name is what a relay's URL holds.
        format!("smtp://localhost:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every message accepted so far, with what the server recorded about it.
    fn arrived(&self) -> Vec<Arrived> {
        let Ok(entries) = std::fs::read_dir(&self.spool) else {
            return Vec::new();
        };
        let mut arrived: Vec<Arrived> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|meta| {
                let envelope: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
                let raw = std::fs::read(meta.with_extension("eml")).unwrap();
                Arrived {
                    file: meta.with_extension("eml"),
                    envelope,
                    raw,
                }
            })
            .collect();
        arrived.sort_by(|a, b| a.file.cmp(&b.file));
        arrived
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        // SIGTERM first: the script stops cleanly on it (and says so by exiting 0).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message the server accepted.
struct Arrived {
    file: PathBuf,
    /// `mail_from`, `rcpt_tos`, `tls`, `authenticated`, `login` (see smtpd.py).
    envelope: serde_json::Value,
    raw: Vec<u8>,
}

/// The single address in header `field`.
fn address(mail: &ParsedMail<'_>, field: &str) -> String {
    let header = mail
        .headers
        .get_first_header(field)
        .unwrap_or_else(|| panic!("a {field} header"));
    addrparse_header(header)
        .unwrap()
        .extract_single_info()
        .unwrap_or_else(|| panic!("one mailbox in {field}"))
        .addr
}

/// The decoded text/plain part.
fn plain_text(mail: &ParsedMail<'_>) -> String {
    if mail.ctype.mimetype == "text/plain" {
        return mail.get_body().unwrap();
    }
    mail.subparts
        .iter()
        .find_map(|p| (p.ctype.mimetype == "text/plain").then(|| p.get_body().unwrap()))
        .expect("a text/plain part")
}

/// The app sending to `server` over STARTTLS and AUTH, with `password`, and [`SIGNERS`]
/// signers imported with the real binary.
async fn app_with_signers(server: &Smtpd, ca: &TestCa, password: &str) -> TestApp {
    let url = server.url();
    let ca_file = ca.ca_file().display().to_string();
    let app = spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &url),
        ("MISSIVE_SMTP__STARTTLS", "required"),
        ("MISSIVE_SMTP__CA_FILE", &ca_file),
        ("MISSIVE_SMTP__USERNAME", USERNAME),
        ("MISSIVE_SMTP__PASSWORD", password),
        ("MISSIVE_SMTP__CONNECTIONS", "4"),
    ])
    .await;
    let mut csv = String::from("first_name,last_name,email,language\n");
    for i in 0..SIGNERS {
        let lang = ["en", "fr", "es"][i % 3];
        csv.push_str(&format!(
            "Firstname{i},Núñez,signer{i}@example.net,{lang}\n"
        ));
    }
    let file = app.write("signers.csv", csv);
    let import = run(app.cli().args(["import", CAMPAIGN]).arg(&file));
    assert_eq!(import.code, 0, "{}", import.stderr);
    app
}

/// Each letter's Message-ID (without angle brackets), with its recipient, its signer's full
/// name and its state.
async fn letters(app: &TestApp) -> HashMap<String, (String, String, String)> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT l.message_id, l.recipient, s.first_name, s.last_name, l.state \
         FROM letters l JOIN signatures s ON s.id = l.signature_id",
    )
    .fetch_all(&app.db().await)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, recipient, first, last, state)| {
            (
                id.trim_matches(['<', '>']).to_owned(),
                (recipient, format!("{first} {last}"), state),
            )
        })
        .collect()
}

#[tokio::test]
async fn signers_reach_aiosmtpd_over_starttls_and_auth_exactly_once_each() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let server = Smtpd::start(dir.path(), &ca);
    let app = app_with_signers(&server, &ca, PASSWORD).await;

    let send = run(app.cli().args(["send", "--json"]));

    assert_eq!(
        send.code,
        0,
        "{}{}\nsmtpd.py:\n{}",
        send.stdout,
        send.stderr,
        server.log()
    );
    let summary: serde_json::Value = serde_json::from_str(&send.stdout).unwrap();
    assert_eq!(summary["sent"], SIGNERS * TARGETS);
    let letters = letters(&app).await;
    assert_eq!(letters.len(), SIGNERS * TARGETS);
    assert!(
        letters.values().all(|(_, _, state)| state == "sent"),
        "every letter is recorded sent"
    );

    let arrived = server.arrived();
    assert_eq!(
        arrived.len(),
        letters.len(),
        "one message per letter arrived"
    );
    let mut seen = HashSet::new();
    for a in &arrived {
        let e = &a.envelope;
        assert_eq!(
            (&e["tls"], &e["authenticated"], &e["login"]),
            (&true.into(), &true.into(), &USERNAME.into()),
            "the session was TLS and authenticated: {}",
            a.file.display()
        );
        let mail = mailparse::parse_mail(&a.raw).unwrap();
        let id = mail
            .headers
            .get_first_value("Message-ID")
            .expect("a Message-ID")
            .trim()
            .trim_matches(['<', '>'])
            .to_owned();
        let (recipient, signer, _) = letters
            .get(&id)
            .unwrap_or_else(|| panic!("a letter has Message-ID {id}"));
        assert!(seen.insert(id.clone()), "{id} arrived twice");
        assert_eq!(e["rcpt_tos"], serde_json::json!([recipient]), "{id}");
        assert_eq!(&address(&mail, "To"), recipient, "{id}");
        assert!(
            plain_text(&mail).contains(signer.as_str()),
            "the signer's name {signer} is in {}",
            a.file.display()
        );
    }
}

#[tokio::test]
async fn a_wrong_password_sends_nothing_fails_no_letter_and_exits_2() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let server = Smtpd::start(dir.path(), &ca);
    let app = app_with_signers(&server, &ca, "not the password").await;

    let send = run(app.cli().args(["send", "--json"]));

    // The relay's refusal is the relay's: exit 2 with its words, no letter failed or charged.
    assert_eq!(send.code, 2, "{}{}", send.stdout, send.stderr);
    assert!(
        send.stderr
            .contains("error: the relay refused the credentials: 535"),
        "{}",
        send.stderr
    );
    assert!(!send.stderr.contains("not the password"), "{}", send.stderr);
    assert!(server.arrived().is_empty(), "no message arrived");
    let letters = letters(&app).await;
    assert_eq!(letters.len(), SIGNERS * TARGETS);
    assert!(
        letters.values().all(|(_, _, state)| state == "queued"),
        "every letter is still queued"
    );
    // PostgreSQL's SUM of a BIGINT is a NUMERIC: cast back, to read an i64 on either backend.
    let (attempts, spent): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM attempts),
                (SELECT CAST(SUM(attempts) AS BIGINT) FROM letters)",
    )
    .fetch_one(&app.db().await)
    .await
    .unwrap();
    assert_eq!((attempts, spent), (0, 0), "no attempt spent");
}
