//! `campaign.toml` and the folder around it: the raw TOML shape (strict: unknown keys are
//! errors), and the checked `Campaign` with its targets, pacing and compiled templates.

use super::render::Templates;
use super::Problem;
use crate::domain::{
    AddressPolicy, CampaignSlug, EmailAddress, Invalid, InvalidKind, LanguageTag, TargetId,
};
use crate::pacing::{CampaignPacing, RawPacing, RawTargetPacing, TargetSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    languages: Vec<String>,
    default_language: String,
    #[serde(default)]
    letter_language: Option<String>,
    #[serde(default)]
    confirm: bool,
    organisation: RawOrganisation,
    #[serde(default)]
    sending: RawSending,
    #[serde(default)]
    pacing: Option<RawPacing>,
    #[serde(default)]
    text: BTreeMap<String, RawText>,
    #[serde(default)]
    targets: Vec<RawTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganisation {
    name: String,
    sender: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSending {
    rate_per_second: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawText {
    title: String,
    summary: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    id: String,
    #[serde(default)]
    name: String,
    title: String,
    institution: String,
    email: String,
    language: String,
    time_zone: String,
    #[serde(default)]
    salutation: BTreeMap<String, String>,
    #[serde(default)]
    pacing: Option<RawTargetPacing>,
}

/// In which language each letter is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetterLanguage {
    /// The signer's chosen language, when the campaign offers it.
    Signer,
    /// The target's own language, when the campaign offers it.
    Target,
}

/// The organisation running the campaign: letters go out from its address.
#[derive(Debug, Clone)]
pub struct Organisation {
    pub name: String,
    /// The `From` address (the signer's name is its display name) and envelope sender.
    pub sender: EmailAddress,
}

/// A campaign's title and summary in one language.
#[derive(Debug, Clone)]
pub struct CampaignText {
    pub title: String,
    pub summary: String,
}

/// An authority that receives one letter from each signer.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: TargetId,
    /// A personal name, or empty when the letter addresses the office.
    pub name: String,
    pub title: String,
    pub institution: String,
    pub email: EmailAddress,
    pub language: LanguageTag,
    pub time_zone: chrono_tz::Tz,
    /// The opening line in each language the campaign offers.
    pub salutation: BTreeMap<LanguageTag, String>,
}

impl Target {
    /// The display name in the `To` header: the person's name, else the office's title.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.title
        } else {
            &self.name
        }
    }
}

/// A loaded, checked campaign.
#[derive(Debug)]
pub struct Campaign {
    pub slug: CampaignSlug,
    pub dir: PathBuf,
    pub languages: Vec<LanguageTag>,
    pub default_language: LanguageTag,
    pub letter_language: LetterLanguage,
    /// Whether signatures wait for the signer to confirm by email before letters are created.
    pub confirm: bool,
    pub organisation: Organisation,
    /// Campaign-wide cap on letters per second, if any.
    pub rate_per_second: Option<f64>,
    /// How letters are paced to each target (`[pacing]`, with per-target overrides).
    pub pacing: CampaignPacing,
    pub text: BTreeMap<LanguageTag, CampaignText>,
    pub targets: Vec<Target>,
    pub(super) templates: Templates,
}

/// Why a campaign's address was refused, with the setting that would let it through when that
/// is the only thing wrong with it.
fn address_problem(e: &Invalid) -> String {
    match e.kind() {
        InvalidKind::NeedsSmtputf8 => {
            format!("{e} (hint: set smtp.smtputf8 = true only if your relay accepts SMTPUTF8)")
        }
        InvalidKind::Malformed => e.to_string(),
    }
}

/// The 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `needle` first appears after the line `from` (for errors found after parsing).
fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.find(needle).map(|at| line_of(text, at))
}

/// The line of the first `key = ...` at or after the line starting with `table`.
fn key_line_after(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut lines = text.lines().enumerate();
    lines.find(|(_, l)| l.trim_start().starts_with(table))?;
    lines
        .find(|(_, l)| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(i, _)| i + 1)
}

impl Campaign {
    /// Loads and checks the campaign in `dir`, its addresses against what `addresses` lets the
    /// relay carry; returns every problem found.
    pub fn load(dir: &Path, addresses: AddressPolicy) -> Result<Campaign, Vec<Problem>> {
        let file = dir.join("campaign.toml");
        let problem = |line: Option<usize>, message: String| Problem {
            file: file.clone(),
            line,
            message,
        };
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let slug = CampaignSlug::parse(folder).map_err(|e| {
            vec![Problem {
                file: dir.to_owned(),
                line: None,
                message: format!("the folder name is the campaign's slug: {e}"),
            }]
        })?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| vec![problem(None, format!("cannot read: {e}"))])?;
        let raw: RawCampaign = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            vec![problem(line, e.message().trim().to_owned())]
        })?;

        let mut problems = Vec::new();
        let at = |needle: &str| find_line(&text, needle);

        let mut languages = Vec::new();
        for l in &raw.languages {
            match LanguageTag::parse(l) {
                Ok(tag) if tag.as_str() == l => languages.push(tag),
                Ok(_) | Err(_) => problems.push(problem(
                    at("languages"),
                    format!("languages: `{l}` is not a lowercase language code such as `es`"),
                )),
            }
        }
        if raw.languages.is_empty() {
            problems.push(problem(
                at("languages"),
                "languages: list at least one language".into(),
            ));
        }
        let default_language = match LanguageTag::parse(&raw.default_language) {
            Ok(tag) if languages.contains(&tag) => Some(tag),
            _ => {
                problems.push(problem(
                    at("default_language"),
                    format!(
                        "default_language `{}` must be one of `languages`",
                        raw.default_language
                    ),
                ));
                None
            }
        };
        let letter_language = match raw.letter_language.as_deref() {
            None | Some("signer") => LetterLanguage::Signer,
            Some("target") => LetterLanguage::Target,
            Some(other) => {
                problems.push(problem(
                    at("letter_language"),
                    format!("letter_language `{other}` must be \"signer\" or \"target\""),
                ));
                LetterLanguage::Signer
            }
        };
        let sender = match EmailAddress::parse_with(&raw.organisation.sender, addresses) {
            Ok(s) => Some(s),
            Err(e) => {
                let why = address_problem(&e);
                problems.push(problem(at("sender"), format!("organisation.sender {why}")));
                None
            }
        };
        if raw.organisation.name.trim().is_empty() || raw.organisation.name.contains(['\r', '\n']) {
            problems.push(problem(
                at("[organisation]"),
                "organisation.name must be one non-empty line".into(),
            ));
        }
        if let Some(rate) = raw.sending.rate_per_second {
            if !(rate > 0.0 && rate.is_finite()) {
                problems.push(problem(
                    at("rate_per_second"),
                    "sending.rate_per_second must be a positive number".into(),
                ));
            }
        }

        let mut texts = BTreeMap::new();
        for (lang, t) in &raw.text {
            match LanguageTag::parse(lang) {
                Ok(tag) if languages.contains(&tag) => {
                    texts.insert(
                        tag,
                        CampaignText {
                            title: t.title.trim().to_owned(),
                            summary: t.summary.trim().to_owned(),
                        },
                    );
                }
                _ => problems.push(problem(
                    at(&format!("[text.{lang}]")),
                    format!("[text.{lang}] is for a language not listed in `languages`"),
                )),
            }
        }
        for lang in &languages {
            match texts.get(lang) {
                None => problems.push(problem(
                    None,
                    format!("add a [text.{lang}] table with the title and summary in `{lang}`"),
                )),
                Some(t) if t.title.is_empty() || t.title.contains('\n') => problems.push(problem(
                    at(&format!("[text.{lang}]")),
                    format!("text.{lang}.title must be one non-empty line"),
                )),
                Some(_) => {}
            }
        }

        if raw.targets.is_empty() {
            problems.push(problem(None, "add at least one [[targets]] table".into()));
        }
        let mut targets: Vec<Target> = Vec::new();
        for t in &raw.targets {
            let line = at(&format!("\"{}\"", t.id));
            let mut bad =
                |m: String| problems.push(problem(line, format!("target `{}`: {m}", t.id)));
            let id = TargetId::parse(&t.id).map_err(|e| bad(e.to_string())).ok();
            if let Some(id) = &id {
                if targets.iter().any(|x| &x.id == id) {
                    bad("the id is used twice".into());
                }
            }
            let email = EmailAddress::parse_with(&t.email, addresses)
                .map_err(|e| bad(format!("email {}", address_problem(&e))))
                .ok();
            let language = LanguageTag::parse(&t.language)
                .map_err(|e| bad(format!("language {e}")))
                .ok();
            let time_zone: Option<chrono_tz::Tz> = t
                .time_zone
                .parse()
                .map_err(|_| {
                    bad(format!(
                        "time_zone `{}` is not an IANA zone such as `America/Mexico_City`",
                        t.time_zone
                    ))
                })
                .ok();
            for (field, value) in [
                ("name", &t.name),
                ("title", &t.title),
                ("institution", &t.institution),
            ] {
                if value.contains(['\r', '\n', '<', '>']) {
                    bad(format!("{field} must be one line without `<` or `>`"));
                }
            }
            if t.title.trim().is_empty() {
                bad("title is empty".into());
            }
            let mut salutation = BTreeMap::new();
            for (lang, s) in &t.salutation {
                match LanguageTag::parse(lang) {
                    Ok(tag) if languages.contains(&tag) => {
                        salutation.insert(tag, s.trim().to_owned());
                    }
                    _ => bad(format!(
                        "salutation for `{lang}`, a language not in `languages`"
                    )),
                }
            }
            for lang in &languages {
                if !salutation.contains_key(lang) {
                    bad(format!("salutation has no `{lang}` entry"));
                }
            }
            if let (Some(id), Some(email), Some(language), Some(time_zone)) =
                (id, email, language, time_zone)
            {
                targets.push(Target {
                    id,
                    name: t.name.trim().to_owned(),
                    title: t.title.trim().to_owned(),
                    institution: t.institution.trim().to_owned(),
                    email,
                    language,
                    time_zone,
                    salutation,
                });
            }
        }

        // Pacing: the campaign's table and each target's override, checked together.
        let overrides: Vec<(TargetId, Option<&RawTargetPacing>)> = raw
            .targets
            .iter()
            .filter_map(|t| Some((TargetId::parse(&t.id).ok()?, t.pacing.as_ref())))
            .collect();
        let pacing = match CampaignPacing::from_raw(raw.pacing.as_ref(), &overrides) {
            Ok(p) => Some(p),
            Err(found) => {
                for p in found {
                    // A target's problem points at the target; the campaign's at its key.
                    let line = if p.scope.is_empty() {
                        let leaf = p.key.rsplit('.').next().unwrap_or(p.key);
                        key_line_after(&text, "[pacing", leaf).or_else(|| at("[pacing"))
                    } else {
                        overrides
                            .iter()
                            .find(|(id, _)| p.scope.contains(&format!("`{id}`")))
                            .and_then(|(id, _)| at(&format!("\"{id}\"")))
                    };
                    problems.push(problem(line, p.to_string()));
                }
                None
            }
        };

        let templates = match Templates::load(dir, &languages) {
            Ok(t) => Some(t),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        };

        match (default_language, sender, templates, pacing) {
            (Some(default_language), Some(sender), Some(templates), Some(pacing))
                if problems.is_empty() =>
            {
                let campaign = Campaign {
                    slug,
                    dir: dir.to_owned(),
                    languages,
                    default_language,
                    letter_language,
                    confirm: raw.confirm,
                    organisation: Organisation {
                        name: raw.organisation.name.trim().to_owned(),
                        sender,
                    },
                    rate_per_second: raw.sending.rate_per_second,
                    pacing,
                    text: texts,
                    targets,
                    templates,
                };
                let rehearsal = campaign.rehearse();
                if rehearsal.is_empty() {
                    Ok(campaign)
                } else {
                    Err(rehearsal)
                }
            }
            _ => Err(problems),
        }
    }

    /// The language a letter from a signer who chose `signer_language` to `target` is written in.
    pub fn letter_language_for(
        &self,
        signer_language: Option<&LanguageTag>,
        target: &Target,
    ) -> &LanguageTag {
        let wanted = match self.letter_language {
            LetterLanguage::Signer => signer_language,
            LetterLanguage::Target => Some(&target.language),
        };
        wanted
            .and_then(|w| self.languages.iter().find(|l| *l == w))
            .unwrap_or(&self.default_language)
    }

    /// The language pages and confirmation emails use for a signer who chose `wanted`.
    pub fn page_language_for(&self, wanted: Option<&LanguageTag>) -> &LanguageTag {
        wanted
            .and_then(|w| self.languages.iter().find(|l| *l == w))
            .unwrap_or(&self.default_language)
    }

    /// The title and summary in `lang` (or the default language).
    pub fn text(&self, lang: &LanguageTag) -> &CampaignText {
        self.text
            .get(lang)
            .or_else(|| self.text.get(&self.default_language))
            .expect("load() checks every language has its text")
    }

    /// What the pacing scheduler needs about each target (`Scheduler::add_target`).
    pub fn pacing_specs(&self) -> impl Iterator<Item = TargetSpec<'_>> {
        self.targets.iter().map(move |t| TargetSpec {
            campaign: self.slug.as_str(),
            target: t.id.as_str(),
            address: &t.email,
            time_zone: t.time_zone,
            rule: self.pacing.rule_for(&t.id),
            drip_until: self.pacing.drip_until(),
        })
    }

    /// The target with this id.
    pub fn target(&self, id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.id.as_str() == id)
    }

    /// The target with this id, or an error naming the campaign's targets.
    pub fn require_target(&self, id: &str) -> Result<&Target, super::LettersError> {
        self.target(id)
            .ok_or_else(|| super::LettersError::UnknownTarget {
                campaign: self.slug.as_str().to_owned(),
                target: id.to_owned(),
                known: self
                    .targets
                    .iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The campaign's page body (Markdown) in `lang`, when the campaign has one.
    pub fn page_markdown(&self, lang: &LanguageTag) -> Option<&str> {
        self.templates.page(lang)
    }

    /// The hash of the templates letters in `lang` are rendered from.
    pub fn template_hash(&self, lang: &LanguageTag) -> &str {
        self.templates.hash(lang)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("letters/mexico-deportations")
    }

    /// A copy of the example campaign with `edit` applied to its campaign.toml.
    fn edited(edit: impl Fn(&str) -> String) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mexico-deportations");
        copy_dir(&example_dir(), &dir);
        let file = dir.join("campaign.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, edit(&text)).unwrap();
        (tmp, dir)
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn the_example_campaign_loads_its_pacing_policy() {
        let c = Campaign::load(&example_dir(), AddressPolicy::AsciiOnly).unwrap();
        let rule = c.pacing.default_rule();
        assert_eq!(rule.per_hour(), 60);
        assert_eq!(rule.min_spacing_ms(), 20_000);
        assert_eq!((rule.hour_cap(9), rule.hour_cap(17)), (60, 60));
        assert!(rule
            .window()
            .holidays()
            .contains(&chrono::NaiveDate::from_ymd_opt(2026, 9, 16).unwrap()));
        let specs: Vec<_> = c.pacing_specs().collect();
        assert_eq!(specs.len(), c.targets.len());
        assert_eq!(specs[0].campaign, "mexico-deportations");
        assert_eq!(specs[0].drip_until, None);
    }

    #[test]
    fn a_target_pacing_override_applies_to_that_target_only() {
        let (_tmp, dir) = edited(|t| {
            t.replacen(
                "time_zone = \"America/Mexico_City\"",
                "time_zone = \"America/Mexico_City\"\npacing = { per_hour = 20, window = { hours = \"10:00-14:00\" } }",
                1,
            )
        });
        let c = Campaign::load(&dir, AddressPolicy::AsciiOnly).unwrap();
        let first = &c.targets[0].id;
        assert_eq!(c.pacing.rule_for(first).per_hour(), 20);
        assert_eq!(c.pacing.rule_for(&c.targets[1].id).per_hour(), 60);
    }

    #[test]
    fn bad_pacing_keys_are_problems_with_their_line() {
        let (_tmp, dir) = edited(|t| {
            t.replace("per_hour = 60 ", "per_hour = 0 ")
                .replace("hours = \"09:00-18:00\"", "hours = \"18:00-09:00\"")
                .replacen(
                    "time_zone = \"America/Mexico_City\"",
                    "time_zone = \"America/Mexico_City\"\npacing = { min_spacing_seconds = -5 }",
                    1,
                )
        });
        let problems = Campaign::load(&dir, AddressPolicy::AsciiOnly).unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let find = |needle: &str| {
            problems
                .iter()
                .find(|p| p.message.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {text:#?}"))
        };
        assert_eq!(find("pacing.per_hour").line, Some(30));
        assert_eq!(find("pacing.window.hours").line, Some(41));
        let target = find("target `presidency`: pacing.min_spacing_seconds");
        assert!(target.line.is_some_and(|l| l > 60), "{target:?}");
    }

    #[test]
    fn unknown_pacing_keys_are_refused() {
        let (_tmp, dir) = edited(|t| t.replace("drip = false", "drip = false\nper_day = 3"));
        let problems = Campaign::load(&dir, AddressPolicy::AsciiOnly).unwrap_err();
        assert!(problems[0].message.contains("per_day"), "{problems:?}");
    }

    #[test]
    fn campaign_addresses_get_a_labels_and_utf8_local_parts_only_with_smtputf8() {
        let (_tmp, dir) = edited(|t| {
            t.replace("\"letters@example.org\"", "\"letters@société.example\"")
                .replace("\"presidency@example.org\"", "\"presidência@example.org\"")
        });

        let problems = Campaign::load(&dir, AddressPolicy::AsciiOnly).unwrap_err();
        let c = Campaign::load(&dir, AddressPolicy::Smtputf8).unwrap();

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let p = &problems[0];
        assert!(
            p.message.starts_with("target `presidency`: email `presidência@example.org` has a character before the `@`"),
            "{p}"
        );
        assert!(
            p.message
                .ends_with("(hint: set smtp.smtputf8 = true only if your relay accepts SMTPUTF8)"),
            "{p}"
        );
        assert_eq!(
            c.organisation.sender.as_str(),
            "letters@xn--socit-esab.example"
        );
        assert!(c.targets[0].email.needs_smtputf8());
    }
}
