//! The web intake through its router (no socket): pages, the form and its defences, double
//! opt-in and the JSON API, each status code it can answer.

use crate::web_helpers::{
    api_body, confirmation_path, decode_body, form_body, spawn, Spawn, API_KEY, SLUG,
};
use axum::http::StatusCode;
use missive::queue::{now_millis, ClaimRequest};

fn env(pairs: &[(&'static str, &str)]) -> Spawn {
    Spawn {
        env: pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..Spawn::default()
    }
}

// ---- probes and pages -------------------------------------------------------------------

#[tokio::test]
async fn healthz_answers_and_readyz_checks_the_database() {
    let app = spawn(Spawn::default()).await;

    let live = app.get("/healthz").await;
    let ready = app.get("/readyz").await;

    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(ready.status, StatusCode::OK);
    app.queue().close().await;
    assert_eq!(
        app.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_home_page_lists_the_campaigns() {
    let app = spawn(Spawn::default()).await;

    let page = app.get("/").await;

    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Mexico: Mass deportations must stop"));
    assert!(page.body.contains(&format!("/c/{SLUG}?lang=en")));
}

#[tokio::test]
async fn the_action_page_shows_the_appeal_the_recipients_a_preview_and_the_form() {
    let app = spawn(Spawn::default()).await;

    let page = app.get(&format!("/c/{SLUG}")).await;

    assert_eq!(page.status, StatusCode::OK);
    let b = &page.body;
    assert!(
        b.contains("<h1>Mexico: Mass deportations must stop</h1>"),
        "{b}"
    );
    assert!(
        b.contains("<h2>What is happening</h2>"),
        "page.md is rendered"
    );
    assert!(b.contains("Secretary of the Interior"));
    assert!(b.contains("National Migration Institute (Instituto Nacional de Migración)"));
    assert!(b.contains("Dear Madam President"), "the letter preview");
    assert!(b.contains("[Your name]"), "the placeholder signer");
    assert!(b.contains("Enter your details"));
    assert!(b.contains(r#"<label for="f-first_name">First name"#));
    assert!(
        b.contains(r#"name="consent_contact" type="checkbox" value="yes">"#),
        "unchecked"
    );
    assert!(!b.contains("<script>"), "no inline script");
    assert!(page.header("cache-control").contains("no-store"));
}

#[tokio::test]
async fn the_action_page_speaks_french_by_query_and_spanish_by_accept_language() {
    let app = spawn(Spawn::default()).await;

    let fr = app.get(&format!("/c/{SLUG}?lang=fr")).await;
    let es = app
        .get_with(
            &format!("/c/{SLUG}"),
            &[("accept-language", "de;q=1, es-MX;q=0.9, en;q=0.5")],
        )
        .await;

    assert!(fr.body.contains(r#"<html lang="fr">"#));
    assert!(fr
        .body
        .contains("Mexique\u{a0}: les expulsions massives doivent cesser"));
    assert!(fr.body.contains("<h2>Ce qui se passe</h2>"));
    assert!(fr.body.contains("Vos coordonnées"));
    assert!(fr.body.contains("Madame la Présidente"));
    assert!(es.body.contains(r#"<html lang="es">"#));
    assert!(es
        .body
        .contains("México: las deportaciones masivas deben cesar"));
    assert!(es.body.contains("Sus datos"));
    assert!(
        es.body.contains("Estimada señora Presidenta"),
        "{}",
        es.body
    );
}

#[tokio::test]
async fn an_unknown_campaign_is_404() {
    let app = spawn(Spawn::default()).await;

    assert_eq!(app.get("/c/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/c/..%2Fetc").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/nothing-here").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_page_carries_the_security_headers_and_only_the_embed_may_be_framed() {
    let app = spawn(env(&[(
        "MISSIVE_HTTP__FRAME_ANCESTORS",
        "https://www.example.org",
    )]))
    .await;

    for path in ["/", &format!("/c/{SLUG}"), "/c/nope", "/healthz"] {
        let r = app.get(path).await;
        let csp = r.header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("form-action 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert_eq!(
            r.header("referrer-policy"),
            "strict-origin-when-cross-origin"
        );
    }
    let embed = app.get(&format!("/c/{SLUG}/embed?lang=es")).await;
    assert_eq!(embed.status, StatusCode::OK);
    assert!(embed
        .header("content-security-policy")
        .contains("frame-ancestors https://www.example.org"));
    assert!(embed.body.contains(r#"name="embed" value="1""#));
    assert!(
        !embed.body.contains("Estimada señora Presidenta"),
        "form only"
    );
}

#[tokio::test]
async fn the_form_cookie_is_httponly_strict_and_secure_over_https() {
    let http = spawn(Spawn::default()).await;
    let https = spawn(env(&[(
        "MISSIVE_HTTP__BASE_URL",
        "https://act.example.org",
    )]))
    .await;

    let plain = http.get(&format!("/c/{SLUG}")).await;
    let secure = https.get(&format!("/c/{SLUG}")).await;

    let c = plain.header("set-cookie");
    assert!(c.starts_with("missive_csrf="), "{c}");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    assert!(!c.contains("Secure"), "{c}");
    let c = secure.header("set-cookie");
    assert!(c.starts_with("__Host-missive_csrf="), "{c}");
    assert!(c.contains("; Secure"), "{c}");
}

// ---- the form ---------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_signature_queues_one_letter_per_target_and_redirects_to_thanks() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    let r = app
        .sign_form(
            &session,
            &[("consent_contact", "yes"), ("ref", "newsletter")],
        )
        .await;

    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), format!("/c/{SLUG}/thanks?lang=en"));
    assert_eq!(app.email_count().await, 4);
    let rows = app.signature_rows().await;
    assert_eq!(
        rows,
        vec![("jose@example.net".into(), 1, Some("newsletter".into()))]
    );
    let thanks = app.get(r.header("location")).await;
    assert!(thanks.body.contains("Your letters are on their way"));
    app.drain().await;
    let files = app.outbox_files();
    assert_eq!(files.len(), 4);
    assert!(files[0].1.contains("Reply-To:"), "{}", files[0].1);
}

#[tokio::test]
async fn the_contact_consent_is_off_unless_ticked() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    app.sign_form(&session, &[]).await;

    assert_eq!(app.signature_rows().await[0].1, 0);
}

#[tokio::test]
async fn signing_again_with_the_same_email_shows_the_same_thanks_and_queues_nothing_new() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;
    let first = app.sign_form(&session, &[]).await;

    let again = app
        .sign_form(&session, &[("email", "JOSE@Example.NET")])
        .await;

    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(app.email_count().await, 4);
}

#[tokio::test]
async fn invalid_fields_come_back_with_a_message_beside_each_and_the_values_kept() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    let r = app
        .sign_form(
            &session,
            &[
                ("email", "jose.example.net"),
                ("last_name", ""),
                ("consent_letter", "\u{0}"),
            ],
        )
        .await;

    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let b = &r.body;
    assert!(
        b.contains(r#"id="f-email-error">Enter an email address like name@example.org."#),
        "{b}"
    );
    assert!(
        b.contains(r#"aria-describedby="f-email-hint f-email-error""#),
        "{b}"
    );
    assert!(
        b.contains(r#"value="jose.example.net""#),
        "the bad value is kept"
    );
    assert!(b.contains(r#"value="José""#), "the good values are kept");
    assert!(b.contains(r#"value="Montréal""#));
    assert!(b.contains(r#"id="f-last_name-error">Please fill in this field."#));
    assert!(b.contains(r#"id="f-consent_letter-error""#));
    assert!(
        b.contains(r##"href="#f-email""##),
        "the summary links to the field"
    );
    assert_eq!(app.email_count().await, 0);
}

#[tokio::test]
async fn errors_are_shown_in_the_page_language() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    let r = app
        .sign_form(&session, &[("email", "nope"), ("page_lang", "fr")])
        .await;

    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("Saisissez une adresse courriel"));
}

#[tokio::test]
async fn a_line_break_in_a_name_is_refused_beside_the_field() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    let r = app
        .sign_form(&session, &[("first_name", "José\r\nBcc: x@example.org")])
        .await;

    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains(r#"id="f-first_name-error""#));
    assert_eq!(app.email_count().await, 0);
}

#[tokio::test]
async fn utf8_before_the_at_is_refused_beside_the_email_field_unless_the_relay_takes_smtputf8() {
    let plain = spawn(Spawn::default()).await;
    let smtputf8 = spawn(env(&[("MISSIVE_SMTP__SMTPUTF8", "true")])).await;
    let email = [("email", "josé@example.net")];

    let refused = plain.sign_form(&plain.form_session().await, &email).await;
    let accepted = smtputf8
        .sign_form(&smtputf8.form_session().await, &email)
        .await;

    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.contains(
            r#"id="f-email-error">This address has a character before the @ that our mail server cannot carry."#
        ),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(r#"value="josé@example.net""#));
    assert_eq!(plain.email_count().await, 0);
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    assert_eq!(smtputf8.email_count().await, 4);
    assert_eq!(smtputf8.signature_rows().await[0].0, "josé@example.net");
}

#[tokio::test]
async fn a_bot_that_fills_the_honeypot_sees_thanks_and_nothing_is_stored() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    let r = app
        .sign_form(&session, &[("website", "https://spam.example.net")])
        .await;

    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), format!("/c/{SLUG}/thanks?lang=en"));
    assert_eq!(app.email_count().await, 0);
    assert!(app.signature_rows().await.is_empty());
}

#[tokio::test]
async fn a_form_without_a_valid_token_or_cookie_is_refused_and_shown_again() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;
    let path = format!("/c/{SLUG}/sign");
    let form = "application/x-www-form-urlencoded";

    let no_cookie = app
        .post_form(&path, form_body(&session, &[]), &[("content-type", form)])
        .await;
    let forged = app
        .sign_form(&session, &[("csrf", "e.1700000000.AAAA")])
        .await;
    let other_site = app
        .post_form(
            &path,
            form_body(&session, &[]),
            &[
                ("content-type", form),
                ("cookie", &session.cookie),
                ("origin", "https://evil.example.net"),
            ],
        )
        .await;

    assert_eq!(no_cookie.status, StatusCode::FORBIDDEN);
    assert!(no_cookie.body.contains("This form had expired"));
    assert!(no_cookie.body.contains(r#"value="José""#), "values kept");
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(other_site.status, StatusCode::FORBIDDEN);
    assert_eq!(app.email_count().await, 0);
}

#[tokio::test]
async fn a_form_from_our_own_origin_is_accepted() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    let r = app
        .post_form(
            &format!("/c/{SLUG}/sign"),
            form_body(&session, &[]),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &session.cookie),
                ("origin", "http://127.0.0.1:8080"),
            ],
        )
        .await;

    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_megabyte_form_is_413() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;
    let big = "x".repeat(1 << 20);

    let r = app.sign_form(&session, &[("message", &big)]).await;

    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_form_sent_as_another_content_type_is_415() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;

    let r = app
        .post_form(
            &format!("/c/{SLUG}/sign"),
            form_body(&session, &[]),
            &[("content-type", "text/plain"), ("cookie", &session.cookie)],
        )
        .await;

    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_form_with_invalid_utf8_is_400() {
    let app = spawn(Spawn::default()).await;
    let session = app.form_session().await;
    let body = format!("{}&first_name=%FF%FE", form_body(&session, &[]));

    let r = app
        .post_form(
            &format!("/c/{SLUG}/sign"),
            body,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &session.cookie),
            ],
        )
        .await;

    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn signing_too_often_from_one_address_is_429() {
    let app = spawn(env(&[
        ("MISSIVE_HTTP__SIGN_PER_MINUTE", "1"),
        ("MISSIVE_HTTP__SIGN_BURST", "2"),
    ]))
    .await;
    let session = app.form_session().await;

    let a = app.sign_form(&session, &[("email", "a@example.net")]).await;
    let b = app.sign_form(&session, &[("email", "b@example.net")]).await;
    let c = app.sign_form(&session, &[("email", "c@example.net")]).await;

    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(b.status, StatusCode::SEE_OTHER);
    assert_eq!(c.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(c.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(app.email_count().await, 8);
}

#[tokio::test]
async fn behind_a_trusted_proxy_a_new_spoofed_forwarded_for_each_time_does_not_escape_the_limit() {
    let app = spawn(env(&[
        ("MISSIVE_HTTP__SIGN_PER_MINUTE", "1"),
        ("MISSIVE_HTTP__SIGN_BURST", "2"),
        ("MISSIVE_HTTP__TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
    ]))
    .await;
    let session = app.form_session().await;
    let proxy = "10.0.0.2:40000";

    // The client 203.0.113.7 writes a new first entry each time, on the proxy's line or on a
    // line of its own; the proxy appends the address it got the request from.
    let mut statuses = Vec::new();
    for n in 1..=4 {
        let email = format!("s{n}@example.net");
        let spoof = format!("198.51.100.{n}");
        let appended = format!("{spoof}, 203.0.113.7");
        let headers: Vec<(&str, &str)> = if n % 2 == 0 {
            vec![("x-forwarded-for", &appended)]
        } else {
            vec![
                ("x-forwarded-for", &spoof),
                ("x-forwarded-for", "203.0.113.7"),
            ]
        };
        let r = app
            .sign_form_from(&session, &[("email", &email)], proxy, &headers)
            .await;
        statuses.push(r.status);
    }
    let neighbour = app
        .sign_form_from(
            &session,
            &[("email", "neighbour@example.net")],
            proxy,
            &[("x-forwarded-for", "198.51.100.1, 203.0.113.8")],
        )
        .await;

    assert_eq!(
        statuses,
        [
            StatusCode::SEE_OTHER,
            StatusCode::SEE_OTHER,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        neighbour.status,
        StatusCode::SEE_OTHER,
        "another client behind the same proxy has a budget of its own"
    );
}

#[tokio::test]
async fn by_default_no_proxy_is_trusted_and_x_forwarded_for_is_ignored() {
    let app = spawn(env(&[
        ("MISSIVE_HTTP__SIGN_PER_MINUTE", "1"),
        ("MISSIVE_HTTP__SIGN_BURST", "2"),
    ]))
    .await;
    let session = app.form_session().await;

    let mut statuses = Vec::new();
    for n in 1..=3 {
        let email = format!("s{n}@example.net");
        let forwarded = format!("203.0.113.{n}");
        let r = app
            .sign_form_from(
                &session,
                &[("email", &email)],
                "127.0.0.1:40000",
                &[("x-forwarded-for", &forwarded)],
            )
            .await;
        statuses.push(r.status);
    }

    assert_eq!(
        statuses,
        [
            StatusCode::SEE_OTHER,
            StatusCode::SEE_OTHER,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

// ---- double opt-in ----------------------------------------------------------------------

#[tokio::test]
async fn with_double_opt_in_letters_wait_until_the_link_is_followed() {
    let app = spawn(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;
    let session = app.form_session().await;

    let r = app.sign_form(&session, &[]).await;
    let thanks = app.get(r.header("location")).await;
    app.drain().await;

    assert!(thanks.body.contains("We have sent you an email"));
    let files = app.outbox_files();
    assert_eq!(files.len(), 1, "only the confirmation email");
    let email = &files[0].1;
    assert!(email.contains("To: =?utf-8?b?"), "{email}");
    assert!(email.contains("<jose@example.net>"));
    assert!(
        decode_body(email).contains("Bonjour José"),
        "in the signer's language"
    );
    let link = confirmation_path(email);

    let page = app.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&format!(r#"action="{link}""#)),
        "a button, not a GET"
    );
    assert_eq!(
        app.email_count().await,
        1,
        "opening the link changes nothing"
    );

    let confirmed = app.post_form(&link, "", &[]).await;
    assert_eq!(confirmed.status, StatusCode::OK);
    assert!(confirmed.body.contains("Merci pour votre confirmation"));
    assert_eq!(app.email_count().await, 5);

    let again = app.post_form(&link, "", &[]).await;
    assert!(again.body.contains("déjà confirmé"));
    assert_eq!(app.email_count().await, 5);
}

#[tokio::test]
async fn status_counts_confirmation_emails_apart_from_letters() {
    use missive::domain::LetterState;
    let app = spawn(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;
    let session = app.form_session().await;
    app.sign_form(&session, &[]).await;

    let waiting = app.queue().status(None).await.unwrap();
    assert_eq!(waiting.confirmations.get(&LetterState::Queued), Some(&1));
    assert!(waiting.by_state.is_empty(), "{waiting:?}");
    assert!(waiting.by_target.is_empty(), "{waiting:?}");
    assert!(waiting.oldest_waiting_since.is_some());

    app.drain().await;
    let link = confirmation_path(&app.outbox_files()[0].1);
    app.post_form(&link, "", &[]).await;
    let confirmed = app.queue().status(None).await.unwrap();
    assert_eq!(confirmed.confirmations.get(&LetterState::Sent), Some(&1));
    assert_eq!(confirmed.by_state.get(&LetterState::Queued), Some(&4));
    assert_eq!(
        confirmed.by_target.len(),
        4,
        "one row per target, no confirmation row"
    );
    assert!(confirmed.oldest_waiting_since.is_some());

    app.drain().await;
    let done = app.queue().status(None).await.unwrap();
    assert_eq!(done.by_state.get(&LetterState::Sent), Some(&4));
    assert_eq!(done.oldest_waiting_since, None, "nothing waits");
}

#[tokio::test]
async fn signing_again_before_confirming_resends_a_link_and_the_old_one_stops_working() {
    let app = spawn(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;
    let session = app.form_session().await;
    app.sign_form(&session, &[]).await;
    app.drain().await;
    let old = confirmation_path(&app.outbox_files()[0].1);

    app.sign_form(&session, &[("language", "en")]).await;
    app.drain().await;

    let files = app.outbox_files();
    assert_eq!(files.len(), 2);
    let new = files
        .iter()
        .map(|(_, eml)| confirmation_path(eml))
        .find(|l| *l != old)
        .unwrap();
    assert_eq!(app.get(&old).await.status, StatusCode::GONE);
    assert_eq!(app.post_form(&new, "", &[]).await.status, StatusCode::OK);
    assert_eq!(app.email_count().await, 2 + 4);
}

#[tokio::test]
async fn unconfirmed_signatures_expire_and_are_deleted_with_their_emails() {
    let app = spawn(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;
    let session = app.form_session().await;
    app.sign_form(&session, &[]).await;
    app.drain().await;
    let link = confirmation_path(&app.outbox_files()[0].1);

    let eight_days = 8 * 86_400_000;
    let deleted = app
        .queue()
        .delete_expired_awaiting(now_millis() + eight_days)
        .await
        .unwrap();

    assert_eq!(deleted, 1);
    assert_eq!(app.email_count().await, 0);
    assert!(app.signature_rows().await.is_empty());
    assert_eq!(app.post_form(&link, "", &[]).await.status, StatusCode::GONE);
}

#[tokio::test]
async fn a_forged_confirmation_link_is_gone() {
    let app = spawn(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;

    let r = app.get("/confirm/AAAA.BBBB").await;

    assert_eq!(r.status, StatusCode::GONE);
    assert!(r.body.contains("This link no longer works"));
}

#[tokio::test]
async fn confirmation_emails_are_claimed_before_waiting_letters() {
    let app = spawn(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;
    let session = app.form_session().await;
    app.sign_form(&session, &[("email", "first@example.net")])
        .await;
    app.drain().await;
    let link = confirmation_path(&app.outbox_files()[0].1);
    app.post_form(&link, "", &[]).await; // four letters now wait
    app.sign_form(&session, &[("email", "second@example.net")])
        .await;

    let claimed = app
        .queue()
        .claim(&ClaimRequest {
            owner: "test",
            token: 1,
            now: now_millis() + 1000,
            lease_ms: 60_000,
            limit: 1,
            campaign: None,
            target: None,
            exclude_campaigns: None,
        })
        .await
        .unwrap();

    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].letter.recipient.as_str(), "second@example.net");
    assert!(claimed[0].letter.target_id.starts_with("confirmation."));
}

// ---- the JSON API -----------------------------------------------------------------------

fn api_path() -> String {
    format!("/api/v1/campaigns/{SLUG}/signatures")
}

#[tokio::test]
async fn the_api_refuses_calls_without_a_valid_key() {
    let app = spawn(Spawn::default()).await;

    let missing = app
        .post_api(
            &api_path(),
            api_body("ana@example.net"),
            &[("authorization", "")],
        )
        .await;
    let wrong = app
        .post_api(
            &api_path(),
            api_body("ana@example.net"),
            &[("authorization", "Bearer not-the-key-000000000000000")],
        )
        .await;
    let get = app.get("/api/v1/signatures/whatever").await;

    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.email_count().await, 0);
}

#[tokio::test]
async fn the_api_records_a_signature_with_201_and_a_repeat_with_200() {
    let app = spawn(Spawn::default()).await;

    let first = app
        .post_api(&api_path(), api_body("ana@example.net"), &[])
        .await;
    let again = app
        .post_api(&api_path(), api_body("ANA@example.net"), &[])
        .await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let j = first.json();
    assert_eq!(j["status"], "created");
    assert_eq!(j["letters_queued"], 4);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(again.json()["id"], j["id"]);
    assert_eq!(app.email_count().await, 4);
    let rows = app.signature_rows().await;
    assert_eq!(rows[0].1, 1, "contact consent stored");
    assert_eq!(rows[0].2.as_deref(), Some("https://www.example.org/act"));
}

#[tokio::test]
async fn the_api_shows_a_signatures_letters_and_their_states() {
    let app = spawn(Spawn::default()).await;
    let created = app
        .post_api(&api_path(), api_body("ana@example.net"), &[])
        .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    app.drain().await;

    let r = app
        .get_with(
            &format!("/api/v1/signatures/{id}"),
            &[("authorization", &format!("Bearer {API_KEY}"))],
        )
        .await;
    let unknown = app
        .get_with(
            "/api/v1/signatures/00000000-0000-0000-0000-000000000000",
            &[("authorization", &format!("Bearer {API_KEY}"))],
        )
        .await;

    assert_eq!(r.status, StatusCode::OK);
    let letters = r.json()["letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 4);
    assert!(letters.iter().all(|l| l["state"] == "sent"), "{letters:?}");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_api_answers_404_for_an_unknown_campaign() {
    let app = spawn(Spawn::default()).await;

    let r = app
        .post_api(
            "/api/v1/campaigns/no-such-campaign/signatures",
            api_body("ana@example.net"),
            &[],
        )
        .await;

    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "no such campaign");
}

#[tokio::test]
async fn the_api_refuses_malformed_json_and_invalid_utf8_with_400() {
    let app = spawn(Spawn::default()).await;

    let broken = app.post_api(&api_path(), "{\"person\": ", &[]).await;
    let mut bytes = api_body("ana@example.net").into_bytes();
    let at = bytes.iter().position(|b| *b == b'A').unwrap();
    bytes[at] = 0xFF;
    let not_utf8 = app.post_api(&api_path(), bytes, &[]).await;

    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert!(broken.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("the body is not valid JSON"));
    assert_eq!(not_utf8.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_api_wants_json_and_at_most_64_kib() {
    let app = spawn(Spawn::default()).await;

    let form = app
        .post_api(
            &api_path(),
            api_body("ana@example.net"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    let huge = format!(
        "{{\"comment\": \"{}\", \"person\": {{}}}}",
        "x".repeat(1 << 20)
    );
    let big = app.post_api(&api_path(), huge, &[]).await;

    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_api_names_each_invalid_field_by_its_path() {
    let app = spawn(Spawn::default()).await;
    let body = serde_json::json!({
        "person": {
            "given_name": "Ana\r\nBcc: x@example.org",
            "family_name": "",
            "email_addresses": [{"address": "nope"}]
        },
        "consents": {"send_letters": false}
    });

    let r = app.post_api(&api_path(), body.to_string(), &[]).await;

    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = &r.json()["fields"];
    for path in [
        "person.given_name",
        "person.family_name",
        "person.email_addresses[0].address",
        "consents.send_letters",
    ] {
        assert!(fields.get(path).is_some(), "{path} in {fields}");
    }
    assert_eq!(app.email_count().await, 0);
}

#[tokio::test]
async fn the_api_refuses_utf8_before_the_at_by_its_path_unless_the_relay_takes_smtputf8() {
    let plain = spawn(Spawn::default()).await;
    let smtputf8 = spawn(env(&[("MISSIVE_SMTP__SMTPUTF8", "true")])).await;

    let refused = plain
        .post_api(&api_path(), api_body("用户@example.org"), &[])
        .await;
    let accepted = smtputf8
        .post_api(&api_path(), api_body("用户@example.org"), &[])
        .await;

    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.json()["fields"]["person.email_addresses[0].address"],
        "`用户@example.org` has a character before the `@` that this campaign's mail server \
         cannot carry: use an address with only the letters a to z, digits and . _ - + before \
         the `@`"
    );
    assert_eq!(plain.email_count().await, 0);
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
    assert_eq!(smtputf8.email_count().await, 4);
}

#[tokio::test]
async fn through_the_api_a_unicode_domain_and_its_ascii_form_are_one_signer() {
    let app = spawn(Spawn::default()).await;

    let first = app
        .post_api(&api_path(), api_body("ana@société.example"), &[])
        .await;
    let again = app
        .post_api(&api_path(), api_body("ana@xn--socit-esab.example"), &[])
        .await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(
        app.signature_rows().await[0].0,
        "ana@xn--socit-esab.example"
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let app = spawn(Spawn::default()).await;
    let key = [("idempotency-key", "order-42")];

    let first = app
        .post_api(&api_path(), api_body("ana@example.net"), &key)
        .await;
    let replay = app
        .post_api(&api_path(), api_body("ana@example.net"), &key)
        .await;
    let other = app
        .post_api(&api_path(), api_body("bo@example.net"), &key)
        .await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        replay.status,
        StatusCode::CREATED,
        "the same answer, not 'duplicate'"
    );
    assert_eq!(replay.body, first.body);
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(other.json()["error"]
        .as_str()
        .unwrap()
        .contains("different request"));
    assert_eq!(app.email_count().await, 4);
}

#[tokio::test]
async fn the_api_rate_limit_answers_429() {
    let app = spawn(env(&[
        ("MISSIVE_HTTP__API_PER_SECOND", "1"),
        ("MISSIVE_HTTP__API_BURST", "1"),
    ]))
    .await;

    let a = app
        .post_api(&api_path(), api_body("a@example.net"), &[])
        .await;
    let b = app
        .post_api(&api_path(), api_body("b@example.net"), &[])
        .await;

    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(b.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(b.header("retry-after").parse::<u64>().unwrap() >= 1);
}

#[tokio::test]
async fn through_the_api_double_opt_in_still_applies() {
    let app = spawn(Spawn {
        confirm: true,
        ..Spawn::default()
    })
    .await;

    let r = app
        .post_api(&api_path(), api_body("ana@example.net"), &[])
        .await;

    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["status"], "awaiting_confirmation");
    assert_eq!(app.email_count().await, 1, "only the confirmation email");
}
