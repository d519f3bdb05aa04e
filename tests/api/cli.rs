//! The organiser's command line as a person uses it: the README's flow into the outbox, status,
//! retry, and errors that say what to do with exit codes 0, 1 and 2.

use crate::helpers::{run, spawn_app, CAMPAIGN};

#[tokio::test]
async fn import_then_send_writes_every_letter_to_the_outbox_by_default() {
    let app = spawn_app().await;
    let sample = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("sample-signers.csv");

    let import = run(app.cli().args(["import", CAMPAIGN]).arg(&sample));
    let send = run(app.cli().arg("send"));

    assert_eq!(import.code, 0, "{}", import.stderr);
    assert_eq!(send.code, 0, "{}", send.stderr);
    assert!(
        send.stdout.starts_with("sent 48, deferred 0, failed 0"),
        "{}",
        send.stdout
    );
    let files = std::fs::read_dir(app.outbox()).unwrap().count();
    assert_eq!(files, 48);
    let status = run(app.cli().args(["status", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["by_state"]["sent"], 48);
    assert_eq!(json["signatures"], 12);
}

#[tokio::test]
async fn send_with_a_limit_sends_no_more_than_asked() {
    let app = spawn_app().await;
    let sample = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("sample-signers.csv");
    run(app.cli().args(["import", CAMPAIGN]).arg(&sample));

    let send = run(app.cli().args(["send", "--limit", "10", "--json"]));

    assert_eq!(send.code, 0, "{}", send.stderr);
    let json: serde_json::Value = serde_json::from_str(&send.stdout).unwrap();
    assert_eq!(json["sent"], 10);
    assert_eq!(
        app.status().await.by_state[&missive::domain::LetterState::Queued],
        38
    );
}

#[tokio::test]
async fn status_prints_a_table_per_target() {
    let app = spawn_app().await;
    app.sign(&crate::helpers::signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();

    let out = run(app.cli().arg("status"));

    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("mexico-deportations/presidency"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("queued"), "{}", out.stdout);
    assert!(
        out.stdout.contains("oldest waiting letter queued"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn sign_with_a_bad_email_exits_2_names_the_flag_and_records_nothing() {
    let app = spawn_app().await;

    let out = run(app.cli().args([
        "sign",
        CAMPAIGN,
        "--first-name",
        "Ana",
        "--last-name",
        "X",
        "--email",
        "ana.example.net",
    ]));

    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--email `ana.example.net` has no `@`"),
        "{}",
        out.stderr
    );
    assert_eq!(app.status().await.signatures, 0);
}

#[tokio::test]
async fn sign_with_utf8_before_the_at_exits_2_with_a_hint_unless_the_relay_takes_smtputf8() {
    let app = spawn_app().await;
    let args = [
        "sign",
        CAMPAIGN,
        "--first-name",
        "José",
        "--last-name",
        "Núñez",
        "--email",
        "josé@example.net",
    ];

    let refused = run(app.cli().args(args));
    let before = app.status().await.signatures;
    let accepted = run(app.cli().args(args).env("MISSIVE_SMTP__SMTPUTF8", "true"));

    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains(
            "--email `josé@example.net` has a character before the `@` that this campaign's \
             mail server cannot carry"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("hint: set smtp.smtputf8 = true only if your relay accepts SMTPUTF8"),
        "{}",
        refused.stderr
    );
    assert_eq!(before, 0);
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    assert_eq!(app.status().await.signatures, 1);
}

#[tokio::test]
async fn sign_prints_the_signature_id_and_queues_letters() {
    let app = spawn_app().await;

    let out = run(app.cli().args([
        "sign",
        CAMPAIGN,
        "--first-name",
        "Zoë",
        "--last-name",
        "Dubois",
        "--email",
        "zoe@example.net",
        "--lang",
        "fr",
        "--message",
        "Merci",
    ]));

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim().len(),
        36,
        "a UUID on stdout: {}",
        out.stdout
    );
    assert!(out.stderr.contains("4 letter(s) queued"));
}

#[tokio::test]
async fn an_unknown_campaign_exits_2_with_a_hint() {
    let app = spawn_app().await;

    let out = run(app.cli().args(["send", "--campaign", "nope"]));

    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with("error: no campaign `nope`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: `missive check`"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn retrying_an_unknown_letter_exits_2() {
    let app = spawn_app().await;

    let out = run(app.cli().args(["retry", "--letter", "999"]));

    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no letter 999"), "{}", out.stderr);
}

#[tokio::test]
async fn a_bad_setting_in_the_environment_names_its_key() {
    let app = spawn_app().await;

    let out = run(app.cli().arg("status").env("MISSIVE_SENDING__BURST", "0"));

    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("sending.burst"), "{}", out.stderr);
}

#[tokio::test]
async fn a_password_in_a_config_file_is_refused() {
    let app = spawn_app().await;
    let file = app.write("missive.toml", "[smtp]\npassword = \"secret\"\n");

    let out = run(app.cli().arg("--config").arg(&file).arg("status"));

    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("MISSIVE_SMTP__PASSWORD"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("secret\""), "the secret is not echoed");
}
