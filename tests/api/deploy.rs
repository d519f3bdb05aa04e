//! Operating Missive: `missive migrate` brings a database's schema up to date and says what it
//! applied, a process refuses a PostgreSQL schema with migrations pending (unless
//! `database.migrate_on_start`), and `missive worker` sends letters on its own until SIGTERM.

use crate::db_helpers::{Backend, TestDatabase};
use crate::helpers::{run, spawn_app_with_ana, test_folder};
use std::time::{Duration, Instant};

#[tokio::test]
async fn migrate_applies_every_pending_migration_once_and_names_them() {
    let dir = test_folder();
    let database = TestDatabase::create(dir.path()).await;
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_missive"));
        cmd.current_dir(dir.path())
            .env_remove("MISSIVE_CONFIG")
            .env("MISSIVE_DATABASE__URL", database.url())
            .env("MISSIVE_LETTERS__DIR", dir.path().join("letters"))
            .args(args)
            .stdin(std::process::Stdio::null());
        run(&mut cmd)
    };

    // A fresh PostgreSQL database is refused until it is migrated; SQLite migrates its file.
    let before = cli(&["status"]);
    if database.backend() == Backend::Postgres {
        assert_eq!(before.code, 2, "{}", before.stderr);
        assert!(
            before.stderr.contains("lacks migrations") && before.stderr.contains("0001 initial"),
            "{}",
            before.stderr
        );
        assert!(
            before.stderr.contains("hint: run `missive migrate` once"),
            "{}",
            before.stderr
        );
    }
    let first = cli(&["migrate"]);
    let second = cli(&["migrate"]);
    let after = cli(&["status"]);

    assert_eq!(first.code, 0, "{}", first.stderr);
    if database.backend() == Backend::Postgres {
        assert!(
            first.stdout.starts_with("0001 initial\n"),
            "{}",
            first.stdout
        );
        assert!(
            first.stdout.contains("0014 relay health"),
            "{}",
            first.stdout
        );
    }
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.stdout, "", "nothing left to apply");
    assert!(second.stderr.contains("up to date"), "{}", second.stderr);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert!(after.stdout.contains("signatures: 0"), "{}", after.stdout);
}

#[tokio::test]
async fn a_worker_alone_sends_the_letters_and_stops_cleanly_on_sigterm() {
    let app = spawn_app_with_ana(&[]).await;
    let mut child = app
        .cli()
        .arg("worker")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("missive worker starts");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM letters WHERE state = 'sent'")
            .fetch_one(&app.db().await)
            .await
            .unwrap();
        if sent == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{sent} of 4 letters sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();

    assert_eq!(status.code(), Some(0));
    assert_eq!(std::fs::read_dir(app.outbox()).unwrap().count(), 4);
}
