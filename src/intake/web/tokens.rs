//! Signed tokens: the link in a confirmation email and the anti-forgery token in each form.
//! Both are HMAC-SHA256 over their payload with the server's secret (`MISSIVE_HTTP__SECRET`),
//! carry their own expiry, and are compared in constant time. Only a hash of a confirmation
//! token is stored, so the database alone cannot confirm anyone. The secret is held as a
//! `secrecy` value and exposed only to key the HMAC.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How long a form's anti-forgery token stays valid.
pub(crate) const FORM_TOKEN_SECONDS: i64 = 24 * 3600;

/// The server's signing key.
#[derive(Clone)]
pub(crate) struct Keys {
    secret: SecretSlice<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not one of ours (malformed or bad signature).
    Invalid,
    /// Ours, but too old.
    Expired,
}

/// What a form token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormMode {
    /// The action page: the token is bound to the `missive_csrf` cookie (double submit).
    Page,
    /// The embeddable form, shown in another site's frame where our cookies are not sent:
    /// bound to the campaign and the time only (the Origin check still applies).
    Embed,
}

impl FormMode {
    fn tag(self) -> &'static str {
        match self {
            FormMode::Page => "p",
            FormMode::Embed => "e",
        }
    }
}

/// The SHA-256 of `text`, hex.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compares two byte strings without leaking where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random value, URL-safe base64.
pub(crate) fn random_b64(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    B64.encode(buf)
}

impl Keys {
    /// Keys from the configured secret (`MISSIVE_HTTP__SECRET`).
    pub(crate) fn new(secret: &SecretString) -> Keys {
        Keys {
            secret: secret.expose_secret().as_bytes().to_vec().into(),
        }
    }

    /// Keys from 32 random bytes, for a server started without a secret.
    pub(crate) fn random() -> Keys {
        let bytes: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        Keys {
            secret: bytes.into(),
        }
    }

    fn mac(&self, purpose: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.secret.expose_secret())
            .expect("HMAC takes any key size");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// `b64(payload).b64(mac)`
    fn sign(&self, purpose: &str, payload: &[u8]) -> String {
        let tag = self.mac(purpose, payload).finalize().into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    fn verify(&self, purpose: &str, token: &str) -> Result<Vec<u8>, TokenError> {
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let payload = B64.decode(payload).map_err(|_| TokenError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Invalid)?;
        self.mac(purpose, &payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Invalid)?;
        Ok(payload)
    }

    /// A confirmation token valid until `expires_at` (Unix seconds): 16 random bytes and the
    /// expiry, signed.
    pub(crate) fn confirmation_token(&self, expires_at: i64) -> String {
        let mut payload: Vec<u8> = (0..16).map(|_| rand::random::<u8>()).collect();
        payload.extend_from_slice(&expires_at.to_be_bytes());
        self.sign("confirm", &payload)
    }

    /// Checks a confirmation token's signature and expiry.
    pub(crate) fn check_confirmation_token(&self, token: &str, now: i64) -> Result<(), TokenError> {
        if token.len() > 200 {
            return Err(TokenError::Invalid);
        }
        let payload = self.verify("confirm", token)?;
        let expires = payload
            .get(16..24)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .ok_or(TokenError::Invalid)?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// A form token for `campaign` issued at `now` (Unix seconds); `nonce` is the cookie value
    /// for `FormMode::Page`.
    pub(crate) fn form_token(
        &self,
        campaign: &str,
        mode: FormMode,
        nonce: &str,
        now: i64,
    ) -> String {
        let payload = format!("{}.{now}.{nonce}", mode.tag());
        self.sign(&format!("form:{campaign}"), payload.as_bytes())
    }

    /// Checks a form token: ours, for this campaign, not older than a day, and for page forms
    /// bound to the cookie the browser sent back.
    pub(crate) fn check_form_token(
        &self,
        token: &str,
        campaign: &str,
        cookie: Option<&str>,
        now: i64,
    ) -> Result<FormMode, TokenError> {
        if token.len() > 300 {
            return Err(TokenError::Invalid);
        }
        let payload = self.verify(&format!("form:{campaign}"), token)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Invalid)?;
        let mut parts = payload.splitn(3, '.');
        let (Some(mode), Some(issued), Some(nonce)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let issued: i64 = issued.parse().map_err(|_| TokenError::Invalid)?;
        if now - issued > FORM_TOKEN_SECONDS || issued - now > 300 {
            return Err(TokenError::Expired);
        }
        match mode {
            "e" => Ok(FormMode::Embed),
            "p" => match cookie {
                Some(c) if constant_time_eq(c.as_bytes(), nonce.as_bytes()) => Ok(FormMode::Page),
                _ => Err(TokenError::Invalid),
            },
            _ => Err(TokenError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_for(secret: &str) -> Keys {
        Keys::new(&SecretString::from(secret))
    }

    #[test]
    fn printing_the_keys_shows_no_secret() {
        let printed = format!("{:?}", keys_for("0123456789abcdef0123456789abcdef"));
        assert!(!printed.contains("0123456789"), "{printed}");
    }

    #[test]
    fn confirmation_tokens_expire_and_cannot_be_forged() {
        let keys = keys_for("0123456789abcdef0123456789abcdef");
        let token = keys.confirmation_token(1_000);
        assert_eq!(keys.check_confirmation_token(&token, 999), Ok(()));
        assert_eq!(
            keys.check_confirmation_token(&token, 1_000),
            Err(TokenError::Expired)
        );
        let other = keys_for("another secret, just as long as it");
        assert_eq!(
            other.check_confirmation_token(&token, 999),
            Err(TokenError::Invalid)
        );
        let mut tampered = token.clone();
        tampered.insert(3, 'x');
        assert!(keys.check_confirmation_token(&tampered, 999).is_err());
    }

    #[test]
    fn page_form_tokens_need_their_cookie_and_campaign() {
        let keys = keys_for("0123456789abcdef0123456789abcdef");
        let t = keys.form_token("a", FormMode::Page, "nonce1", 100);
        assert_eq!(
            keys.check_form_token(&t, "a", Some("nonce1"), 200),
            Ok(FormMode::Page)
        );
        assert!(keys.check_form_token(&t, "a", Some("nonce2"), 200).is_err());
        assert!(keys.check_form_token(&t, "a", None, 200).is_err());
        assert!(keys.check_form_token(&t, "b", Some("nonce1"), 200).is_err());
        assert_eq!(
            keys.check_form_token(&t, "a", Some("nonce1"), 100 + FORM_TOKEN_SECONDS + 1),
            Err(TokenError::Expired)
        );
        let e = keys.form_token("a", FormMode::Embed, "", 100);
        assert_eq!(
            keys.check_form_token(&e, "a", None, 200),
            Ok(FormMode::Embed)
        );
    }
}
