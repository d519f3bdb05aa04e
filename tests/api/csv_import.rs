//! `missive import`, driven through the real binary: encodings, layouts and every kind of bad
//! row, and the promise that a file with bad rows imports nothing unless asked.

use crate::helpers::{run, spawn_app, CAMPAIGN};

async fn count(app: &crate::helpers::TestApp, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&app.db().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn accented_names_with_a_bom_and_crlf_line_endings_import_exactly() {
    let app = spawn_app().await;
    let csv = "\u{feff}first_name,last_name,email,city,postal_code,country,language,message\r\n\
               José,Núñez,jose@example.net,Guadalajara,44100,México,es,\r\n\
               Zoë,Dubois,zoe@example.net,Montréal,H2X 1Y4,Canada,fr,Merci\r\n";
    let file = app.write("signers.csv", csv);

    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));

    assert_eq!(out.code, 0, "{}", out.stderr);
    let names: Vec<(String, String, String)> =
        sqlx::query_as("SELECT first_name, last_name, city FROM signatures ORDER BY id")
            .fetch_all(&app.db().await)
            .await
            .unwrap();
    assert_eq!(
        names,
        vec![
            ("José".into(), "Núñez".into(), "Guadalajara".into()),
            ("Zoë".into(), "Dubois".into(), "Montréal".into())
        ]
    );
    assert_eq!(count(&app, "letters").await, 8);
    assert!(
        out.stderr.contains("imported 2 signer(s)"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_quoted_multi_line_message_reaches_the_letters_intact() {
    let app = spawn_app().await;
    let csv = "first_name,last_name,email,message\n\
               Mathieu,Roy,mathieu@example.net,\"First line, with a comma\nSecond \"\"quoted\"\" line\"\n";
    let file = app.write("signers.csv", csv);

    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));

    assert_eq!(out.code, 0, "{}", out.stderr);
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body_text FROM letter_bodies")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert_eq!(bodies.len(), 4);
    for body in bodies {
        assert!(
            body.contains("First line, with a comma\nSecond \"quoted\" line"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_single_name_column_is_split_into_first_and_last_names() {
    let app = spawn_app().await;
    let file = app.write(
        "signers.csv",
        "name,email\nMaría de la Cruz,maria@example.net\n",
    );

    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));

    assert_eq!(out.code, 0, "{}", out.stderr);
    let (first, last): (String, String) =
        sqlx::query_as("SELECT first_name, last_name FROM signatures")
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert_eq!((first.as_str(), last.as_str()), ("María", "de la Cruz"));
}

#[tokio::test]
async fn every_invalid_row_is_listed_by_line_and_nothing_is_imported() {
    let app = spawn_app().await;
    let csv = "first_name,last_name,email\n\
               Ana,Good,ana@example.net\n\
               Bad,Email,not-an-email\n\
               \"Multi\nLine\",Name,multi@example.net\n\
               ,Nofirst,nofirst@example.net\n\
               Too,Many,fields@example.net,extra\n";
    let file = app.write("signers.csv", csv);

    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));

    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(
        lines[0].ends_with("signers.csv:3: email: `not-an-email` has no `@`"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("signers.csv:4: first_name: contains a line break"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("signers.csv:6: first_name: is empty"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("signers.csv:7: has 4 fields but the header has 3"),
        "{}",
        lines[3]
    );
    assert!(
        out.stderr.contains("nothing was imported"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert_eq!(count(&app, "signatures").await, 0);
    assert_eq!(count(&app, "letters").await, 0);
}

#[tokio::test]
async fn skip_invalid_imports_the_good_rows_and_still_lists_the_bad() {
    let app = spawn_app().await;
    let csv = "first_name,last_name,email\nAna,Good,ana@example.net\nBad,Email,nope\nLuis,Good,luis@example.net\n";
    let file = app.write("signers.csv", csv);

    let out = run(app
        .cli()
        .args(["import", CAMPAIGN, "--skip-invalid"])
        .arg(&file));

    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains(":3: email"), "{}", out.stdout);
    assert_eq!(count(&app, "signatures").await, 2);
    assert_eq!(count(&app, "letters").await, 8);
}

#[tokio::test]
async fn utf8_before_the_at_is_an_invalid_row_unless_the_relay_takes_smtputf8() {
    let app = spawn_app().await;
    let csv = "first_name,last_name,email\nAna,Good,ana@example.net\nJosé,Núñez,josé@example.net\n";
    let file = app.write("signers.csv", csv);

    let refused = run(app.cli().args(["import", CAMPAIGN]).arg(&file));
    let before = count(&app, "signatures").await;
    let accepted = run(app
        .cli()
        .args(["import", CAMPAIGN])
        .arg(&file)
        .env("MISSIVE_SMTP__SMTPUTF8", "true"));

    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert_eq!(
        refused.stdout.lines().collect::<Vec<_>>(),
        [format!(
            "{}:3: email: `josé@example.net` has a character before the `@` that this \
             campaign's mail server cannot carry: use an address with only the letters a to z, \
             digits and . _ - + before the `@`",
            file.display()
        )]
    );
    assert_eq!(before, 0);
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    assert_eq!(count(&app, "signatures").await, 2);
}

#[tokio::test]
async fn importing_the_same_file_again_creates_nothing_new() {
    let app = spawn_app().await;
    let sample = app
        .path()
        .join("letters")
        .join(CAMPAIGN)
        .join("sample-signers.csv");

    let first = run(app.cli().args(["import", CAMPAIGN]).arg(&sample));
    let second = run(app.cli().args(["import", CAMPAIGN, "--json"]).arg(&sample));

    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let report: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(report["imported"], 0);
    assert_eq!(report["duplicates"], 12);
    assert_eq!(count(&app, "signatures").await, 12);
    assert_eq!(count(&app, "letters").await, 48);
}

#[tokio::test]
async fn the_same_person_twice_in_one_file_is_a_duplicate_whatever_the_case_of_the_email() {
    let app = spawn_app().await;
    let csv = "first_name,last_name,email\nAna,One,ana@example.net\nAna,Again,ANA@Example.NET\n";
    let file = app.write("signers.csv", csv);

    let out = run(app.cli().args(["import", CAMPAIGN, "--json"]).arg(&file));

    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (report["imported"].as_u64(), report["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn a_file_without_an_email_column_is_an_error_naming_it() {
    let app = spawn_app().await;
    let file = app.write(
        "signers.csv",
        "first_name,last_name,mail\nAna,X,ana@example.net\n",
    );

    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));

    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("line 1: no `email` column"),
        "{}",
        out.stderr
    );
    assert_eq!(count(&app, "signatures").await, 0);
}

#[tokio::test]
async fn a_ten_megabyte_message_is_refused_with_its_line() {
    let app = spawn_app().await;
    let mut csv = String::from("first_name,last_name,email,message\n");
    csv.push_str("Ana,Big,ana@example.net,\"");
    csv.push_str(&"x".repeat(10 * 1024 * 1024));
    csv.push_str("\"\nLuis,Small,luis@example.net,hello\n");
    let file = app.write("signers.csv", csv);

    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));

    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(":2: message: is 10485760 characters long; at most 2000 are allowed"),
        "{}",
        &out.stdout[..out.stdout.len().min(300)]
    );
    assert_eq!(count(&app, "signatures").await, 0);
}

#[tokio::test]
async fn a_file_that_is_not_utf8_is_refused_with_its_line() {
    let app = spawn_app().await;
    let mut bytes = b"first_name,last_name,email\nAna,Ok,ana@example.net\n".to_vec();
    bytes.extend_from_slice(b"Jos\xe9,N\xfa\xf1ez,jose@example.net\n"); // Latin-1
    let file = app.write("signers.csv", bytes);

    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));

    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains(":3: is not valid UTF-8"),
        "{}",
        out.stdout
    );
    assert_eq!(count(&app, "signatures").await, 0);
}

#[tokio::test]
async fn a_missing_file_is_an_error_naming_it() {
    let app = spawn_app().await;

    let out = run(app.cli().args(["import", CAMPAIGN, "no-such.csv"]));

    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("cannot read no-such.csv"),
        "{}",
        out.stderr
    );
}

/// An import goes in batches of multi-row statements (at most 64 rows each): across them, every
/// letter keeps its own signer's text, and of two rows for one person the first is kept.
#[tokio::test]
async fn a_large_import_attaches_every_letter_to_its_own_signer_and_text() {
    let app = spawn_app().await;
    let mut csv = String::from("first_name,last_name,email,message\n");
    for i in 0..150 {
        // Row 100 repeats row 10's person in another case, in a later statement.
        let email = if i == 100 {
            "SIGNER10@Example.NET".to_owned()
        } else {
            format!("signer{i}@example.net")
        };
        csv.push_str(&format!("Name{i},Family,{email},My words number {i}.\n"));
    }
    let file = app.write("signers.csv", &csv);

    let out = run(app.cli().args(["import", CAMPAIGN, "--json"]).arg(&file));

    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (report["imported"].as_u64(), report["duplicates"].as_u64()),
        (Some(149), Some(1))
    );
    assert_eq!(count(&app, "letters").await, 149 * 4);
    assert_eq!(count(&app, "letter_bodies").await, 149 * 4);
    let kept: String = sqlx::query_scalar(
        "SELECT first_name FROM signatures WHERE email_normalized LIKE 'signer10@%'",
    )
    .fetch_one(&app.db().await)
    .await
    .unwrap();
    assert_eq!(kept, "Name10");
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT s.first_name, s.message, b.body_text
           FROM letters AS l
           JOIN signatures AS s ON s.id = l.signature_id
           JOIN letter_bodies AS b ON b.letter_id = l.id",
    )
    .fetch_all(&app.db().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 149 * 4);
    for (name, message, body) in rows {
        assert!(
            body.contains(&format!("{name} Family")) && body.contains(&message),
            "a letter of {name} holds another signer's text:\n{body}"
        );
    }
}
