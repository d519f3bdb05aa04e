//! The MIME message for one letter: `From` the organisation's address with the signer's name,
//! `Reply-To` the signer, `To` the target, the pinned subject and bodies, and the Message-ID
//! the letter keeps on every attempt. lettre encodes every header, and nothing here can carry a
//! line break into one.

use super::MailerError;
use crate::domain::{EmailAddress, Letter};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};

fn mailbox(name: &str, address: &EmailAddress) -> Result<Mailbox, MailerError> {
    let addr: lettre::Address = address
        .as_str()
        .parse()
        .map_err(|e| MailerError::Build(format!("address `{address}`: {e}")))?;
    // Names are parsed without line breaks at the edge; this keeps any header safe regardless.
    let clean: String = name.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(Mailbox::new((!clean.is_empty()).then_some(clean), addr))
}

/// Builds the complete RFC 5322 message for `letter`.
pub fn build_message(letter: &Letter, message_id: &str) -> Result<Vec<u8>, MailerError> {
    let subject: String = letter
        .subject
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let builder = lettre::Message::builder()
        .from(mailbox(&letter.from_name, &letter.from_address)?)
        .reply_to(mailbox(&letter.from_name, &letter.reply_to)?)
        .to(mailbox(&letter.recipient_name, &letter.recipient)?)
        .subject(subject)
        .message_id(Some(message_id.to_owned()))
        .date_now();
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(letter.body_text.clone());
    let message = match &letter.body_html {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    }
    .map_err(|e| MailerError::Build(e.to_string()))?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LanguageTag;

    fn letter() -> Letter {
        Letter {
            target_id: "presidency".into(),
            recipient: EmailAddress::parse("presidency@example.org").unwrap(),
            recipient_name: "President of the Republic".into(),
            from_name: "José Núñez".into(),
            from_address: EmailAddress::parse("letters@example.org").unwrap(),
            reply_to: EmailAddress::parse("jose@example.net").unwrap(),
            language: LanguageTag::parse("es").unwrap(),
            subject: "Detengan las deportaciones".into(),
            body_text: "Estimada señora Presidenta:\n\nJosé Núñez".into(),
            body_html: None,
            template_hash: "x".into(),
        }
    }

    #[test]
    fn from_is_the_organisation_with_the_signers_name_and_reply_to_is_the_signer() {
        let raw = String::from_utf8(build_message(&letter(), "<1@example.org>").unwrap()).unwrap();
        assert!(raw.contains("From: =?utf-8?b?"), "{raw}");
        assert!(raw.contains("<letters@example.org>"));
        assert!(raw.contains("Reply-To: =?utf-8?b?"));
        assert!(raw.contains("<jose@example.net>"));
        assert!(raw.contains("To: \"President of the Republic\" <presidency@example.org>"));
        assert!(raw.contains("Message-ID: <1@example.org>"));
    }

    #[test]
    fn a_subject_with_line_breaks_cannot_add_headers() {
        let mut l = letter();
        l.subject = "Hi\r\nBcc: victim@example.net".into();
        l.from_name = "Eve\r\nBcc: victim@example.net".into();
        let raw = String::from_utf8(build_message(&l, "<1@example.org>").unwrap()).unwrap();
        let headers = raw.split("\r\n\r\n").next().unwrap();
        assert!(
            !headers.lines().any(|line| line.starts_with("Bcc:")),
            "{headers}"
        );
    }
}
