//! Spawning the application for a test: a database of its own (an SQLite file in a temporary
//! folder, or a fresh PostgreSQL database with `MISSIVE_TEST_DATABASE_URL`: `db_helpers`), a
//! copy of the campaigns under `letters/` and the outbox in that folder, settings built from
//! `MISSIVE_*` pairs exactly as the binary builds them, and small helpers to sign, send and look
//! into the database. Logs stay quiet unless `TEST_LOG=1`.

use crate::db_helpers::TestDatabase;
use missive::config::Settings;
use missive::domain::NewSigner;
use missive::intake;
use missive::queue::{Recorded, Source, StatusReport};
use missive::startup::App;
use missive::worker::{RunOptions, RunSummary};
use sqlx::AnyPool;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

pub(crate) const CAMPAIGN: &str = "mexico-deportations";

/// A running application in its own folder.
pub(crate) struct TestApp {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) settings: Settings,
    pub(crate) app: App,
    pub(crate) env: Vec<(String, String)>,
    /// Last, so it is dropped after the app's pool (a PostgreSQL database goes with it).
    pub(crate) database: TestDatabase,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The environment a test app runs with: the database at `database_url`, everything else
/// inside `dir`, pacing out of the way.
pub(crate) fn base_env(dir: &Path, database_url: &str) -> Vec<(String, String)> {
    [
        ("MISSIVE_DATABASE__URL", database_url.to_owned()),
        // A fresh PostgreSQL database per test: each app migrates its own on start.
        ("MISSIVE_DATABASE__MIGRATE_ON_START", "true".into()),
        (
            "MISSIVE_LETTERS__DIR",
            dir.join("letters").display().to_string(),
        ),
        (
            "MISSIVE_OUTBOX__DIR",
            dir.join("outbox").display().to_string(),
        ),
        ("MISSIVE_SENDING__RATE_PER_SECOND", "100000".into()),
        ("MISSIVE_SENDING__BURST", "10000".into()),
        ("MISSIVE_SMTP__STARTTLS", "off".into()),
        ("MISSIVE_SMTP__CONNECT_TIMEOUT_SECONDS", "5".into()),
        ("MISSIVE_SMTP__SEND_TIMEOUT_SECONDS", "5".into()),
        // Tests that exercise the relay cool-down set their own.
        ("MISSIVE_SENDING__THROTTLE_COOLDOWN_SECONDS", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Copies the repository's campaigns into `letters`, each campaign-wide rate lifted and
/// per-target pacing off, so tests are not paced unless they ask to be (office hours would make
/// them depend on the time they run at; tests of pacing write their own policy).
pub(crate) fn copy_campaigns(letters: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("letters");
    copy_dir(&src, letters);
    let toml = letters.join(CAMPAIGN).join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let lifted: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("rate_per_second") {
                "rate_per_second = 100000.0".to_owned()
            } else if l.trim() == "[pacing]" {
                "[pacing]\nenabled = false".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&toml, lifted + "\n").unwrap();
}

/// A fresh folder holding a copy of the campaigns (see `copy_campaigns`).
pub(crate) fn test_folder() -> tempfile::TempDir {
    if std::env::var_os("TEST_LOG").is_some() {
        missive::telemetry::init("debug");
    }
    let dir = tempfile::tempdir().unwrap();
    copy_campaigns(&dir.path().join("letters"));
    dir
}

/// Spawns the app with the outbox transport.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the app with extra `MISSIVE_*` settings and one signer (Ana, whose four letters are
/// queued).
pub(crate) async fn spawn_app_with_ana(extra: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_with(extra).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();
    app
}

/// Spawns the app sending over one connection to `server`, with Ana's four letters queued.
pub(crate) async fn ana_over_one_connection(server: &crate::smtp_server::ScriptedSmtp) -> TestApp {
    spawn_app_with_ana(&[
        ("MISSIVE_SMTP__URL", &server.url()),
        ("MISSIVE_SMTP__CONNECTIONS", "1"),
    ])
    .await
}

/// Spawns the app with extra `MISSIVE_*` settings (e.g. `MISSIVE_SMTP__URL`).
pub(crate) async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let dir = test_folder();
    let database = TestDatabase::create(dir.path()).await;
    let mut env = base_env(dir.path(), database.url());
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::load(None, env.clone()).expect("test settings load");
    let app = App::build(settings.clone()).await.expect("app builds");
    TestApp {
        dir,
        settings,
        app,
        env,
        database,
    }
}

/// A signer with sensible defaults.
pub(crate) fn signer(first: &str, last: &str, email: &str) -> NewSigner {
    NewSigner {
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
        ..NewSigner::default()
    }
}

impl TestApp {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn outbox(&self) -> PathBuf {
        self.path().join("outbox")
    }

    /// Signs the example campaign, as `missive sign` does with these settings.
    pub(crate) async fn sign(&self, input: &NewSigner) -> Result<Recorded, intake::IntakeError> {
        let campaign = self.app.registry.get(CAMPAIGN).unwrap();
        let addresses = self.settings.smtp.address_policy();
        intake::sign(&self.app.queue, &campaign, input, addresses, Source::Cli).await
    }

    /// Runs one batch: every due letter.
    pub(crate) async fn send_all(&self) -> RunSummary {
        self.app
            .dispatcher()
            .run(&RunOptions::default(), CancellationToken::new())
            .await
            .expect("the batch runs")
    }

    /// Runs one batch that claims at most `limit` letters.
    pub(crate) async fn send_up_to(&self, limit: u64) -> RunSummary {
        self.app
            .dispatcher()
            .run(
                &RunOptions {
                    limit: Some(limit),
                    ..RunOptions::default()
                },
                CancellationToken::new(),
            )
            .await
            .expect("the batch runs")
    }

    pub(crate) async fn status(&self) -> StatusReport {
        self.app.queue.status(None).await.unwrap()
    }

    /// A second connection to the database, for assertions (SQL that runs on both backends).
    pub(crate) async fn db(&self) -> AnyPool {
        self.database.connect().await
    }

    /// The real `missive` binary, run in this app's folder with its settings.
    pub(crate) fn cli(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_missive"));
        cmd.current_dir(self.path())
            .env_remove("MISSIVE_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Writes a file in the app's folder and returns its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// The output of a finished command.
pub(crate) struct Ran {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs a command to completion.
pub(crate) fn run(cmd: &mut std::process::Command) -> Ran {
    let out = cmd.output().expect("the binary runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Decodes a quoted-printable body (enough for the letters Missive writes).
pub(crate) fn decode_qp(text: &str) -> String {
    let mut bytes = Vec::new();
    let raw = text.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'=' if i + 2 < raw.len() + 1
                && raw.get(i + 1) == Some(&b'\r')
                && raw.get(i + 2) == Some(&b'\n') =>
            {
                i += 3
            }
            b'=' if raw.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < raw.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&raw[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        bytes.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        bytes.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
