//! Every letter read back by an independent parser, Python's `email` package
//! (`tests/python/check_letters.py`): a corpus of letters that are hard to write (accented and
//! CJK names, an international domain, a 300-character subject, a 2,000-character message with
//! lines longer than 998 octets, a line starting with a dot, `From me`, trailing spaces, tabs)
//! goes through `missive::mailer::build_message`, and the script checks each header and body
//! decodes to exactly what the letter says and the raw bytes keep the rules of a message sent
//! without 8BITMIME. Judged only through the public function, so it holds for any writer.
//!
//! Needs `python3` (standard library only); without it the tests print a note and pass, except
//! under `CI=true`.

use missive::domain::{EmailAddress, LanguageTag, Letter};
use missive::mailer::build_message;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Whether `python3` runs, with a note when it does not; in CI its absence is a failure.
pub(crate) fn python3_available(needed_for: &str) -> bool {
    let runs = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is missing: .ci/run installs it"
        );
        eprintln!("note: python3 not installed; skipping {needed_for}");
    }
    runs
}

/// Runs the checker on `dir` and `manifest`: its exit code and its output.
fn check_letters(dir: &Path, manifest: &Path) -> (i32, String) {
    let out = Command::new("python3")
        .arg(script("check_letters.py"))
        .arg(dir)
        .arg(manifest)
        .output()
        .expect("python3 runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn address(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

/// A letter from `from_name` (replies to `reply_to`) to the presidency.
fn letter(from_name: &str, reply_to: &str, subject: &str, body_text: &str) -> Letter {
    Letter {
        target_id: "presidency".into(),
        recipient: address("presidency@example.org"),
        recipient_name: "Presidencia de la República".into(),
        from_name: from_name.into(),
        from_address: address("letters@example.org"),
        reply_to: address(reply_to),
        language: LanguageTag::parse("es").unwrap(),
        subject: subject.into(),
        body_text: body_text.into(),
        body_html: None,
        template_hash: "test".into(),
    }
}

/// A personal message of exactly 2,000 characters (the most a signer may write) holding the
/// lines a message writer gets wrong: one of 1,100 characters without a space (over 998 octets
/// in any encoding), one starting with a dot, `From me` (mbox), trailing spaces, tabs, CJK.
fn long_message() -> String {
    let mut m = String::new();
    m.push_str("Señora Presidenta, le escribo desde Guadalajara.\n");
    m.push_str(&"ñandú".repeat(220));
    m.push('\n');
    m.push_str(".una línea que empieza con un punto\n");
    m.push_str("From me, with all my heart\n");
    m.push_str("trailing spaces   \n");
    m.push_str("\ttabs\tinside\tand at the end\t\n");
    m.push_str("停止大规模驱逐移民和难民。山田太郎より。\n");
    while m.chars().count() < missive::domain::MESSAGE_MAX_CHARS {
        m.push_str("Detengan las deportaciones masivas de personas migrantes. ");
    }
    m.chars().take(missive::domain::MESSAGE_MAX_CHARS).collect()
}

/// A 300-character subject mixing ASCII words, accents and CJK.
fn long_subject() -> String {
    let mut s = String::new();
    while s.chars().count() < 300 {
        s.push_str("Stop the deportations — Détente des expulsions — 停止驱逐 — ");
    }
    s.chars()
        .take(300)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// An HTML version of `text`, one paragraph per line, escaped as the templates escape it.
fn html_of(text: &str) -> String {
    let escape = |l: &str| {
        l.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut html = String::from("<!DOCTYPE html>\n<html><body>\n");
    for line in text.lines() {
        html.push_str(&format!("<p>{}</p>\n", escape(line)));
    }
    html.push_str("</body></html>\n");
    html
}

/// The letters that are hard to write.
fn corpus() -> Vec<Letter> {
    let message = long_message();
    let ascii_body = format!(
        "Dear Madam President,\r\n\r\n.A line that starts with a dot.\r\nFrom me, too.\r\n\
         trailing spaces  \r\n\ta tab\tand another\t\r\n{}\r\n\r\nAna Example\r\n",
        "a".repeat(1100)
    );
    let mut letters = vec![
        letter(
            "José Núñez",
            "jose@example.net",
            "Detengan las deportaciones masivas",
            "Estimada señora Presidenta:\n\nDetengan las deportaciones.\n\nJosé Núñez\n",
        ),
        Letter {
            body_html: Some("<p>Arrêtez les expulsions.</p>\n<p>Zoë Ça</p>\n".into()),
            recipient_name: "Secrétariat à l'Intérieur".into(),
            ..letter(
                "Zoë Ça",
                "zoe@société.example",
                "Arrêtez les expulsions massives",
                "Madame la Présidente,\n\nArrêtez les expulsions.\n\nZoë Ça\n",
            )
        },
        Letter {
            // A target with no name: the bare address.
            recipient_name: String::new(),
            ..letter(
                "王小明",
                "wang@example.net",
                "停止大规模驱逐移民和难民",
                "尊敬的总统女士：\n\n请停止大规模驱逐。\n\n王小明\n",
            )
        },
        letter(
            "山田 太郎",
            "yamada@example.net",
            &long_subject(),
            &format!("Estimada señora Presidenta:\n\n{message}\n\n山田 太郎\n"),
        ),
        Letter {
            body_html: Some(html_of(&message)),
            ..letter(
                "Anne \"Annie\" O'Brien",
                "annie@example.net",
                &long_subject(),
                &format!("Dear Madam President,\n\n{message}\n\nAnne \"Annie\" O'Brien\n"),
            )
        },
        letter(
            "Ana Example",
            "ana@example.net",
            "Stop the mass deportations of migrants and refugee claimants now,\tbefore \
             more families are separated at the border and sent back to the danger \
             they fled; we ask you to  act  today, and to answer this letter",
            &ascii_body,
        ),
        Letter {
            // Short ASCII lines, no line break at the end: plain 7bit is possible.
            body_html: Some("<p>Please act.</p>".into()),
            ..letter(
                "Ana Example",
                "ana@example.net",
                "Please act",
                "Dear Madam President,\n\nPlease act.\n\nAna Example",
            )
        },
    ];
    for (i, l) in letters.iter_mut().enumerate() {
        l.target_id = format!("target{i}");
    }
    letters
}

fn mailbox(name: &str, address: &EmailAddress) -> serde_json::Value {
    // The address as the letter holds it once parsed (an international domain may be kept
    // as typed or turned into its A-label form: either way, this is what must be read back).
    json!({ "name": name, "address": address.as_str() })
}

/// What the checker must read back from `letter`'s message, filed as `file`.
fn manifest_entry(file: &str, message_id: &str, l: &Letter) -> serde_json::Value {
    json!({
        "file": file,
        "from": mailbox(&l.from_name, &l.from_address),
        // Replies go to the signer, under the signer's name.
        "reply_to": mailbox(&l.from_name, &l.reply_to),
        "to": mailbox(&l.recipient_name, &l.recipient),
        "subject": l.subject,
        "message_id": message_id,
        "text": l.body_text,
        "html": l.body_html,
    })
}

#[test]
fn python_reads_back_exactly_what_every_letter_says() {
    if !python3_available("the Python email read-back test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let letters_dir = dir.path().join("letters");
    std::fs::create_dir(&letters_dir).unwrap();
    let mut manifest = Vec::new();
    for (n, l) in corpus().iter().enumerate() {
        let file = format!("{:02}.eml", n + 1);
        let message_id = format!("<{}.test@example.org>", n + 1);
        let raw = build_message(l, &message_id).expect("the letter builds");
        std::fs::write(letters_dir.join(&file), raw).unwrap();
        manifest.push(manifest_entry(&file, &message_id, l));
    }
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let (code, output) = check_letters(&letters_dir, &manifest_path);

    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(&format!("{} letter(s) read back", manifest.len())),
        "{output}"
    );
}

#[test]
fn the_python_check_reports_a_broken_letter() {
    if !python3_available("the Python email read-back test") {
        return;
    }
    use base64::Engine as _;
    // An encoded-word of legal size (at most 75 octets) on a header line longer than 76.
    let to_name = "Presidencia de la República, Palacio";
    let word = format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(to_name)
    );
    let to_line = format!("To: {word} <presidency@example.org>");
    assert!(word.len() <= 75 && to_line.len() > 76, "{to_line}");
    let bad = format!(
        "From: \"Jose Nunez\" <letters@example.org>\r\n\
         Reply-To: \"Jose Nunez\" <jose@example.net>\r\n\
         {to_line}\r\n\
         Subject: Detengan las deportaciones, señora\r\n\
         Message-ID: <1.test@example.org>\r\n\
         Date: Tue, 03 Mar 2026 09:05:07 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         Estimada senora Presidenta\r\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.eml"), bad).unwrap();
    let manifest = json!([{
        "file": "bad.eml",
        "from": { "name": "José Núñez", "address": "letters@example.org" },
        "reply_to": { "name": "José Núñez", "address": "jose@example.net" },
        "to": { "name": to_name, "address": "presidency@example.org" },
        "subject": "Detengan las deportaciones, señora",
        "message_id": "<1.test@example.org>",
        "text": "Estimada señora Presidenta\n",
        "html": null,
    }]);
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();

    let (code, output) = check_letters(dir.path(), &manifest_path);

    assert_eq!(code, 1, "{output}");
    for expected in [
        "bad.eml: line 3: expected a header line holding an encoded-word within 76 octets",
        "bad.eml: line 4: expected 7-bit bytes only",
        "bad.eml: From name: expected 'José Núñez', got 'Jose Nunez'",
        "bad.eml: Reply-To name: expected 'José Núñez', got 'Jose Nunez'",
        "bad.eml: text/plain body: expected the letter's body, got at character 12",
    ] {
        assert!(
            output.contains(expected),
            "missing {expected:?} in:\n{output}"
        );
    }
}
