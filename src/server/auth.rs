//! Who is calling, and what they may do: `Authorization` parsing, signed tokens, and the
//! permission rules of API.md section 9.
//!
//! Tokens are stateless: `signature=<hmac>,repository="ns/repo",access=<a>,expires=<unix>`,
//! where the HMAC-SHA256 covers repository, access and expiry under the server secret. Any
//! instance sharing the secret accepts any other's tokens, and nothing is stored per token.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use warp::http::HeaderMap;
use warp::http::header::AUTHORIZATION;

use super::error::ApiError;
use super::routes::AuthClass;
use super::state::Clock;
use crate::names::RepoRef;
use crate::registry::{Account, Registry};

/// Longest `Authorization` header considered; longer ones are wrong credentials.
const MAX_AUTH_HEADER: usize = 4096;

/// What a token allows on its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Delete,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Delete => "delete",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "delete" => Some(Access::Delete),
            _ => None,
        }
    }
}

/// A verified token's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub repo: RepoRef,
    pub access: Access,
    pub expires: i64,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User(Account),
    Token(Grant),
}

/// What an `Authorization` header says, before any check.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic {
        user: String,
        password: String,
    },
    Token(String),
    /// Unparseable, unknown scheme or over-long: counts as wrong credentials.
    Invalid,
}

/// Parses the `Authorization` header of a request.
pub fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Credentials::None;
    };
    if value.len() > MAX_AUTH_HEADER {
        return Credentials::Invalid;
    }
    let Ok(value) = value.to_str() else {
        return Credentials::Invalid;
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Credentials::Invalid;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return Credentials::Invalid;
        };
        match decoded.split_once(':') {
            Some((user, password)) => Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            },
            None => Credentials::Invalid,
        }
    } else if scheme.eq_ignore_ascii_case("token") {
        // The reference put "Token " inside X-Docker-Token, so clients may send it twice.
        let rest = strip_scheme(rest, "token").unwrap_or(rest);
        if rest.is_empty() {
            // Docker 1.3 sends an empty token when the index gave none.
            Credentials::None
        } else {
            Credentials::Token(rest.to_string())
        }
    } else {
        Credentials::Invalid
    }
}

fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let (head, rest) = s.split_once(' ')?;
    head.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Issues and verifies tokens with the server secret.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
    ttl_secs: i64,
    /// The time requests' tokens are issued at and checked against.
    clock: Clock,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(secret: &[u8], ttl_secs: i64) -> Self {
        TokenSigner {
            key: secret.to_vec(),
            ttl_secs,
            clock: Clock::system(),
        }
    }

    /// The same signer, telling the time by `clock`.
    pub fn with_clock(self, clock: Clock) -> Self {
        TokenSigner { clock, ..self }
    }

    /// The present by this signer's clock, in seconds since the epoch.
    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    fn mac(&self, repo: &str, access: &str, expires: i64) -> Vec<u8> {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return Vec::new();
        };
        mac.update(format!("{repo}\n{access}\n{expires}").as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A token for `repo` with `access`, valid for the configured lifetime from `now`.
    pub fn issue(&self, repo: &RepoRef, access: Access, now: i64) -> String {
        let expires = now + self.ttl_secs;
        let repo = repo.to_string();
        let sig = hex::encode(self.mac(&repo, access.as_str(), expires));
        format!(
            "signature={sig},repository=\"{repo}\",access={},expires={expires}",
            access.as_str()
        )
    }

    /// Checks a token's signature and expiry; `None` for anything forged, expired or garbled.
    pub fn verify(&self, token: &str, now: i64) -> Option<Grant> {
        // Several X-Docker-Token headers are joined by the client with ","; the fields of one
        // token are too, so parse key=value pairs and take the first of each.
        let (mut sig, mut repo, mut access, mut expires) = (None, None, None, None);
        for field in token.split(',') {
            let (k, v) = field.trim().split_once('=')?;
            let v = v.trim();
            let slot = match k.trim() {
                "signature" => &mut sig,
                "repository" => &mut repo,
                "access" => &mut access,
                "expires" => &mut expires,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v);
            }
        }
        // Only the exact form `issue` writes is accepted, so no altered token verifies, not even
        // one that means the same (upper-case hex, a dropped quote, `+` or leading zeros).
        let repo = repo?.strip_prefix('"')?.strip_suffix('"')?;
        let (sig, access, expires) = (sig?, access?, expires?);
        let canonical_number = |s: &str| {
            s == "0"
                || (!s.starts_with('0') && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        };
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical_number(expires) || !lower_hex(sig) {
            return None;
        }
        let expires: i64 = expires.parse().ok()?;
        let expected = self.mac(repo, access, expires);
        let given = hex::decode(sig).ok()?;
        if expected.is_empty() || !bool::from(given.ct_eq(&expected)) || expires < now {
            return None;
        }
        Some(Grant {
            repo: RepoRef::parse_full(repo).ok()?,
            access: Access::parse(access)?,
            expires,
        })
    }
}

/// Works out who is calling, for every endpoint, before its handler runs (the dispatcher calls
/// this; handlers receive the [`Caller`] and decide only what it may do). Wrong credentials of
/// any kind are a 401 with the challenge of `class`; no credentials is anonymous (whether that
/// is enough is the handler's decision).
pub async fn resolve_caller(
    registry: &Registry,
    signer: &TokenSigner,
    headers: &HeaderMap,
    class: AuthClass,
) -> Result<Caller, ApiError> {
    let index = class.index();
    match credentials(headers) {
        // `PUT .../auth` asks whether a token is valid: one that is not is its answer (403).
        Credentials::Token(token) if class == AuthClass::TokenCheck => {
            Ok(match signer.verify(&token, signer.now()) {
                Some(grant) => Caller::Token(grant),
                None => Caller::Anonymous,
            })
        }
        Credentials::None => Ok(Caller::Anonymous),
        Credentials::Basic { user, password } => {
            match registry.authenticate(&user, &password).await? {
                Some(account) => Ok(Caller::User(account)),
                None => Err(ApiError::Unauthorized { index }),
            }
        }
        Credentials::Token(token) => match signer.verify(&token, signer.now()) {
            Some(grant) => Ok(Caller::Token(grant)),
            None => Err(ApiError::Unauthorized { index }),
        },
        Credentials::Invalid => Err(ApiError::Unauthorized { index }),
    }
}

impl Caller {
    /// Whether the caller may perform `access` on `repo`. Reads are public.
    pub fn authorize_repo(
        &self,
        repo: &RepoRef,
        access: Access,
        index: bool,
    ) -> Result<(), ApiError> {
        match (self, access) {
            (_, Access::Read) => Ok(()),
            (Caller::Anonymous, _) => Err(ApiError::Unauthorized { index }),
            (Caller::User(account), _) => {
                if account.may_write(&repo.namespace) {
                    Ok(())
                } else {
                    Err(ApiError::Forbidden("Access denied"))
                }
            }
            (Caller::Token(grant), _) => {
                if grant.repo == *repo && grant.access == access {
                    Ok(())
                } else {
                    Err(ApiError::Forbidden("Access denied"))
                }
            }
        }
    }

    /// Whether the caller may push image data (images are global, not per repository): any
    /// account, or a write token for any repository.
    pub fn authorize_image_write(&self) -> Result<(), ApiError> {
        match self {
            Caller::Anonymous => Err(ApiError::Unauthorized { index: false }),
            Caller::User(_) => Ok(()),
            Caller::Token(grant) if grant.access == Access::Write => Ok(()),
            Caller::Token(_) => Err(ApiError::Forbidden("Access denied")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn parses_basic_and_token_and_refuses_the_rest() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        assert_eq!(
            credentials(&headers(&format!("Basic {b64}"))),
            Credentials::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(
            credentials(&headers("Token Token signature=x")),
            Credentials::Token("signature=x".into())
        );
        assert_eq!(credentials(&headers("Token ")), Credentials::None);
        for bad in [
            "Bearer abc",
            "Digest x",
            "Basic !!!",
            "Basic",
            "Basic YWxpY2U=",
        ] {
            assert_eq!(credentials(&headers(bad)), Credentials::Invalid, "{bad}");
        }
        assert_eq!(credentials(&HeaderMap::new()), Credentials::None);
    }

    #[test]
    fn tokens_verify_only_untampered_and_unexpired() {
        let signer = TokenSigner::new(b"secret", 3600);
        let repo = RepoRef::parse_full("alice/app").unwrap();
        let token = signer.issue(&repo, Access::Write, 1000);
        let grant = signer.verify(&token, 1000).unwrap();
        assert_eq!(grant.repo, repo);
        assert_eq!(grant.access, Access::Write);
        assert!(signer.verify(&token, 1000 + 3601).is_none(), "expired");
        let tampered = token.replace("alice/app", "bobby/app");
        assert!(signer.verify(&tampered, 1000).is_none());
        let upgraded = token.replace("access=write", "access=delete");
        assert!(signer.verify(&upgraded, 1000).is_none());
        let other = TokenSigner::new(b"other", 3600);
        assert!(other.verify(&token, 1000).is_none());
        assert!(signer.verify("garbage", 1000).is_none());
    }

    #[test]
    fn token_scope_decides_writes() {
        let signer = TokenSigner::new(b"k", 60);
        let a = RepoRef::parse_full("alice/a").unwrap();
        let b = RepoRef::parse_full("alice/b").unwrap();
        let grant = signer
            .verify(&signer.issue(&a, Access::Write, 0), 0)
            .unwrap();
        let caller = Caller::Token(grant);
        assert!(caller.authorize_repo(&a, Access::Write, false).is_ok());
        assert!(matches!(
            caller.authorize_repo(&b, Access::Write, false),
            Err(ApiError::Forbidden(_))
        ));
        assert!(caller.authorize_repo(&b, Access::Read, false).is_ok());
        let read = Caller::Token(
            signer
                .verify(&signer.issue(&a, Access::Read, 0), 0)
                .unwrap(),
        );
        assert!(read.authorize_image_write().is_err());
        assert!(matches!(
            Caller::Anonymous.authorize_repo(&a, Access::Write, false),
            Err(ApiError::Unauthorized { .. })
        ));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use warp::http::HeaderValue;

        fn repo_ref() -> impl Strategy<Value = RepoRef> {
            ("[a-z0-9_]{4,12}", "[a-z0-9][a-z0-9._\\-]{0,12}")
                .prop_filter_map("valid names", |(ns, repo)| {
                    RepoRef::parse_full(&format!("{ns}/{repo}")).ok()
                })
        }

        fn access() -> impl Strategy<Value = Access> {
            prop_oneof![
                Just(Access::Read),
                Just(Access::Write),
                Just(Access::Delete)
            ]
        }

        /// Header values from a grammar of schemes and payloads, plus arbitrary bytes.
        fn auth_value() -> impl Strategy<Value = Vec<u8>> {
            let scheme = prop_oneof![
                Just("Basic "),
                Just("basic "),
                Just("BASIC  "),
                Just("Token "),
                Just("Token Token "),
                Just("token "),
                Just("Bearer "),
                Just("Digest "),
                Just(""),
                Just(" "),
            ];
            let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
            let payload = prop_oneof![
                "[A-Za-z0-9+/=]{0,40}",
                any::<String>().prop_map(b64),
                ("[a-z0-9_]{0,12}", "[ -~]{0,20}").prop_map(move |(u, p)| b64(format!("{u}:{p}"))),
                "[ -~]{0,60}",
                "signature=[0-9a-f]{0,64},repository=\"[a-z/.]{0,20}\",access=[a-z]{0,6},expires=-?[0-9]{0,20}",
            ];
            prop_oneof![
                4 => (scheme, payload).prop_map(|(s, p)| format!("{s}{p}").into_bytes()),
                1 => proptest::collection::vec(any::<u8>(), 0..80),
                1 => (1usize..3).prop_map(|k| format!("Basic {}", "QUFB".repeat(k * 700)).into_bytes()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn tokens_round_trip(
                repo in repo_ref(),
                access in access(),
                ttl in 1i64..100_000,
                now in 0i64..4_000_000_000,
                secret in proptest::collection::vec(any::<u8>(), 1..64),
            ) {
                let signer = TokenSigner::new(&secret, ttl);
                let token = signer.issue(&repo, access, now);
                let want = Grant { repo: repo.clone(), access, expires: now + ttl };
                prop_assert_eq!(signer.verify(&token, now), Some(want.clone()));
                prop_assert_eq!(signer.verify(&token, now + ttl), Some(want));
                prop_assert_eq!(signer.verify(&token, now + ttl + 1), None, "expired");
                // The header a client sends back parses to the same token, with or without the
                // reference's doubled prefix.
                for sent in [format!("Token {token}"), format!("Token Token {token}")] {
                    let mut h = HeaderMap::new();
                    h.insert(AUTHORIZATION, HeaderValue::from_str(&sent).unwrap());
                    prop_assert_eq!(credentials(&h), Credentials::Token(token.clone()));
                }
            }

            #[test]
            fn any_changed_character_is_refused(
                repo in repo_ref(),
                access in access(),
                pos in any::<proptest::sample::Index>(),
                with in prop_oneof![any::<char>(), proptest::char::range(' ', '~')],
            ) {
                let signer = TokenSigner::new(b"property-secret", 3600);
                let token = signer.issue(&repo, access, 1000);
                let mut chars: Vec<char> = token.chars().collect();
                let i = pos.index(chars.len());
                prop_assume!(chars[i] != with);
                chars[i] = with;
                let tampered: String = chars.into_iter().collect();
                prop_assert_eq!(signer.verify(&tampered, 1000), None, "{} accepted", tampered);
            }

            #[test]
            fn changed_claims_are_refused(
                repo in repo_ref(),
                other in repo_ref(),
                access in access(),
                other_access in access(),
                shift in 1i64..1_000_000,
            ) {
                let signer = TokenSigner::new(b"property-secret", 3600);
                let token = signer.issue(&repo, access, 1000);
                let expires = 1000 + 3600;
                if other != repo {
                    let t = token.replace(&format!("\"{repo}\""), &format!("\"{other}\""));
                    prop_assert_eq!(signer.verify(&t, 1000), None);
                }
                if other_access != access {
                    let t = token.replace(
                        &format!("access={}", access.as_str()),
                        &format!("access={}", other_access.as_str()),
                    );
                    prop_assert_eq!(signer.verify(&t, 1000), None);
                }
                let later = token.replace(&format!("expires={expires}"), &format!("expires={}", expires + shift));
                prop_assert_eq!(signer.verify(&later, 1000), None);
                // A token signed under another secret is refused too.
                let foreign = TokenSigner::new(b"another-secret", 3600).issue(&repo, access, 1000);
                prop_assert_eq!(signer.verify(&foreign, 1000), None);
            }

            #[test]
            fn header_parsing_never_panics(value in auth_value()) {
                let Ok(value) = HeaderValue::from_bytes(&value) else {
                    return Ok(());
                };
                let mut h = HeaderMap::new();
                h.insert(AUTHORIZATION, value.clone());
                match credentials(&h) {
                    Credentials::Basic { user, password } => {
                        prop_assert!(value.len() <= MAX_AUTH_HEADER);
                        prop_assert!(!user.contains(':'));
                        let _ = password;
                    }
                    Credentials::Token(t) => prop_assert!(!t.is_empty()),
                    Credentials::None | Credentials::Invalid => {}
                }
                let signer = TokenSigner::new(b"k", 60);
                let _ = signer.verify(&String::from_utf8_lossy(value.as_bytes()), 0);
            }
        }
    }
}
