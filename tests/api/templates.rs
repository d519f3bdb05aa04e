//! `missive check` and `missive preview`: every campaign problem found before anything is sent,
//! named by file and line.

use crate::helpers::{run, spawn_app, CAMPAIGN};

#[tokio::test]
async fn check_passes_on_the_example_campaign() {
    let app = spawn_app().await;

    let out = run(app.cli().arg("check"));

    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("ok mexico-deportations: 4 target(s), languages en, fr, es"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_misspelled_variable_stops_check_with_its_file_and_line() {
    let app = spawn_app().await;
    let body = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("fr")
        .join("body.txt.hbs");
    let text = std::fs::read_to_string(&body).unwrap();
    std::fs::write(
        &body,
        format!("{{{{target.salutation}}}},\n\nJe suis {{{{signer.frist_name}}}}.\n{text}"),
    )
    .unwrap();

    let out = run(app.cli().arg("check"));

    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("fr/body.txt.hbs:3:"), "{}", out.stdout);
    assert!(out.stdout.contains("frist_name"), "{}", out.stdout);
}

#[tokio::test]
async fn a_template_syntax_error_is_reported_with_its_line() {
    let app = spawn_app().await;
    let subject = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("es")
        .join("subject.hbs");
    std::fs::write(&subject, "Asunto\n{{#if signer.city}}sin cerrar\n").unwrap();

    let out = run(app.cli().arg("check"));

    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("es/subject.hbs:"), "{}", out.stdout);
}

#[tokio::test]
async fn an_unknown_key_in_campaign_toml_is_reported_with_its_line() {
    let app = spawn_app().await;
    let toml = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("langauges = [\"en\"]\n{text}")).unwrap();

    let out = run(app.cli().arg("check"));

    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("campaign.toml:1: unknown field `langauges`"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_target_address_with_utf8_before_the_at_stops_check_unless_the_relay_takes_smtputf8() {
    let app = spawn_app().await;
    let toml = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let edited = text.replace("\"presidency@example.org\"", "\"presidência@example.org\"");
    assert_ne!(edited, text);
    std::fs::write(&toml, edited).unwrap();

    let refused = run(app.cli().arg("check"));
    let accepted = run(app.cli().arg("check").env("MISSIVE_SMTP__SMTPUTF8", "true"));

    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stdout.contains(
            "target `presidency`: email `presidência@example.org` has a character before the `@`"
        ),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("hint: set smtp.smtputf8 = true"),
        "{}",
        refused.stdout
    );
    assert_eq!(accepted.code, 0, "{}{}", accepted.stdout, accepted.stderr);
}

#[tokio::test]
async fn a_target_without_a_salutation_in_a_campaign_language_is_a_problem() {
    let app = spawn_app().await;
    let toml = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let broken = text.replacen("fr = \"Madame la Présidente\", ", "", 1);
    assert_ne!(
        broken, text,
        "the fixture holds the salutation this test removes"
    );
    std::fs::write(&toml, broken).unwrap();

    let out = run(app.cli().arg("check"));

    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("target `presidency`: salutation has no `fr` entry"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn the_app_refuses_to_start_on_a_broken_campaign() {
    let app = spawn_app().await;
    let body = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("en")
        .join("body.txt.hbs");
    std::fs::write(&body, "Dear {{target.salutaton}},\n").unwrap();

    let err = missive::startup::App::build(app.settings.clone())
        .await
        .unwrap_err();

    assert!(format!("{err:#}").contains("en/body.txt.hbs"), "{err:#}");
}

#[tokio::test]
async fn preview_prints_the_exact_message_for_one_target_and_language() {
    let app = spawn_app().await;

    let out = run(app
        .cli()
        .args(["preview", CAMPAIGN, "--target", "migration", "--lang", "fr"]));

    assert_eq!(out.code, 0, "{}", out.stderr);
    // Header lines may be folded (a line break before white space, RFC 5322 2.2.3).
    let unfolded = out.stdout.replace("\r\n ", " ").replace("\n ", " ");
    assert!(
        unfolded.contains(
            "To: \"Commissioner of the National Migration Institute\" <migration@example.org>"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Reply-To: \"Ana Example\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Content-Type: text/html"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.lines().filter(|l| l.starts_with("To: ")).count(),
        1,
        "one target, one message"
    );
}

#[tokio::test]
async fn preview_of_an_unknown_target_lists_the_known_ones() {
    let app = spawn_app().await;

    let out = run(app.cli().args(["preview", CAMPAIGN, "--target", "nobody"]));

    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("hint: its targets are presidency, interior"),
        "{}",
        out.stderr
    );
}
