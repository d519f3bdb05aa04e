//! Templates and rendering: one strict handlebars registry per campaign language for text (no
//! escaping) and one for HTML (escaping), their hash, and the function that turns a signer and a
//! target into a `domain::Letter` whose subject, bodies and headers are final.
//!
//! Signer input is only ever *data* in the context: nothing a signer types is compiled as a
//! template, and the HTML registry escapes every value.

use super::{Campaign, Problem, Target};
use crate::domain::{AddressPolicy, LanguageTag, Letter, NewSigner, Signer};
use chrono::{Datelike, NaiveDate};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SUBJECT: &str = "subject";
const BODY_TEXT: &str = "body.txt";
const BODY_HTML: &str = "body.html";
const CONFIRM_SUBJECT: &str = "confirm_subject";
const CONFIRM_BODY: &str = "confirm_body.txt";

/// The compiled templates of one language.
#[derive(Debug)]
struct LanguageTemplates {
    text: Handlebars<'static>,
    html: Option<Handlebars<'static>>,
    has_confirm: bool,
    page: Option<String>,
    hash: String,
    dir: PathBuf,
}

/// Every language's templates of one campaign.
#[derive(Debug)]
pub(crate) struct Templates {
    by_language: BTreeMap<LanguageTag, LanguageTemplates>,
}

fn template_problem(file: &Path, e: &handlebars::TemplateError) -> Problem {
    Problem {
        file: file.to_owned(),
        line: e.pos().map(|(line, _)| line),
        message: format!("template error: {}", e.reason()),
    }
}

/// `{{paragraphs signer.message}}` in HTML bodies: the text escaped, line breaks kept as `<br>`.
fn paragraphs_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("paragraphs", 0))?;
    let text = value.value().as_str().unwrap_or_default();
    let escaped = handlebars::html_escape(text).replace('\n', "<br>\n");
    out.write(&escaped)?;
    Ok(())
}

fn new_registry(escape: bool) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    if escape {
        hb.register_helper("paragraphs", Box::new(paragraphs_helper));
    } else {
        hb.register_escape_fn(handlebars::no_escape);
    }
    hb
}

impl Templates {
    /// Reads and compiles `<lang>/*.hbs` and the partials for each language.
    pub(crate) fn load(dir: &Path, languages: &[LanguageTag]) -> Result<Templates, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut by_language = BTreeMap::new();
        // Partials shared by all languages, then each language's own (which win).
        let shared = read_partials(&dir.join("partials"), &mut problems);
        for lang in languages {
            let ldir = dir.join(lang.as_str());
            if !ldir.is_dir() {
                problems.push(Problem {
                    file: ldir.clone(),
                    line: None,
                    message: format!("missing folder for language `{lang}` (it needs subject.hbs and body.txt.hbs)"),
                });
                continue;
            }
            let mut partials = shared.clone();
            partials.extend(read_partials(&ldir.join("partials"), &mut problems));
            let mut hasher = Sha256::new();
            let mut text = new_registry(false);
            let mut html = new_registry(true);
            for (name, (path, source)) in &partials {
                hasher.update(path.to_string_lossy().as_bytes());
                hasher.update(source.as_bytes());
                for hb in [&mut text, &mut html] {
                    if let Err(e) = hb.register_partial(name, source.clone()) {
                        problems.push(template_problem(path, &e));
                    }
                }
            }
            let mut register = |hb: &mut Handlebars<'static>, name: &str, required: bool| -> bool {
                let path = ldir.join(format!("{name}.hbs"));
                match std::fs::read_to_string(&path) {
                    Ok(source) => {
                        hasher.update(path.to_string_lossy().as_bytes());
                        hasher.update(source.as_bytes());
                        if let Err(e) = hb.register_template_string(name, source) {
                            problems.push(template_problem(&path, &e));
                        }
                        true
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => false,
                    Err(e) => {
                        problems.push(Problem {
                            file: path,
                            line: None,
                            message: format!("cannot read: {e}"),
                        });
                        false
                    }
                }
            };
            register(&mut text, SUBJECT, true);
            register(&mut text, BODY_TEXT, true);
            let has_html =
                ldir.join("body.html.hbs").is_file() && register(&mut html, BODY_HTML, false);
            let has_confirm = ldir.join("confirm_subject.hbs").is_file()
                || ldir.join("confirm_body.txt.hbs").is_file();
            if has_confirm {
                register(&mut text, CONFIRM_SUBJECT, true);
                register(&mut text, CONFIRM_BODY, true);
            }
            let page = std::fs::read_to_string(ldir.join("page.md")).ok();
            let hash = hex::encode(&hasher.finalize()[..8]);
            by_language.insert(
                lang.clone(),
                LanguageTemplates {
                    text,
                    html: has_html.then_some(html),
                    has_confirm,
                    page,
                    hash,
                    dir: ldir,
                },
            );
        }
        if problems.is_empty() {
            Ok(Templates { by_language })
        } else {
            Err(problems)
        }
    }

    pub(crate) fn hash(&self, lang: &LanguageTag) -> &str {
        self.by_language
            .get(lang)
            .map(|t| t.hash.as_str())
            .unwrap_or_default()
    }

    pub(crate) fn page(&self, lang: &LanguageTag) -> Option<&str> {
        self.by_language.get(lang).and_then(|t| t.page.as_deref())
    }
}

/// `partials/<name>.hbs` files of a folder, by name. A missing folder has none.
fn read_partials(dir: &Path, problems: &mut Vec<Problem>) -> BTreeMap<String, (PathBuf, String)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".hbs"))
        else {
            continue;
        };
        match std::fs::read_to_string(&path) {
            Ok(source) => {
                // Compile once here so a syntax error names the partial's file and line.
                if let Err(e) = handlebars::Template::compile(&source) {
                    problems.push(template_problem(&path, &e));
                }
                out.insert(name.to_owned(), (path, source));
            }
            Err(e) => problems.push(Problem {
                file: path,
                line: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    out
}

/// What a letter is rendered from.
pub struct RenderInput<'a> {
    pub signer: &'a Signer,
    pub target: &'a Target,
    /// The date written on the letter.
    pub today: NaiveDate,
}

/// A rendered confirmation email to a signer (double opt-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationDraft {
    pub subject: String,
    pub body_text: String,
    pub language: LanguageTag,
}

/// Formats `date` as a letter would in `lang` (`28 November 2026`, `28 novembre 2026`,
/// `28 de noviembre de 2026`), or ISO 8601 for languages without a rule here.
pub fn format_date(date: NaiveDate, lang: &LanguageTag) -> String {
    const EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const FR: [&str; 12] = [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ];
    const ES: [&str; 12] = [
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ];
    let m = date.month0() as usize;
    match lang.as_str() {
        "en" => format!("{} {} {}", date.day(), EN[m], date.year()),
        "fr" if date.day() == 1 => format!("1er {} {}", FR[m], date.year()),
        "fr" => format!("{} {} {}", date.day(), FR[m], date.year()),
        "es" => format!("{} de {} de {}", date.day(), ES[m], date.year()),
        _ => date.format("%Y-%m-%d").to_string(),
    }
}

/// Collapses a rendered subject to one line: any run of white space (CR/LF included) is a space.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn signer_json(signer: &Signer) -> Value {
    json!({
        "first_name": signer.first_name.as_str(),
        "last_name": signer.last_name.as_str(),
        "full_name": signer.full_name(),
        "email": signer.email.as_str(),
        "city": signer.city.as_deref().unwrap_or(""),
        "postal_code": signer.postal_code.as_deref().unwrap_or(""),
        "country": signer.country.as_deref().unwrap_or(""),
        "language": signer.language.as_ref().map(|l| l.as_str()).unwrap_or(""),
        "message": signer.message.as_deref().unwrap_or(""),
    })
}

impl Campaign {
    fn lang_templates(&self, lang: &LanguageTag) -> &LanguageTemplates {
        self.templates
            .by_language
            .get(lang)
            .expect("load() compiles templates for every campaign language")
    }

    fn render_error(
        &self,
        lang: &LanguageTag,
        name: &str,
        e: handlebars::RenderError,
    ) -> super::LettersError {
        let t = self.lang_templates(lang);
        let file = t.dir.join(format!(
            "{}.hbs",
            e.template_name.as_deref().unwrap_or(name)
        ));
        let at = e.line_no.map(|l| format!(":{l}")).unwrap_or_default();
        super::LettersError::Render {
            file: format!("{}{at}", file.display()),
            message: e.reason().to_string(),
        }
    }

    /// Renders the letter `input.signer` sends to `input.target`.
    pub fn render(&self, input: &RenderInput<'_>) -> Result<Letter, super::LettersError> {
        let lang = self.letter_language_for(input.signer.language.as_ref(), input.target);
        let t = self.lang_templates(lang);
        let target = input.target;
        // One context for the three templates (`render` would copy a `Value` each time).
        let ctx = Context::from(json!({
            "signer": signer_json(input.signer),
            "target": {
                "id": target.id.as_str(),
                "name": target.name,
                "title": target.title,
                "institution": target.institution,
                "salutation": target.salutation.get(lang).map(String::as_str).unwrap_or(""),
                "email": target.email.as_str(),
            },
            "campaign": { "slug": self.slug.as_str(), "title": self.text(lang).title },
            "organisation": { "name": self.organisation.name },
            "letter": { "language": lang.as_str(), "date": format_date(input.today, lang) },
        }));
        let subject = one_line(
            &t.text
                .render_with_context(SUBJECT, &ctx)
                .map_err(|e| self.render_error(lang, "subject", e))?,
        );
        let body_text = t
            .text
            .render_with_context(BODY_TEXT, &ctx)
            .map_err(|e| self.render_error(lang, "body.txt", e))?;
        let body_html = match &t.html {
            Some(html) => Some(
                html.render_with_context(BODY_HTML, &ctx)
                    .map_err(|e| self.render_error(lang, "body.html", e))?,
            ),
            None => None,
        };
        if subject.is_empty() || body_text.trim().is_empty() {
            return Err(super::LettersError::Render {
                file: t.dir.display().to_string(),
                message: "the subject or the text body rendered empty".into(),
            });
        }
        Ok(Letter {
            target_id: target.id.as_str().to_owned(),
            recipient: target.email.clone(),
            recipient_name: target.display_name().to_owned(),
            from_name: input.signer.full_name(),
            from_address: self.organisation.sender.clone(),
            reply_to: input.signer.email.clone(),
            language: lang.clone(),
            subject,
            body_text,
            body_html,
            template_hash: t.hash.clone(),
        })
    }

    /// Whether this campaign has confirmation templates in every language.
    pub fn has_confirmation_templates(&self) -> bool {
        self.templates.by_language.values().all(|t| t.has_confirm)
    }

    /// Renders the confirmation email asking `signer` to follow `confirm_url`.
    pub fn render_confirmation(
        &self,
        signer: &Signer,
        confirm_url: &str,
        today: NaiveDate,
    ) -> Result<ConfirmationDraft, super::LettersError> {
        let lang = self.page_language_for(signer.language.as_ref());
        let t = self.lang_templates(lang);
        if !t.has_confirm {
            return Err(super::LettersError::Render {
                file: t.dir.display().to_string(),
                message: "no confirm_subject.hbs / confirm_body.txt.hbs for this language".into(),
            });
        }
        let ctx = Context::from(json!({
            "signer": signer_json(signer),
            "campaign": { "slug": self.slug.as_str(), "title": self.text(lang).title },
            "organisation": { "name": self.organisation.name },
            "letter": { "language": lang.as_str(), "date": format_date(today, lang) },
            "confirm_url": confirm_url,
        }));
        let subject = one_line(
            &t.text
                .render_with_context(CONFIRM_SUBJECT, &ctx)
                .map_err(|e| self.render_error(lang, CONFIRM_SUBJECT, e))?,
        );
        let body_text = t
            .text
            .render_with_context(CONFIRM_BODY, &ctx)
            .map_err(|e| self.render_error(lang, CONFIRM_BODY, e))?;
        Ok(ConfirmationDraft {
            subject,
            body_text,
            language: lang.clone(),
        })
    }

    /// Renders every template for every target and language, for a signer who filled in every
    /// field and one who filled in only the required ones. Returns what went wrong.
    pub(super) fn rehearse(&self) -> Vec<Problem> {
        let full = Signer::parse(
            &NewSigner {
                first_name: "Ana".into(),
                last_name: "Example".into(),
                email: "ana@example.net".into(),
                city: Some("Toronto".into()),
                postal_code: Some("M5V 2T6".into()),
                country: Some("Canada".into()),
                language: None,
                message: Some("A personal message\nover two lines.".into()),
            },
            AddressPolicy::AsciiOnly,
        )
        .expect("sample signer is valid");
        let minimal = Signer {
            city: crate::domain::OptionalLine::parse(None, 1).expect("empty is valid"),
            country: crate::domain::OptionalLine::parse(None, 1).expect("empty is valid"),
            postal_code: crate::domain::OptionalLine::parse(None, 1).expect("empty is valid"),
            message: crate::domain::PersonalMessage::parse(None).expect("empty is valid"),
            ..full.clone()
        };
        let today = NaiveDate::from_ymd_opt(2026, 11, 28).expect("valid date");
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for lang in &self.languages {
            for sample in [&full, &minimal] {
                let signer = Signer {
                    language: Some(lang.clone()),
                    ..sample.clone()
                };
                for target in &self.targets {
                    if let Err(e) = self.render(&RenderInput {
                        signer: &signer,
                        target,
                        today,
                    }) {
                        if seen.insert(e.to_string()) {
                            problems.push(render_problem(&e));
                        }
                    }
                }
                if self.confirm || self.lang_templates(lang).has_confirm {
                    if let Err(e) = self.render_confirmation(
                        &signer,
                        "https://example.org/confirm/token",
                        today,
                    ) {
                        if seen.insert(e.to_string()) {
                            problems.push(render_problem(&e));
                        }
                    }
                }
            }
        }
        problems
    }
}

fn render_problem(e: &super::LettersError) -> Problem {
    match e {
        super::LettersError::Render { file, message } => {
            let (path, line) = match file.rsplit_once(':') {
                Some((p, l)) if l.parse::<usize>().is_ok() => (p.to_owned(), l.parse().ok()),
                _ => (file.clone(), None),
            };
            Problem {
                file: PathBuf::from(path),
                line,
                message: message.clone(),
            }
        }
        other => Problem {
            file: PathBuf::new(),
            line: None,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_naturally_in_each_language() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let tag = |s| LanguageTag::parse(s).unwrap();
        assert_eq!(format_date(d, &tag("en")), "28 November 2026");
        assert_eq!(format_date(d, &tag("fr")), "28 novembre 2026");
        assert_eq!(format_date(d, &tag("es")), "28 de noviembre de 2026");
        assert_eq!(format_date(d, &tag("de")), "2026-11-28");
    }

    #[test]
    fn subjects_become_one_line() {
        assert_eq!(
            one_line(" Stop\r\nBcc: x@example.org \n"),
            "Stop Bcc: x@example.org"
        );
    }
}
