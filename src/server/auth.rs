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
        }
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
            let v = v.trim().trim_matches('"');
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
        let (sig, repo, access, expires) = (sig?, repo?, access?, expires?);
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

/// Works out who is calling. Wrong credentials of any kind are a 401; no credentials is
/// anonymous (whether that is enough is decided by the route).
pub async fn authenticate(
    registry: &Registry,
    signer: &TokenSigner,
    headers: &HeaderMap,
    index: bool,
) -> Result<Caller, ApiError> {
    match credentials(headers) {
        Credentials::None => Ok(Caller::Anonymous),
        Credentials::Basic { user, password } => {
            match registry.authenticate(&user, &password).await? {
                Some(account) => Ok(Caller::User(account)),
                None => Err(ApiError::Unauthorized { index }),
            }
        }
        Credentials::Token(token) => match signer.verify(&token, crate::server::now_unix()) {
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
}
