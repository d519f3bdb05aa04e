//! End to end through a real SMTP server nobody here wrote: Postfix's `smtp-sink` (Debian's
//! `postfix` package), dumping every message to a file. 1,000 signers are imported and sent
//! with the real binary; the sink must hold exactly one message per letter, each to the right
//! recipient with the signer's name in the body.

use crate::helpers::{decode_qp, run, spawn_app_with, CAMPAIGN};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SINK: &str = "/usr/sbin/smtp-sink";

struct Sink {
    child: Child,
    port: u16,
    dump: PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts smtp-sink on a free port, dumping messages into `dir`; `None` (with a note) when it is
/// not installed, unless running in CI, where its absence is a failure.
fn start_sink(dir: &Path) -> Option<Sink> {
    if !Path::new(SINK).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{SINK} is missing: .ci/run installs Debian's postfix package"
        );
        eprintln!(
            "note: {SINK} not installed; skipping the real-server test (apt-get install postfix)"
        );
        return None;
    }
    let dump = dir.join("sink");
    std::fs::create_dir_all(&dump).unwrap();
    // smtp-sink drops to `nobody` and writes the dumps as that user.
    Command::new("chmod")
        .arg("777")
        .arg(&dump)
        .status()
        .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(SINK)
        .args(["-u", "nobody", "-c", "-d"])
        .arg(format!("{}/%M.", dump.display()))
        .arg(format!("127.0.0.1:{port}"))
        .arg("256")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "smtp-sink did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Sink { child, port, dump })
}

/// The first header field called `name` in `msg` (LF line endings), unfolded: a line break
/// followed by white space is removed (RFC 5322 2.2.3), so a folded `To` reads as one line.
fn header(msg: &str, name: &str) -> Option<String> {
    let head = msg.split("\n\n").next()?;
    let mut lines = head.lines();
    let first = lines.find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))?;
    let mut value = first.to_owned();
    for continuation in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        value.push_str(continuation);
    }
    Some(value)
}

#[tokio::test]
async fn a_thousand_signers_reach_a_real_smtp_server_exactly_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sink) = start_sink(dir.path()) else {
        return;
    };
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let app = spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &url),
        ("MISSIVE_SMTP__CONNECTIONS", "8"),
    ])
    .await;
    let mut csv = String::from("first_name,last_name,email,language\n");
    for i in 0..1000 {
        let lang = ["en", "fr", "es"][i % 3];
        csv.push_str(&format!(
            "Firstname{i},Núñez,signer{i}@example.net,{lang}\n"
        ));
    }
    let file = app.write("signers.csv", csv);

    let import = run(app.cli().args(["import", CAMPAIGN]).arg(&file));
    let send = run(app.cli().args(["send", "--json"]));

    assert_eq!(import.code, 0, "{}", import.stderr);
    assert_eq!(send.code, 0, "{}{}", send.stdout, send.stderr);
    let summary: serde_json::Value = serde_json::from_str(&send.stdout).unwrap();
    assert_eq!(summary["sent"], 4000);
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM letters GROUP BY state")
            .fetch_all(&app.db().await)
            .await
            .unwrap();
    assert_eq!(states, vec![("sent".to_owned(), 4000)]);

    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    let mut per_signer: HashMap<String, usize> = HashMap::new();
    let files: Vec<_> = std::fs::read_dir(&sink.dump)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        4000,
        "the sink holds exactly one message per letter"
    );
    for path in files {
        let msg = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\r\n", "\n");
        let rcpt = header(&msg, "X-Rcpt-Args")
            .unwrap()
            .trim_matches(['<', '>'])
            .to_owned();
        let to = header(&msg, "To").unwrap();
        assert!(
            to.contains(&format!("<{rcpt}>")),
            "envelope and To agree: {rcpt} / {to}"
        );
        let reply_to = header(&msg, "Reply-To").unwrap();
        let i: usize = reply_to
            .split("<signer")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("Reply-To names the signer: {reply_to}"));
        let body = decode_qp(&msg);
        assert!(
            body.contains(&format!("Firstname{i} Núñez")),
            "the signer's name is in the letter {}",
            path.display()
        );
        *per_recipient.entry(rcpt).or_default() += 1;
        *per_signer.entry(format!("signer{i}")).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), 4);
    assert!(
        per_recipient.values().all(|n| *n == 1000),
        "{per_recipient:?}"
    );
    assert_eq!(per_signer.len(), 1000);
    assert!(per_signer.values().all(|n| *n == 4));
}
