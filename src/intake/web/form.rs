//! The pages supporters see: the list of actions, an action page (appeal, recipients, a preview
//! of the letter and the form), the embeddable form, the thank-you page and the confirmation
//! pages. The form works without JavaScript; a rejected field is shown beside itself (tied to
//! it with `aria-describedby`) with every value kept, and listed in a summary at the top.
//!
//! Anti-abuse on `POST /c/<slug>/sign`, in this order: the body limit, the Origin check and a
//! signed form token (bound to a `SameSite=Strict` cookie on our own pages), the honeypot (a
//! bot that fills it gets the usual thank-you and nothing is stored), then the per-address
//! rate limit.

use super::i18n::{self, field_error, negotiate, Ui};
use super::signing::{self, LinkState};
use super::tokens::{random_b64, FormMode};
use super::{content_type_is, read_body, AppState, Embeddable, WebError};
use crate::domain::{
    AddressPolicy, LanguageTag, NewSigner, Signer, SignerField, MESSAGE_MAX_CHARS,
};
use crate::letters::{Campaign, RenderInput};
use crate::queue::{Confirmed, IntakeDetails, Source};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;

const COOKIE: &str = "missive_csrf";
/// With HTTPS the cookie takes the `__Host-` prefix: Secure, whole site, no Domain.
const COOKIE_HTTPS: &str = "__Host-missive_csrf";
/// At most this many form fields are read.
const MAX_FIELDS: usize = 40;
/// The longest referrer kept.
const REFERRER_MAX_CHARS: usize = 500;

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn accept_language(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
}

fn campaign_lang<'a>(
    campaign: &'a Campaign,
    query: Option<&str>,
    headers: &HeaderMap,
) -> &'a LanguageTag {
    negotiate(
        &campaign.languages,
        &campaign.default_language,
        query,
        accept_language(headers),
    )
}

/// A page: HTML, never cached (forms hold a token), embeddable when `embed`.
fn page(
    state: &AppState,
    status: StatusCode,
    template: &str,
    data: &Value,
    embed: bool,
) -> Response {
    match state.0.pages.render(template, data) {
        Ok(html) => {
            let mut r = (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response();
            if embed {
                r.extensions_mut().insert(Embeddable);
            }
            r
        }
        Err(e) => {
            WebError::Internal(anyhow::Error::new(e).context(format!("rendering {template}")))
                .into_response()
        }
    }
}

fn base_data(
    ui: &'static Ui,
    lang: &LanguageTag,
    title: &str,
    organisation: &str,
    embed: bool,
) -> Value {
    json!({
        "lang": lang.as_str(),
        "page_title": title,
        "organisation": organisation,
        "embed": embed,
        "ui": ui,
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// `GET /`: the campaigns, each in the visitor's language where it has it.
pub(super) async fn index(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let wanted = q.get("lang").map(String::as_str);
    let all: Vec<LanguageTag> = ["en", "fr", "es"]
        .iter()
        .filter_map(|l| LanguageTag::parse(l).ok())
        .collect();
    let ui_lang = negotiate(&all, &all[0], wanted, accept_language(&headers)).clone();
    let campaigns: Vec<Value> = state
        .registry()
        .iter()
        .map(|c| {
            let lang = campaign_lang(c, wanted, &headers);
            let text = c.text(lang);
            json!({"slug": c.slug.as_str(), "lang": lang.as_str(), "title": text.title, "summary": text.summary})
        })
        .collect();
    let ui = i18n::ui(&ui_lang);
    let org = state
        .registry()
        .iter()
        .next()
        .map(|c| c.organisation.name.clone())
        .unwrap_or_default();
    let data = merge(
        base_data(ui, &ui_lang, ui.campaigns, &org, false),
        json!({ "campaigns": campaigns }),
    );
    page(&state, StatusCode::OK, "index", &data, false)
}

/// What a supporter typed, kept to show the form again.
#[derive(Debug, Default)]
struct FormValues {
    first_name: String,
    last_name: String,
    email: String,
    postal_code: String,
    city: String,
    country: String,
    language: String,
    message: String,
    consent_letter: bool,
    consent_contact: bool,
    referrer: String,
}

impl FormValues {
    fn from_form(f: &HashMap<String, String>) -> FormValues {
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let ticked = |k: &str| f.get(k).is_some_and(|v| !v.is_empty());
        FormValues {
            first_name: get("first_name"),
            last_name: get("last_name"),
            email: get("email"),
            postal_code: get("postal_code"),
            city: get("city"),
            country: get("country"),
            language: get("language"),
            message: get("message"),
            consent_letter: ticked("consent_letter"),
            consent_contact: ticked("consent_contact"),
            referrer: clean_referrer(&get("ref")),
        }
    }

    fn signer(&self) -> NewSigner {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.to_owned());
        NewSigner {
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            email: self.email.clone(),
            city: opt(&self.city),
            postal_code: opt(&self.postal_code),
            country: opt(&self.country),
            language: opt(&self.language),
            message: opt(&self.message),
        }
    }

    fn value(&self, field: SignerField) -> &str {
        match field {
            SignerField::FirstName => &self.first_name,
            SignerField::LastName => &self.last_name,
            SignerField::Email => &self.email,
            SignerField::City => &self.city,
            SignerField::PostalCode => &self.postal_code,
            SignerField::Country => &self.country,
            SignerField::Language => &self.language,
            SignerField::Message => &self.message,
        }
    }
}

/// A referrer as kept: one line of printable characters, bounded.
pub(super) fn clean_referrer(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(REFERRER_MAX_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Field name -> the message shown beside it.
type FieldErrors = HashMap<&'static str, &'static str>;

struct FormContext<'a> {
    ui: &'static Ui,
    lang: &'a LanguageTag,
    campaign: &'a Campaign,
    values: &'a FormValues,
    errors: &'a FieldErrors,
    csrf: &'a str,
    general_error: Option<&'static str>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call per field reads best as a row"
)]
fn text_field(
    cx: &FormContext<'_>,
    name: &'static str,
    label: &str,
    kind: &str,
    autocomplete: &str,
    maxlength: usize,
    required: bool,
    hint: Option<&str>,
    value: &str,
) -> Value {
    let error = cx.errors.get(name).copied();
    let mut describedby = Vec::new();
    if hint.is_some() {
        describedby.push(format!("f-{name}-hint"));
    }
    if error.is_some() {
        describedby.push(format!("f-{name}-error"));
    }
    json!({
        "name": name, "label": label, "type": kind, "autocomplete": autocomplete,
        "maxlength": maxlength, "required": required, "hint": hint, "error": error,
        "value": value, "describedby": describedby.join(" "),
        "inputmode": if kind == "email" { Some("email") } else { None },
    })
}

fn form_data(cx: &FormContext<'_>) -> Value {
    let ui = cx.ui;
    let v = cx.values;
    let chosen = LanguageTag::parse(&v.language).ok();
    let selected = cx
        .campaign
        .page_language_for(chosen.as_ref().or(Some(cx.lang)));
    let labels: [(&'static str, &str); 10] = [
        ("first_name", ui.first_name),
        ("last_name", ui.last_name),
        ("email", ui.email),
        ("postal_code", ui.postal_code),
        ("city", ui.city),
        ("country", ui.country),
        ("language", ui.language),
        ("message", ui.message),
        ("consent_letter", ui.consent_letter),
        ("consent_contact", ui.consent_contact),
    ];
    let summary: Vec<Value> = labels
        .iter()
        .filter_map(|(name, label)| {
            cx.errors.get(name).map(|m| {
                let label = if *name == "consent_letter" {
                    ui.consents
                } else {
                    label
                };
                json!({"name": name, "label": label, "message": m})
            })
        })
        .collect();
    let message_error = cx.errors.get("message").copied();
    json!({
        "csrf": cx.csrf,
        "referrer": v.referrer,
        "general_error": cx.general_error,
        "errors": summary,
        "names": [
            text_field(cx, "first_name", ui.first_name, "text", "given-name", 100, true, None, &v.first_name),
            text_field(cx, "last_name", ui.last_name, "text", "family-name", 100, true, None, &v.last_name),
        ],
        "contact": [
            text_field(cx, "email", ui.email, "email", "email", 254, true, Some(ui.email_hint), &v.email),
        ],
        "place": [
            text_field(cx, "postal_code", ui.postal_code, "text", "postal-code", 20, false, None, &v.postal_code),
            text_field(cx, "city", ui.city, "text", "address-level2", 100, false, None, &v.city),
            text_field(cx, "country", ui.country, "text", "country-name", 100, false, None, &v.country),
        ],
        "language": {
            "label": ui.language,
            "error": cx.errors.get("language"),
            "options": cx.campaign.languages.iter().map(|l| json!({
                "code": l.as_str(), "name": i18n::native_name(l), "selected": l == selected,
            })).collect::<Vec<_>>(),
        },
        "message": {
            "label": ui.message, "hint": ui.message_hint, "error": message_error,
            "value": v.message, "maxlength": MESSAGE_MAX_CHARS,
            "describedby": if message_error.is_some() { "f-message-hint f-message-error f-message-count" } else { "f-message-hint f-message-count" },
        },
        "consent_letter": { "label": ui.consent_letter, "checked": v.consent_letter, "error": cx.errors.get("consent_letter") },
        "consent_contact": { "label": ui.consent_contact, "checked": v.consent_contact },
    })
}

/// The letter as a placeholder signer would send it to the first target, for the page.
fn preview(campaign: &Campaign, ui: &Ui, lang: &LanguageTag) -> Option<Value> {
    let target = campaign.targets.first()?;
    let signer = Signer::parse(
        &NewSigner {
            first_name: ui.placeholder_first.into(),
            last_name: ui.placeholder_last.into(),
            email: "supporter@example.org".into(),
            language: Some(lang.as_str().to_owned()),
            ..NewSigner::default()
        },
        AddressPolicy::AsciiOnly,
    )
    .ok()?;
    let today = chrono::Local::now().date_naive();
    match campaign.render(&RenderInput {
        signer: &signer,
        target,
        today,
    }) {
        Ok(letter) => Some(json!({
            "subject": letter.subject, "body": letter.body_text, "lang": letter.language.as_str(),
        })),
        Err(e) => {
            tracing::warn!(campaign = %campaign.slug, error = %e, "cannot render the letter preview");
            None
        }
    }
}

fn cookie_name(state: &AppState) -> &'static str {
    if state.0.secure_cookies {
        COOKIE_HTTPS
    } else {
        COOKIE
    }
}

fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| {
            v.len() == 22
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The form token for a page form, and the cookie to set when the browser has none yet.
fn page_token(
    state: &AppState,
    campaign: &Campaign,
    headers: &HeaderMap,
) -> (String, Option<HeaderValue>) {
    let name = cookie_name(state);
    let (nonce, set) = match read_cookie(headers, name) {
        Some(n) => (n.to_owned(), None),
        None => {
            let n = random_b64(16);
            let secure = if state.0.secure_cookies {
                "; Secure"
            } else {
                ""
            };
            let cookie =
                format!("{name}={n}; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400{secure}");
            (n, HeaderValue::from_str(&cookie).ok())
        }
    };
    let token = state
        .0
        .keys
        .form_token(campaign.slug.as_str(), FormMode::Page, &nonce, now_secs());
    (token, set)
}

fn embed_token(state: &AppState, campaign: &Campaign) -> String {
    state
        .0
        .keys
        .form_token(campaign.slug.as_str(), FormMode::Embed, "", now_secs())
}

/// Renders the action page or the embeddable form with `values` and `errors`.
#[allow(clippy::too_many_arguments)]
fn form_page(
    state: &AppState,
    status: StatusCode,
    campaign: &Campaign,
    lang: &LanguageTag,
    headers: &HeaderMap,
    values: &FormValues,
    errors: &FieldErrors,
    general_error: Option<&'static str>,
    embed: bool,
) -> Response {
    let ui = i18n::ui(lang);
    let (csrf, cookie) = if embed {
        (embed_token(state, campaign), None)
    } else {
        page_token(state, campaign, headers)
    };
    let cx = FormContext {
        ui,
        lang,
        campaign,
        values,
        errors,
        csrf: &csrf,
        general_error,
    };
    let text = campaign.text(lang);
    let mut data = merge(
        base_data(ui, lang, &text.title, &campaign.organisation.name, embed),
        json!({
            "slug": campaign.slug.as_str(),
            "title": text.title,
            "summary": text.summary,
            "form": form_data(&cx),
            "script": true,
        }),
    );
    if !embed {
        let languages: Vec<Value> = campaign
            .languages
            .iter()
            .map(
                |l| json!({"code": l.as_str(), "name": i18n::native_name(l), "current": l == lang}),
            )
            .collect();
        let targets: Vec<Value> = campaign
            .targets
            .iter()
            .map(|t| json!({"title": t.title, "institution": t.institution}))
            .collect();
        data = merge(
            data,
            json!({
                "languages": languages,
                "targets": targets,
                "page_html": campaign.page_markdown(lang).map(super::pages::markdown_to_html),
                "preview": preview(campaign, ui, lang),
            }),
        );
    }
    let mut response = page(
        state,
        status,
        if embed { "embed" } else { "action" },
        &data,
        embed,
    );
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// `GET /c/<slug>`: the action page.
pub(super) async fn action_page(
    state: State<AppState>,
    slug: Path<String>,
    q: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    blank_form(state, slug, q, headers, false)
}

/// `GET /c/<slug>/embed`: the form alone, for a partner's page to frame.
pub(super) async fn embed_page(
    state: State<AppState>,
    slug: Path<String>,
    q: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    blank_form(state, slug, q, headers, true)
}

/// The page with an empty form (keeping `?ref=`), whole or for embedding.
fn blank_form(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    embed: bool,
) -> Result<Response, WebError> {
    let campaign = state
        .registry()
        .get(&slug)
        .map_err(|_| WebError::NotFound)?;
    let lang = campaign_lang(&campaign, q.get("lang").map(String::as_str), &headers);
    let values = FormValues {
        referrer: clean_referrer(q.get("ref").map(String::as_str).unwrap_or_default()),
        ..FormValues::default()
    };
    Ok(form_page(
        &state,
        StatusCode::OK,
        &campaign,
        lang,
        &headers,
        &values,
        &HashMap::new(),
        None,
        embed,
    ))
}

/// Decodes `application/x-www-form-urlencoded` strictly: invalid UTF-8 is an error, never
/// silently replaced.
fn parse_urlencoded(body: &[u8]) -> Result<HashMap<String, String>, WebError> {
    let bad = WebError::BadRequest("the form data is not valid UTF-8");
    let decode = |s: &[u8]| -> Option<String> {
        let plus: Vec<u8> = s
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_encoding::percent_decode(&plus)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let mut out = HashMap::new();
    for pair in body
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .take(MAX_FIELDS)
    {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        match (decode(k), decode(v)) {
            (Some(k), Some(v)) => {
                out.insert(k, v);
            }
            _ => return Err(bad),
        }
    }
    Ok(out)
}

/// Whether the request comes from one of our own pages: browsers send `Origin` on every POST;
/// a request without one (an old browser, a script) is left to the form token.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) => origin.eq_ignore_ascii_case(&state.0.origin),
        Some(Err(_)) => false,
    }
}

fn thanks_url(campaign: &Campaign, lang: &LanguageTag, embed: bool) -> String {
    format!(
        "/c/{}/thanks?lang={}{}",
        campaign.slug,
        lang,
        if embed { "&embed=1" } else { "" }
    )
}

fn see_other(url: &str, embed: bool) -> Response {
    let mut r = Redirect::to(url).into_response();
    if embed {
        r.extensions_mut().insert(Embeddable);
    }
    r
}

/// `POST /c/<slug>/sign`: one signature from the form.
pub(super) async fn sign(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    request: Request,
) -> Result<Response, WebError> {
    let campaign = state
        .registry()
        .get(&slug)
        .map_err(|_| WebError::NotFound)?;
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if !content_type_is(headers, "application/x-www-form-urlencoded") {
        return Err(WebError::UnsupportedMediaType);
    }
    let body = read_body(headers, body)
        .await
        .map_err(|_| WebError::TooLarge)?;
    let form = parse_urlencoded(&body)?;
    let embed = form.get("embed").is_some_and(|v| v == "1");
    let lang = campaign_lang(
        &campaign,
        form.get("page_lang").map(String::as_str),
        headers,
    )
    .clone();
    let values = FormValues::from_form(&form);
    let ui = i18n::ui(&lang);

    if !same_origin(&state, headers) {
        return Err(WebError::CrossOrigin);
    }
    let token = form.get("csrf").map(String::as_str).unwrap_or_default();
    let cookie = read_cookie(headers, cookie_name(&state));
    if state
        .0
        .keys
        .check_form_token(token, campaign.slug.as_str(), cookie, now_secs())
        .is_err()
    {
        tracing::info!(campaign = %campaign.slug, "form refused: missing, stale or forged form token");
        let none = HashMap::new();
        return Ok(form_page(
            &state,
            StatusCode::FORBIDDEN,
            &campaign,
            &lang,
            headers,
            &values,
            &none,
            Some(ui.form_expired),
            embed,
        ));
    }
    if form.get("website").is_some_and(|v| !v.is_empty()) {
        tracing::info!(campaign = %campaign.slug, "honeypot filled: nothing stored");
        return Ok(see_other(&thanks_url(&campaign, &lang, embed), embed));
    }
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
    let ip = state.client_ip(headers, peer);
    if let Err(retry_after) = state.check_sign_rate(ip) {
        tracing::info!(campaign = %campaign.slug, "signing rate limit reached");
        return Err(WebError::RateLimited { retry_after });
    }

    let parsed = Signer::parse(&values.signer(), state.0.addresses);
    let mut errors: FieldErrors = HashMap::new();
    if let Err(e) = &parsed {
        for (field, why) in &e.fields {
            let empty = values.value(*field).trim().is_empty();
            errors.insert(field.name(), field_error(ui, *field, why, empty));
        }
    }
    if !values.consent_letter {
        errors.insert("consent_letter", ui.err_consent_letter);
    }
    let signer = match parsed {
        Ok(s) if errors.is_empty() => s,
        _ => {
            return Ok(form_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &campaign,
                &lang,
                headers,
                &values,
                &errors,
                None,
                embed,
            ))
        }
    };
    let details = IntakeDetails {
        consent_contact: values.consent_contact,
        referrer: (!values.referrer.is_empty()).then(|| values.referrer.clone()),
    };
    let accepted = signing::accept(&state, &campaign, signer, details, Source::Web).await?;
    tracing::info!(campaign = %campaign.slug, signature = accepted.public_id(), outcome = ?std::mem::discriminant(&accepted), "signature from the form");
    Ok(see_other(&thanks_url(&campaign, &lang, embed), embed))
}

/// `GET /c/<slug>/thanks`: the same page whether the signature was new, a repeat or a bot's.
pub(super) async fn thanks(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let campaign = state
        .registry()
        .get(&slug)
        .map_err(|_| WebError::NotFound)?;
    let lang = campaign_lang(&campaign, q.get("lang").map(String::as_str), &headers);
    let embed = q.get("embed").is_some_and(|v| v == "1");
    let ui = i18n::ui(lang);
    let data = merge(
        base_data(
            ui,
            lang,
            ui.thanks_title,
            &campaign.organisation.name,
            embed,
        ),
        json!({
            "heading": ui.thanks_title,
            "text": if campaign.confirm { ui.thanks_check_email } else { ui.thanks_signed },
            "back": format!("/c/{}{}?lang={}", campaign.slug, if embed { "/embed" } else { "" }, lang),
            "back_label": ui.back,
        }),
    );
    Ok(page(&state, StatusCode::OK, "message", &data, embed))
}

fn link_page(state: &AppState, found: &LinkState, confirmed_now: bool, token: &str) -> Response {
    let (campaign, signer) = match found {
        LinkState::Awaiting { campaign, signer } | LinkState::Confirmed { campaign, signer } => {
            (state.registry().get(campaign).ok(), Some(signer))
        }
        LinkState::Invalid => (None, None),
    };
    let wanted = signer
        .and_then(|s| s.language.as_deref())
        .and_then(|l| LanguageTag::parse(l).ok());
    let Some(campaign) = campaign else {
        let lang = LanguageTag::parse("en").expect("a valid tag");
        let ui = i18n::ui(&lang);
        let data = merge(
            base_data(ui, &lang, ui.link_invalid_title, "", false),
            json!({"heading": ui.link_invalid_title, "text": ui.link_invalid_text}),
        );
        return page(state, StatusCode::GONE, "message", &data, false);
    };
    let lang = campaign.page_language_for(wanted.as_ref());
    let ui = i18n::ui(lang);
    let back = format!("/c/{}?lang={}", campaign.slug, lang);
    let (title, text, action) = match found {
        LinkState::Awaiting { .. } if confirmed_now => {
            (ui.confirmed_title, ui.confirmed_text, None)
        }
        LinkState::Awaiting { .. } => (
            ui.confirm_title,
            ui.confirm_intro,
            Some(format!("/confirm/{token}")),
        ),
        _ => (ui.confirmed_title, ui.already_confirmed, None),
    };
    let data = merge(
        base_data(ui, lang, title, &campaign.organisation.name, false),
        json!({
            "heading": title, "text": text, "confirm_action": action, "button": ui.confirm_button,
            "back": back, "back_label": ui.back,
        }),
    );
    page(state, StatusCode::OK, "message", &data, false)
}

/// `GET /confirm/<token>`: a page with one button. Following the link changes nothing by
/// itself, so a mail scanner that opens links cannot confirm in the signer's place.
pub(super) async fn confirm_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    let found = signing::look_up(&state, &token).await?;
    Ok(link_page(&state, &found, false, &token))
}

/// `POST /confirm/<token>`: confirms, and queues the letters.
pub(super) async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    let (found, confirmed) = signing::confirm(&state, &token).await?;
    match &confirmed {
        Confirmed::Now { public_id, letters } => {
            tracing::info!(signature = %public_id, letters, "signature confirmed");
            Ok(link_page(&state, &found, true, &token))
        }
        // Confirmed by a concurrent request between the look-up and the update.
        Confirmed::Already { .. } => Ok(link_page(
            &state,
            &match found {
                LinkState::Awaiting { campaign, signer } => {
                    LinkState::Confirmed { campaign, signer }
                }
                other => other,
            },
            false,
            &token,
        )),
        Confirmed::NotFound => Ok(link_page(&state, &found, false, &token)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_strictly() {
        let f = parse_urlencoded(b"first_name=Jos%C3%A9&last_name=N%C3%BA%C3%B1ez+Z&x").unwrap();
        assert_eq!(f["first_name"], "José");
        assert_eq!(f["last_name"], "Núñez Z");
        assert_eq!(f["x"], "");
        assert!(parse_urlencoded(b"first_name=%FF").is_err());
    }

    #[test]
    fn referrers_lose_control_characters_and_length() {
        assert_eq!(clean_referrer(" a\r\nb "), "ab");
        assert_eq!(clean_referrer(&"x".repeat(900)).len(), REFERRER_MAX_CHARS);
    }
}
