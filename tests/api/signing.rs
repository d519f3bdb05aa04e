//! Signing: one signature, its letters rendered and pinned once, duplicates recognised, and no
//! signer input able to reach a mail header.

use crate::helpers::{decode_qp, signer, spawn_app, spawn_app_with_ana, CAMPAIGN};
use missive::domain::SignerField;
use missive::intake::IntakeError;
use missive::queue::Recorded;

fn eml_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn headers(eml: &str) -> &str {
    eml.split("\r\n\r\n").next().unwrap()
}

#[tokio::test]
async fn signing_queues_one_letter_per_target() {
    let app = spawn_app().await;

    let recorded = app
        .sign(&signer("José", "Núñez", "jose@example.net"))
        .await
        .unwrap();

    assert!(
        matches!(recorded, Recorded::Created { letters: 4, .. }),
        "{recorded:?}"
    );
    let status = app.status().await;
    assert_eq!(status.signatures, 1);
    assert_eq!(status.by_target.len(), 4);
}

#[tokio::test]
async fn signing_twice_with_the_same_email_queues_letters_once() {
    let app = spawn_app().await;

    let first = app
        .sign(&signer("Ana", "One", "ana@example.net"))
        .await
        .unwrap();
    let second = app
        .sign(&signer("Ana", "Two", " ANA@example.NET "))
        .await
        .unwrap();

    let Recorded::Created { public_id, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(second, Recorded::Duplicate { public_id });
    let letters: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM letters")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(letters, 4);
}

#[tokio::test]
async fn one_address_written_with_its_unicode_or_its_ascii_domain_signs_once() {
    let app = spawn_app().await;

    let first = app
        .sign(&signer("Zoé", "Unicode", "zoe@Société.example"))
        .await
        .unwrap();
    let second = app
        .sign(&signer("Zoé", "Ascii", "zoe@xn--socit-esab.example"))
        .await
        .unwrap();
    app.send_all().await;

    let Recorded::Created { public_id, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(second, Recorded::Duplicate { public_id });
    let email: String = sqlx::query_scalar("SELECT email FROM signatures")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(email, "zoe@xn--socit-esab.example");
    let files = eml_files(&app.outbox());
    assert_eq!(files.len(), 4);
    assert!(
        headers(&files[0]).contains("<zoe@xn--socit-esab.example>"),
        "Reply-To in ASCII: {}",
        headers(&files[0])
    );
}

#[tokio::test]
async fn a_name_carrying_a_header_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;

    let err = app
        .sign(&signer(
            "Eve\r\nBcc: victim@example.net",
            "X",
            "eve@example.net",
        ))
        .await
        .unwrap_err();

    let IntakeError::Invalid(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.fields[0].0, SignerField::FirstName);
    assert_eq!(app.status().await.signatures, 0);
}

#[tokio::test]
async fn a_message_with_line_breaks_stays_inside_the_body() {
    let app = spawn_app().await;
    let mut input = signer("Ana", "Example", "ana@example.net");
    input.message = Some("Please act.\r\nBcc: victim@example.net\r\n\r\nSubject: hijack".into());

    app.sign(&input).await.unwrap();
    app.send_all().await;

    let files = eml_files(&app.outbox());
    assert_eq!(files.len(), 4);
    for eml in files {
        let h = headers(&eml);
        assert!(!h.lines().any(|l| l.starts_with("Bcc:")), "{h}");
        assert_eq!(
            h.lines().filter(|l| l.starts_with("Subject:")).count(),
            1,
            "{h}"
        );
        assert!(
            decode_qp(&eml).contains("Bcc: victim@example.net"),
            "the message text is kept in the body"
        );
    }
}

#[tokio::test]
async fn from_is_the_organisation_with_the_signers_name_and_reply_to_is_the_signer() {
    let app = spawn_app().await;

    app.sign(&signer("Liam", "Walsh", "liam@example.net"))
        .await
        .unwrap();
    app.send_all().await;

    for eml in eml_files(&app.outbox()) {
        let h = headers(&eml);
        assert!(
            h.contains("From: \"Liam Walsh\" <letters@example.org>"),
            "{h}"
        );
        assert!(
            h.contains("Reply-To: \"Liam Walsh\" <liam@example.net>"),
            "{h}"
        );
        assert!(
            h.contains("@example.org>\r\nDate:") || h.contains("Message-ID: <"),
            "{h}"
        );
    }
}

#[tokio::test]
async fn letters_are_written_in_the_signers_language() {
    let app = spawn_app().await;
    let mut input = signer("Zoë", "Dubois", "zoe@example.net");
    input.language = Some("fr".into());

    app.sign(&input).await.unwrap();

    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT language, body_text FROM letters JOIN letter_bodies ON letter_id = id",
    )
    .fetch_all(&app.db().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    for (lang, body) in rows {
        assert_eq!(lang, "fr");
        assert!(body.contains("Zoë Dubois"), "{body}");
        assert!(body.contains("Madame"), "{body}");
    }
}

#[tokio::test]
async fn editing_a_template_never_rewrites_letters_already_queued() {
    let app = spawn_app_with_ana(&[]).await;
    let subject = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("en")
        .join("subject.hbs");
    std::fs::write(&subject, "A NEW SUBJECT\n").unwrap();

    // A new process start (new registry) sends the old letters.
    let restarted = missive::startup::App::build(app.settings.clone())
        .await
        .unwrap();
    restarted
        .dispatcher()
        .run(&Default::default(), Default::default())
        .await
        .unwrap();

    for eml in eml_files(&app.outbox()) {
        assert!(!eml.contains("A NEW SUBJECT"));
    }
    let hashes: Vec<String> = sqlx::query_scalar("SELECT DISTINCT template_hash FROM letters")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 1);
    assert_ne!(
        hashes[0],
        restarted
            .registry
            .get(CAMPAIGN)
            .unwrap()
            .template_hash(&missive::domain::LanguageTag::parse("en").unwrap())
    );
}

#[tokio::test]
async fn the_html_letter_escapes_the_signers_words_and_keeps_their_line_breaks() {
    let app = spawn_app().await;
    let mut input = signer("Ana", "Example", "ana@example.net");
    input.message = Some("<script>alert(1)</script>\nSecond line & more".into());

    app.sign(&input).await.unwrap();

    let html: Vec<String> = sqlx::query_scalar("SELECT body_html FROM letter_bodies")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert_eq!(html.len(), 4);
    for h in html {
        assert!(
            h.contains("&lt;script&gt;alert(1)&lt;/script&gt;<br>\nSecond line &amp; more"),
            "{h}"
        );
        assert!(!h.contains("<script>"));
    }
}
