//! Accounts: registration, password checks and updates.
//!
//! Passwords are stored only as argon2id hashes. Checking one costs tens of milliseconds of CPU
//! on purpose, and Basic-authenticated clients send the password on every request, so a
//! successful check is remembered as a keyed hash of the password next to the stored hash it was
//! checked against: a changed password (on any instance) no longer matches the stored hash, and
//! the slow check runs again.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Registry, RegistryError, Result, read_json};
use crate::names::{Namespace, Username};
use crate::storage::keys;

/// Longest password accepted; hashing is linear in it, and no human password is longer.
const MAX_PASSWORD_LEN: usize = 256;
/// Longest e-mail address (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Most remembered password checks.
const CACHE_ENTRIES: usize = 4096;

/// What an authenticated caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May write anywhere, including `library/*`, and update any account.
    Admin,
    /// May write its own namespace only.
    User,
}

/// An authenticated account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: Username,
    pub role: Role,
}

impl Account {
    /// Whether this account may write to a namespace.
    pub fn may_write(&self, ns: &Namespace) -> bool {
        self.role == Role::Admin || (!ns.is_library() && self.name.as_str() == ns.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRecord {
    username: String,
    emails: Vec<String>,
    password_hash: String,
    created: i64,
}

/// Remembered successful password checks: user -> (stored hash, keyed hash of the password).
#[derive(Debug)]
pub(super) struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<String, (String, [u8; 32])>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            key: rand::random(),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl CredentialCache {
    fn tag(&self, password: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn hit(&self, user: &str, stored_hash: &str, password: &str) -> bool {
        let tag = self.tag(password);
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        matches!(entries.get(user), Some((h, t)) if h == stored_hash && bool::from(t.ct_eq(&tag)))
    }

    fn remember(&self, user: &str, stored_hash: &str, password: &str) {
        let tag = self.tag(password);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(user.to_string(), (stored_hash.to_string(), tag));
        }
    }
}

fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail; this keeps the call sites
    // free of `expect`.
    <Hmac<Sha256> as Mac>::new_from_slice(b"").unwrap_or_else(|_| unreachable!())
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= MAX_EMAIL_LEN
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && email.chars().all(|c| c.is_ascii_graphic())
}

fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < 5 {
        return Err(RegistryError::InvalidField(
            "Password must be at least 5 characters",
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(RegistryError::InvalidField("Password is too long"));
    }
    Ok(())
}

async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| RegistryError::InvalidField("Password could not be hashed"))?
    .map_err(|_| RegistryError::InvalidField("Password could not be hashed"))
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

impl Registry {
    fn is_admin_name(&self, name: &str) -> bool {
        matches!(&self.config().admin, Some((admin, _)) if admin.as_str() == name)
    }

    /// `POST /v1/users`: creates an account, active at once.
    pub async fn register(&self, username: &str, password: &str, email: &str) -> Result<()> {
        let name: Username = username.parse()?;
        if name.as_str() == "library" {
            return Err(RegistryError::InvalidField("This username is reserved"));
        }
        check_password(password)?;
        if !valid_email(email) {
            return Err(RegistryError::InvalidField("Invalid email address"));
        }
        if self.is_admin_name(name.as_str()) || self.account_record(&name).await?.is_some() {
            return Err(RegistryError::UserExists);
        }
        let record = UserRecord {
            username: name.to_string(),
            emails: vec![email.to_string()],
            password_hash: hash_password(password.to_string()).await?,
            created: super::now_unix(),
        };
        self.store_record(&name, &record).await
    }

    async fn account_record(&self, name: &Username) -> Result<Option<UserRecord>> {
        match read_json(self.store().as_ref(), &keys::user(name), || {
            RegistryError::UserNotFound
        })
        .await
        {
            Ok(r) => Ok(Some(r)),
            Err(RegistryError::UserNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn store_record(&self, name: &Username, record: &UserRecord) -> Result<()> {
        let body = serde_json::to_vec(record).map_err(|_| RegistryError::InvalidData)?;
        self.store()
            .put(&keys::user(name), Bytes::from(body))
            .await?;
        Ok(())
    }

    /// Checks a username and password; `Ok(None)` means wrong credentials.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<Option<Account>> {
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(None);
        }
        let Ok(name) = username.parse::<Username>() else {
            return Ok(None);
        };
        if let Some((admin, admin_password)) = &self.config().admin {
            if *admin == name {
                // Digests first: comparing the strings would stop early on a length
                // mismatch and so tell the password's length.
                let given = Sha256::digest(password.as_bytes());
                let expected = Sha256::digest(admin_password.as_bytes());
                let ok: bool = given.ct_eq(&expected).into();
                return Ok(ok.then_some(Account {
                    name,
                    role: Role::Admin,
                }));
            }
        }
        let Some(record) = self.account_record(&name).await? else {
            return Ok(None);
        };
        let cache = &self.inner.users;
        let ok = cache.hit(name.as_str(), &record.password_hash, password)
            || verify_password(password.to_string(), record.password_hash.clone()).await;
        if !ok {
            return Ok(None);
        }
        cache.remember(name.as_str(), &record.password_hash, password);
        Ok(Some(Account {
            name,
            role: Role::User,
        }))
    }

    /// `PUT /v1/users/<name>/`: adds an e-mail address and/or replaces the password.
    pub async fn update_user(
        &self,
        target: &Username,
        email: Option<&str>,
        password: Option<&str>,
    ) -> Result<()> {
        if self.is_admin_name(target.as_str()) {
            return Err(RegistryError::InvalidField(
                "The administrator account is configured at start-up",
            ));
        }
        let mut record = self
            .account_record(target)
            .await?
            .ok_or(RegistryError::UserNotFound)?;
        if let Some(email) = email {
            if !valid_email(email) {
                return Err(RegistryError::InvalidField("Invalid email address"));
            }
            if !record.emails.iter().any(|e| e == email) {
                record.emails.push(email.to_string());
            }
        }
        if let Some(password) = password {
            check_password(password)?;
            record.password_hash = hash_password(password.to_string()).await?;
        }
        self.store_record(target, &record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(valid_email("a@example.com"));
        for bad in [
            "", "a", "@x.io", "a@b", "a@.b", "a b@c.d", "a@b@c.d", "a@b.",
        ] {
            assert!(!valid_email(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_admins_write_library_and_users_their_own_namespace() {
        let alice = Account {
            name: "alice".parse().unwrap(),
            role: Role::User,
        };
        let admin = Account {
            name: "admin".parse().unwrap(),
            role: Role::Admin,
        };
        let ns = |s: &str| s.parse::<Namespace>().unwrap();
        assert!(alice.may_write(&ns("alice")));
        assert!(!alice.may_write(&ns("bobby")));
        assert!(!alice.may_write(&Namespace::library()));
        assert!(admin.may_write(&Namespace::library()));
        assert!(admin.may_write(&ns("bobby")));
    }
}
