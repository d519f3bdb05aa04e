//! Pacing through the worker: a target's hourly budget holds across runs (limits survive
//! restarts), nothing goes outside a target's window, and organisers' pause, resume and cancel.
//! The scheduler's own guarantees (sliding windows, DST, drip, plan = run) are unit-tested in
//! `src/pacing`.

use crate::helpers::{run, signer, spawn_app, spawn_app_with_ana, TestApp, CAMPAIGN};
use chrono::{Datelike, Utc};

/// Replaces the campaign's `[pacing]` tables with `block`, then restarts the app on it.
async fn with_pacing(block: &str) -> TestApp {
    let app = spawn_app().await;
    let toml = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        let header = line.trim_start().starts_with('[');
        if header {
            skipping = line.trim().starts_with("[pacing");
            if line.trim() == "[pacing]" {
                out.push(block.to_owned());
            }
        }
        if !skipping {
            out.push(line.to_owned());
        }
    }
    std::fs::write(&toml, out.join("\n") + "\n").unwrap();
    let rebuilt = missive::startup::App::build(app.settings.clone())
        .await
        .unwrap();
    TestApp {
        app: rebuilt,
        ..app
    }
}

async fn sent_per_target(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT target_id, COUNT(*) FROM letters WHERE state = 'sent' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&app.db().await)
    .await
    .unwrap()
}

const ALWAYS_OPEN: &str = r#"[pacing]
per_hour = 2
min_spacing_seconds = 0
curve = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
[pacing.window]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
hours = "00:00-24:00""#;

#[tokio::test]
async fn a_targets_hourly_budget_holds_across_runs() {
    let app = with_pacing(ALWAYS_OPEN).await;
    for i in 0..5 {
        app.sign(&signer("Ana", "Example", &format!("ana{i}@example.net")))
            .await
            .unwrap();
    }

    let first = app.send_all().await;
    // A new run (as after a restart) restores the last hour's sends: no burst.
    let second = app.send_all().await;

    assert_eq!(first.sent, 8, "2 per target");
    assert_eq!(second.sent, 0);
    assert!(first.next_paced_at.is_some());
    for (_, n) in sent_per_target(&app).await {
        assert_eq!(n, 2);
    }
}

#[tokio::test]
async fn nothing_goes_to_a_target_outside_its_window() {
    // Open only on a day that is not today (in Mexico City, the targets' zone).
    let today = Utc::now()
        .with_timezone(&chrono_tz::America::Mexico_City)
        .weekday();
    let other = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [today.succ().succ().num_days_from_monday() as usize];
    let block = ALWAYS_OPEN.replace(
        r#"days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]"#,
        &format!(r#"days = ["{other}"]"#),
    );
    let app = with_pacing(&block).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();

    let summary = app.send_all().await;
    let plan = run(app.cli().args(["plan", "--json"]));

    assert_eq!(summary.sent, 0);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let rows: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["waiting"], 1);
        let first = row["per_day"][0][0].as_str().unwrap();
        let day = chrono::NaiveDate::parse_from_str(first, "%Y-%m-%d").unwrap();
        assert_eq!(
            day.weekday(),
            today.succ().succ(),
            "the plan puts the letter on the open day"
        );
    }
}

#[tokio::test]
async fn a_paused_campaign_sends_nothing_until_resumed_even_letters_signed_meanwhile() {
    let app = spawn_app_with_ana(&[]).await;

    let paused = run(app.cli().args(["pause", "--campaign", CAMPAIGN]));
    app.sign(&signer("Luis", "Example", "luis@example.net"))
        .await
        .unwrap();
    let while_paused = app.send_all().await;
    let resumed = run(app.cli().args(["resume", "--campaign", CAMPAIGN]));
    let after = app.send_all().await;

    assert_eq!(paused.code, 0, "{}", paused.stderr);
    assert_eq!(paused.stdout.trim(), "4", "the waiting letters were held");
    assert_eq!(while_paused.sent, 0);
    assert_eq!(resumed.code, 0);
    assert_eq!(after.sent, 8);
}

#[tokio::test]
async fn pausing_one_target_holds_only_its_letters() {
    let app = spawn_app_with_ana(&[]).await;

    let out = run(app
        .cli()
        .args(["pause", "--campaign", CAMPAIGN, "--target", "interior"]));
    let summary = app.send_all().await;

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(summary.sent, 3);
    let held: Vec<String> =
        sqlx::query_scalar("SELECT target_id FROM letters WHERE state = 'held'")
            .fetch_all(&app.db().await)
            .await
            .unwrap();
    assert_eq!(held, vec!["interior"]);
}

#[tokio::test]
async fn cancelled_letters_are_reported_and_never_sent() {
    let app = spawn_app_with_ana(&[]).await;

    let out = run(app
        .cli()
        .args(["cancel", "--campaign", CAMPAIGN, "--target", "migration"]));
    let summary = app.send_all().await;

    assert_eq!(out.stdout.trim(), "1");
    assert!(out.stderr.contains("will never be sent"));
    assert_eq!(summary.sent, 3);
    let state: String =
        sqlx::query_scalar("SELECT state FROM letters WHERE target_id = 'migration'")
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert_eq!(state, "cancelled");
}

#[tokio::test]
async fn pausing_an_unknown_target_names_the_known_ones() {
    let app = spawn_app().await;

    let out = run(app
        .cli()
        .args(["pause", "--campaign", CAMPAIGN, "--target", "nobody"]));

    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("hint: its targets are presidency"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_receiving_domain_gets_no_more_than_its_cap_across_all_targets() {
    let app = with_pacing(ALWAYS_OPEN).await;
    let mut env = app.env.clone();
    env.push(("MISSIVE_PACING__PER_DOMAIN_PER_HOUR".into(), "3".into()));
    let settings = missive::config::Settings::load(None, env).unwrap();
    let capped = missive::startup::App::build(settings).await.unwrap();
    for i in 0..5 {
        app.sign(&signer("Ana", "Example", &format!("ana{i}@example.net")))
            .await
            .unwrap();
    }

    let summary = capped
        .dispatcher()
        .run(&Default::default(), Default::default())
        .await
        .unwrap();

    // Every target is on example.org: three letters in the hour, whichever targets they go to.
    assert_eq!(summary.sent, 3);
}

#[tokio::test]
async fn a_paced_batch_ends_once_every_letter_has_gone() {
    let app = with_pacing(&ALWAYS_OPEN.replace("per_hour = 2", "per_hour = 3600")).await;
    for i in 0..3 {
        app.sign(&signer("Ana", "Example", &format!("ana{i}@example.net")))
            .await
            .unwrap();
    }

    let summary = tokio::time::timeout(std::time::Duration::from_secs(30), app.send_all())
        .await
        .expect("the batch ends instead of waiting for letters that will never come");

    assert_eq!(summary.sent, 12);
}

#[tokio::test]
async fn two_workers_on_one_queue_pace_each_target_once_between_them() {
    let app = with_pacing(ALWAYS_OPEN).await;
    for i in 0..3 {
        app.sign(&signer("Ana", "Example", &format!("ana{i}@example.net")))
            .await
            .unwrap();
    }
    // A second process on the same queue, with the same campaigns.
    let other = missive::startup::App::build(app.settings.clone())
        .await
        .unwrap();

    let run = missive::worker::RunOptions::default();
    let (first, second) = (app.app.dispatcher(), other.dispatcher());
    let (one, two) = tokio::join!(
        first.run(&run, Default::default()),
        second.run(&run, Default::default()),
    );
    let (one, two) = (one.unwrap(), two.unwrap());

    // Each alone would send each target's budget (2 an hour); together they send it once.
    assert_eq!(one.sent + two.sent, 8, "2 per target: {one:?} {two:?}");
    for (_, n) in sent_per_target(&app).await {
        assert_eq!(n, 2);
    }
    // A third run, whoever leads, restores both workers' sends: nothing more this hour.
    assert_eq!(
        other
            .dispatcher()
            .run(&run, Default::default())
            .await
            .unwrap()
            .sent,
        0
    );
}
