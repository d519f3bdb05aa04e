//! The JSON API for organisations that run their own forms:
//! `POST /api/v1/campaigns/<slug>/signatures` records a signature (person fields in the spirit
//! of OSDI's record-signature helper) and `GET /api/v1/signatures/<id>` shows its letters.
//!
//! Calls carry `Authorization: Bearer <key>` with a key from `MISSIVE_HTTP__API_KEYS`. A POST
//! with an `Idempotency-Key` is answered once: the same key and body get the stored response
//! again, the same key with another body is refused. Errors are JSON; validation errors name
//! each field by its path in the request.

use super::signing::{self, Accepted};
use super::tokens::{constant_time_eq, sha256_hex};
use super::{content_type_is, read_body, sha2_bytes, AppState};
use crate::domain::{NewSigner, Signer, SignerField};
use crate::queue::{IntakeDetails, Source, StoredResponse};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

/// The longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_MAX: usize = 255;

/// What can go wrong on the API, as the caller is told.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    #[error("no such campaign")]
    UnknownCampaign,
    #[error("no such signature")]
    UnknownSignature,
    #[error("the request body is larger than 64 KiB")]
    TooLarge,
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    BadIdempotencyKey,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error("invalid signature")]
    Invalid(Vec<(String, String)>),
    #[error("too many requests; retry later")]
    RateLimited { retry_after: u64 },
    #[error("an internal error occurred")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnknownCampaign | ApiError::UnknownSignature => StatusCode::NOT_FOUND,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MalformedJson(_) | ApiError::BadIdempotencyKey => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyMismatch | ApiError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(e) if super::database_unavailable(e) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> Value {
        match self {
            ApiError::Invalid(fields) => json!({
                "error": self.to_string(),
                "fields": fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<serde_json::Map<_, _>>(),
            }),
            ApiError::Internal(e) if super::database_unavailable(e) => {
                json!({ "error": super::UNAVAILABLE, "retry": true })
            }
            _ => json!({ "error": self.to_string() }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unavailable = matches!(&self, ApiError::Internal(e) if super::database_unavailable(e));
        if let ApiError::Internal(e) = &self {
            if unavailable {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the database did not answer an API call"
                );
            } else {
                tracing::error!(error = format!("{e:#}"), "internal error in the API");
            }
        }
        let mut response = json_response(self.status(), &self.body().to_string());
        match self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ if unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(5));
            }
            _ => {}
        }
        response
    }
}

fn json_response(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_owned(),
    )
        .into_response()
}

/// The caller's key: its index (for its rate limit) and its hash (for idempotency keys).
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(usize, String), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let hash = sha2_bytes(presented.as_bytes());
    // Compare with every key, so the time taken says nothing about which one matched.
    let mut found = None;
    for (i, key) in state.0.api_keys.iter().enumerate() {
        if constant_time_eq(key, &hash) && found.is_none() {
            found = Some(i);
        }
    }
    let i = found.ok_or(ApiError::Unauthorized)?;
    Ok((i, hex::encode(hash)))
}

/// `POST /api/v1/campaigns/<slug>/signatures`, as OSDI's record-signature helper has it.
#[derive(Debug, Deserialize)]
struct SignatureRequest {
    person: Person,
    /// The signer's personal message, added to each letter.
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    consents: Consents,
    #[serde(default)]
    referrer_data: Option<ReferrerData>,
}

#[derive(Debug, Default, Deserialize)]
struct Person {
    #[serde(default)]
    given_name: String,
    #[serde(default)]
    family_name: String,
    #[serde(default)]
    email_addresses: Vec<EmailAddressIn>,
    #[serde(default)]
    postal_addresses: Vec<PostalAddressIn>,
    #[serde(default)]
    languages_spoken: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct EmailAddressIn {
    #[serde(default)]
    address: String,
    #[serde(default)]
    primary: bool,
}

#[derive(Debug, Default, Deserialize)]
struct PostalAddressIn {
    #[serde(default)]
    postal_code: Option<String>,
    #[serde(default)]
    locality: Option<String>,
    #[serde(default)]
    country: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Consents {
    /// The signer agreed that letters be sent in their name (required).
    #[serde(default)]
    send_letters: bool,
    /// The signer expressly agreed to hear from the organisation again.
    #[serde(default)]
    contact: bool,
}

#[derive(Debug, Default, Deserialize)]
struct ReferrerData {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    website: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// Where each signer field sits in the request, for error messages.
fn field_path(field: SignerField, email_index: usize) -> String {
    match field {
        SignerField::FirstName => "person.given_name".into(),
        SignerField::LastName => "person.family_name".into(),
        SignerField::Email => format!("person.email_addresses[{email_index}].address"),
        SignerField::City => "person.postal_addresses[0].locality".into(),
        SignerField::PostalCode => "person.postal_addresses[0].postal_code".into(),
        SignerField::Country => "person.postal_addresses[0].country".into(),
        SignerField::Language => "person.languages_spoken[0]".into(),
        SignerField::Message => "comment".into(),
    }
}

fn to_signer(req: &SignatureRequest) -> (NewSigner, usize) {
    let p = &req.person;
    let email_index = p
        .email_addresses
        .iter()
        .position(|e| e.primary)
        .unwrap_or(0);
    let address = p.postal_addresses.first();
    (
        NewSigner {
            first_name: p.given_name.clone(),
            last_name: p.family_name.clone(),
            email: p
                .email_addresses
                .get(email_index)
                .map(|e| e.address.clone())
                .unwrap_or_default(),
            city: address.and_then(|a| a.locality.clone()),
            postal_code: address.and_then(|a| a.postal_code.clone()),
            country: address.and_then(|a| a.country.clone()),
            language: p.languages_spoken.first().cloned(),
            message: req.comment.clone(),
        },
        email_index,
    )
}

/// The idempotency key of a request, if it has one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().map_err(|_| ApiError::BadIdempotencyKey)?;
    let ok = !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_MAX
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Some(key.to_owned()))
    } else {
        Err(ApiError::BadIdempotencyKey)
    }
}

/// `POST /api/v1/campaigns/<slug>/signatures`
pub(super) async fn record_signature(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let (key_index, key_hash) = authenticate(&state, headers)?;
    let campaign = state
        .registry()
        .get(&slug)
        .map_err(|_| ApiError::UnknownCampaign)?;
    if let Err(not_until) = state.0.api_limiter.check_key(&key_index) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(ApiError::RateLimited {
            retry_after: wait.as_secs().max(1),
        });
    }
    if !content_type_is(headers, "application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = read_body(headers, body)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    let idempotency = idempotency_key(headers)?;
    let request_hash = sha256_hex(&format!(
        "{}\n{}",
        campaign.slug,
        String::from_utf8_lossy(&body)
    ));
    if let Some(key) = &idempotency {
        if let Some(stored) = state
            .queue()
            .idempotent_response(&key_hash, key)
            .await
            .map_err(anyhow::Error::from)?
        {
            return replay(stored, &request_hash);
        }
    }

    let outcome = signature_outcome(&state, &campaign, &body).await;
    let (status, body) = match outcome {
        Ok((status, body)) => (status, body),
        Err(e @ ApiError::Invalid(_)) => (e.status(), e.body()),
        Err(e) => return Err(e),
    };
    let body = body.to_string();
    let Some(key) = idempotency else {
        return Ok(json_response(status, &body));
    };
    let stored = state
        .queue()
        .store_idempotent_response(
            &key_hash,
            &key,
            &StoredResponse {
                request_hash: request_hash.clone(),
                status: status.as_u16(),
                body,
            },
            state.queue().now(),
        )
        .await
        .map_err(anyhow::Error::from)?;
    // A concurrent request with the same key may have stored its answer first.
    replay(stored, &request_hash)
}

fn replay(stored: StoredResponse, request_hash: &str) -> Result<Response, ApiError> {
    if !constant_time_eq(stored.request_hash.as_bytes(), request_hash.as_bytes()) {
        return Err(ApiError::IdempotencyMismatch);
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    Ok(json_response(status, &stored.body))
}

async fn signature_outcome(
    state: &AppState,
    campaign: &crate::letters::Campaign,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let req: SignatureRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let (input, email_index) = to_signer(&req);
    let parsed = Signer::parse(&input, state.0.addresses);
    let mut fields: Vec<(String, String)> = Vec::new();
    if let Err(e) = &parsed {
        for (field, why) in &e.fields {
            fields.push((field_path(*field, email_index), why.reason().to_owned()));
        }
    }
    if !req.consents.send_letters {
        fields.push((
            "consents.send_letters".into(),
            "must be true: the signer agreed that the letters be sent in their name".into(),
        ));
    }
    let signer = match parsed {
        Ok(s) if fields.is_empty() => s,
        _ => return Err(ApiError::Invalid(fields)),
    };
    let referrer = req.referrer_data.as_ref().and_then(|r| {
        [&r.url, &r.website, &r.source]
            .into_iter()
            .flatten()
            .map(|s| super::form::clean_referrer(s))
            .find(|s| !s.is_empty())
    });
    let details = IntakeDetails {
        consent_contact: req.consents.contact,
        referrer,
    };
    let accepted = signing::accept(state, campaign, signer, details, Source::Api).await?;
    let (status, label, letters) = match &accepted {
        Accepted::Created { letters, .. } => (StatusCode::CREATED, "created", *letters),
        Accepted::Duplicate { .. } => (StatusCode::OK, "duplicate", 0),
        Accepted::Awaiting { resent: false, .. } => {
            (StatusCode::CREATED, "awaiting_confirmation", 0)
        }
        Accepted::Awaiting { resent: true, .. } => (StatusCode::OK, "awaiting_confirmation", 0),
    };
    let id = accepted.public_id();
    tracing::info!(campaign = %campaign.slug, signature = id, status = label, "signature from the API");
    Ok((
        status,
        json!({
            "id": id,
            "status": label,
            "letters_queued": letters,
            "_links": { "self": { "href": format!("{}/api/v1/signatures/{id}", state.0.base_url) } },
        }),
    ))
}

/// `GET /api/v1/signatures/<id>`: the signature's letters (and confirmation emails) and
/// their states.
pub(super) async fn signature(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticate(&state, &headers)?;
    if id.len() > 64 {
        return Err(ApiError::UnknownSignature);
    }
    let letters = state
        .queue()
        .signature_letters(&id)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or(ApiError::UnknownSignature)?;
    let body = json!({ "id": id, "letters": letters });
    Ok(json_response(StatusCode::OK, &body.to_string()))
}
