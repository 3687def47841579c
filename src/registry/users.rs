//! Accounts: registration, password checks and updates.
//!
//! Passwords are stored only as argon2id hashes. Hashing or checking one costs tens of
//! milliseconds of CPU and 19 MiB on purpose, so it runs on a bounded pool ([`HashPool`], about
//! one per core); and Basic-authenticated clients send the password on every request, so a
//! successful check is remembered for a minute under a keyed hash of user and password, next to
//! the stored hash it was checked against: a changed password (on any instance) no longer matches
//! the stored hash, and the slow check runs again.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
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
/// Most argon2 threads, whatever the number of cores.
const MAX_HASH_THREADS: usize = 4;
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

/// How long a successful password check is remembered. Short: it only has to cover one push
/// or pull (dozens of requests with the same Basic credentials), and a password changed on
/// another instance sharing the store is caught by the stored-hash comparison anyway.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// A remembered successful check: whose, against which stored hash, and when.
#[derive(Debug)]
struct Remembered {
    user: String,
    stored_hash: String,
    at: Instant,
}

/// Remembered successful password checks, keyed by an HMAC (under a per-process random key) of
/// user and password: neither the password nor an unkeyed hash of it is ever kept. An entry
/// counts only while it is younger than [`CACHE_TTL`] and the account's stored hash is the one
/// it was checked against; a password change through this instance drops the user's entries.
#[derive(Debug)]
pub(super) struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<lru::LruCache<[u8; 32], Remembered>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        let cap = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        CredentialCache {
            key: rand::random(),
            entries: Mutex::new(lru::LruCache::new(cap)),
        }
    }
}

impl CredentialCache {
    fn tag(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac());
        // The length first, so that no other split of the same bytes gives the same tag.
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn hit(&self, user: &str, stored_hash: &str, password: &str, now: Instant) -> bool {
        let tag = self.tag(user, password);
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let fresh = match entries.peek(&tag) {
            Some(r) => {
                r.user == user
                    && r.stored_hash == stored_hash
                    && now.saturating_duration_since(r.at) < CACHE_TTL
            }
            None => return false,
        };
        if fresh {
            // Refreshes its place in the LRU order, not its age.
            entries.promote(&tag);
        } else {
            entries.pop(&tag);
        }
        fresh
    }

    fn remember(&self, user: &str, stored_hash: &str, password: &str, now: Instant) {
        let tag = self.tag(user, password);
        if let Ok(mut entries) = self.entries.lock() {
            entries.put(
                tag,
                Remembered {
                    user: user.to_string(),
                    stored_hash: stored_hash.to_string(),
                    at: now,
                },
            );
        }
    }

    /// Forgets every remembered check of `user` (its password changed).
    fn forget_user(&self, user: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            let stale: Vec<[u8; 32]> = entries
                .iter()
                .filter(|(_, r)| r.user == user)
                .map(|(k, _)| *k)
                .collect();
            for k in stale {
                entries.pop(&k);
            }
        }
    }
}

/// The pool argon2 runs on: a few threads of its own (one per core, at most 4), fed through a short
/// queue. argon2id with the default parameters takes 19 MiB and tens of milliseconds of CPU per
/// check, on purpose; run once per request on tokio's blocking pool (up to 512 threads), a flood
/// of 1,000 wrong passwords took 13 GiB and starved every other request of CPU. The threads are
/// the pool's own, not a semaphore in front of `spawn_blocking`, because the allocator keeps
/// freed argon2 blocks in per-thread arenas: spread over the blocking pool's changing threads,
/// even two checks at a time left half a gigabyte resident.
///
/// Callers beyond the pool wait, and are not refused: each waiter holds only its small future
/// and its connection, so the connection cap (4,096) bounds the queue and its memory, while the
/// 19 MiB is only taken by the few checks running. This is what the CNCF distribution server and
/// zot do too (their htpasswd checks run in the request, bounded only by connections, with no
/// 503): a 503 beyond a queue depth would fail honest logins stuck behind a flood (Docker 1.x
/// does not retry a login), and honest clients rarely queue at all, since a push or pull checks
/// its password once and then hits the cache of successful checks.
#[derive(Debug)]
pub(super) struct HashPool {
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// Password verifications run, for tests that check which answers cost one.
    verifications: std::sync::atomic::AtomicU64,
}

type Job = Box<dyn FnOnce() + Send>;

impl Default for HashPool {
    fn default() -> Self {
        // One per core, up to 4: each thread keeps its 19 MiB of argon2 memory, and honest
        // clients need few checks (the cache answers the rest of a push or pull).
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Self::new(cores.min(MAX_HASH_THREADS))
    }
}

impl HashPool {
    /// `threads` workers; they end when the pool is dropped.
    fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("regfs-argon2-{i}"))
                .spawn(move || {
                    loop {
                        // One worker waits for the next job at a time; the others wait for it.
                        let job = match rx.lock() {
                            Ok(mut rx) => rx.blocking_recv(),
                            Err(_) => None,
                        };
                        match job {
                            Some(job) => job(),
                            None => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-hashing thread");
            }
        }
        HashPool {
            jobs: tx,
            verifications: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs `work` on one of the pool's threads, waiting for a free one; `None` if the pool is
    /// gone. A request dropped meanwhile leaves its check to finish, still counted by the pool.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
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

async fn hash_password(pool: &HashPool, password: String) -> Result<String> {
    pool.run(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .ok_or(RegistryError::InvalidField("Password could not be hashed"))?
    .map_err(|_| RegistryError::InvalidField("Password could not be hashed"))
}

async fn verify_password(pool: &HashPool, password: String, hash: String) -> bool {
    pool.verifications
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    pool.run(move || {
        ARGON2_MEMORY.with(|blocks| match blocks.try_borrow_mut() {
            Ok(mut blocks) => verify_with_memory(&mut blocks, password.as_bytes(), &hash),
            Err(_) => false,
        })
    })
    .await
    .unwrap_or(false)
}

/// Most argon2 memory a stored hash may ask for (ours use 19 MiB); a record asking more is
/// refused rather than allowed to take the pool's memory.
const MAX_ARGON2_BLOCKS: usize = 64 * 1024;

thread_local! {
    /// Each hashing thread's argon2 memory, allocated once and reused by every check on it:
    /// 19 MiB freed and allocated again per check is kept by the allocator in ever more
    /// fragments (a flood of checks left several times the pool's working memory resident).
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `PasswordVerifier::verify_password`, computing in `blocks` instead of a fresh allocation.
fn verify_with_memory(blocks: &mut Vec<argon2::Block>, password: &[u8], hash: &str) -> bool {
    use argon2::{Algorithm, Params, Version};
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let needed = params.block_count();
    if needed > MAX_ARGON2_BLOCKS {
        return false;
    }
    if blocks.len() < needed {
        blocks.resize(needed, argon2::Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    argon
        .hash_password_into_with_memory(password, salt, &mut out, &mut blocks[..])
        .is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
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
            password_hash: hash_password(&self.inner.hashing, password.to_string()).await?,
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
            // The same argon2 check as a wrong password costs, against a hash no password is
            // known for: otherwise the answer's time would tell which users exist.
            let pool = &self.inner.hashing;
            let decoy = self
                .inner
                .decoy_hash
                .get_or_try_init(|| hash_password(pool, hex::encode(rand::random::<[u8; 32]>())))
                .await?;
            verify_password(pool, password.to_string(), decoy.clone()).await;
            return Ok(None);
        };
        let cache = &self.inner.users;
        let hit = cache.hit(
            name.as_str(),
            &record.password_hash,
            password,
            Instant::now(),
        );
        if !hit {
            let pool = &self.inner.hashing;
            if !verify_password(pool, password.to_string(), record.password_hash.clone()).await {
                return Ok(None);
            }
            cache.remember(
                name.as_str(),
                &record.password_hash,
                password,
                Instant::now(),
            );
        }
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
            record.password_hash = hash_password(&self.inner.hashing, password.to_string()).await?;
        }
        self.store_record(target, &record).await?;
        if password.is_some() {
            self.inner.users.forget_user(target.as_str());
        }
        Ok(())
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
    fn remembered_checks_expire_and_match_only_their_user_password_and_hash() {
        let cache = CredentialCache::default();
        let t0 = Instant::now();
        cache.remember("alice", "hash-1", "secret", t0);
        assert!(cache.hit("alice", "hash-1", "secret", t0 + Duration::from_secs(59)));
        assert!(!cache.hit("alice", "hash-1", "other", t0));
        assert!(!cache.hit("alicex", "hash-1", "secret", t0));
        // The same bytes split differently between user and password are another key.
        assert!(!cache.hit("alices", "hash-1", "ecret", t0));
        // The stored hash changed (a new password set on another instance).
        assert!(!cache.hit("alice", "hash-2", "secret", t0));
        cache.remember("alice", "hash-1", "secret", t0);
        assert!(!cache.hit("alice", "hash-1", "secret", t0 + CACHE_TTL));
        // Expired entries are dropped, not only ignored.
        assert!(!cache.hit("alice", "hash-1", "secret", t0));
    }

    #[test]
    fn checks_in_reused_memory_agree_with_the_library() {
        use argon2::password_hash::PasswordVerifier;
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(b"right-password", &salt)
            .unwrap()
            .to_string();
        let mut blocks = Vec::new();
        for (password, want) in [(&b"right-password"[..], true), (b"wrong-password", false)] {
            let parsed = PasswordHash::new(&hash).unwrap();
            let library = Argon2::default().verify_password(password, &parsed).is_ok();
            assert_eq!(library, want);
            assert_eq!(verify_with_memory(&mut blocks, password, &hash), want);
        }
        assert!(!verify_with_memory(&mut blocks, b"x", "not a hash"));
    }

    #[test]
    fn a_password_change_forgets_the_users_checks_only() {
        let cache = CredentialCache::default();
        let t0 = Instant::now();
        cache.remember("alice", "h", "one", t0);
        cache.remember("alice", "h", "two", t0);
        cache.remember("bobby", "h", "one", t0);
        cache.forget_user("alice");
        assert!(!cache.hit("alice", "h", "one", t0));
        assert!(!cache.hit("alice", "h", "two", t0));
        assert!(cache.hit("bobby", "h", "one", t0));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = CredentialCache::default();
        let t0 = Instant::now();
        for i in 0..CACHE_ENTRIES + 10 {
            cache.remember(&format!("user{i}"), "h", "pw", t0);
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CACHE_ENTRIES);
        assert!(cache.hit(&format!("user{}", CACHE_ENTRIES + 9), "h", "pw", t0));
        assert!(!cache.hit("user0", "h", "pw", t0));
    }

    #[tokio::test]
    async fn an_unknown_user_costs_the_same_check_as_a_wrong_password() {
        let store = crate::storage::open(&crate::storage::StorageConfig::Memory).unwrap();
        let registry = super::super::Registry::new(store, Default::default());
        registry
            .register("alice", "right-password", "alice@example.com")
            .await
            .unwrap();
        let checks = || {
            registry
                .inner
                .hashing
                .verifications
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = checks();
        assert_eq!(registry.authenticate("alice", "wrong").await.unwrap(), None);
        assert_eq!(checks(), before + 1, "a wrong password is checked");
        for unknown in ["nobody", "someone"] {
            assert_eq!(registry.authenticate(unknown, "wrong").await.unwrap(), None);
        }
        assert_eq!(checks(), before + 3, "each unknown user costs a check too");
        assert!(
            registry
                .authenticate("alice", "right-password")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn the_hash_pool_runs_at_most_its_size_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let pool = Arc::new(HashPool::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (pool, running, release_rx) =
                    (pool.clone(), running.clone(), release_rx.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        running.fetch_add(1, SeqCst);
                        let _ = release_rx.lock().unwrap().recv();
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while running.load(SeqCst) < 2 {
            assert!(Instant::now() < deadline, "no check started");
            tokio::task::yield_now().await;
        }
        // The others had every chance to start too.
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(running.load(SeqCst), 2);
        for _ in 0..6 {
            release_tx.send(()).unwrap();
        }
        for t in tasks {
            assert!(t.await.unwrap().is_some());
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
