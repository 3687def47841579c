//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hasher that makes and checks
//! them.
//!
//! The grammar is the OCI image-spec's (`descriptor.md`, "Digests"):
//! `algorithm ":" encoded`, `algorithm` of `[a-z0-9]+([+._-][a-z0-9]+)*`, `encoded` of
//! `[a-zA-Z0-9=_-]+`. A string of that shape whose algorithm we do not implement is
//! [`DigestError::Unsupported`] (the server answers `UNSUPPORTED`); anything else malformed,
//! including a registered algorithm with the wrong length or upper-case hex, is
//! [`DigestError::Invalid`] (`DIGEST_INVALID`). Only lowercase hex is accepted for the two
//! registered algorithms, as the image-spec requires, so one content has exactly one digest
//! string and digests are safe storage key segments.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `algorithm:encoded`, or a known algorithm with a bad encoding.
    #[error("invalid digest")]
    Invalid,
    /// Well formed, but an algorithm this registry does not implement.
    #[error("unsupported digest algorithm")]
    Unsupported,
}

/// The digest algorithms this registry implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm's name in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of this algorithm's hash.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest: a supported algorithm and its lowercase hex hash.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// `algorithm:hex`, kept whole so `as_str` borrows.
    full: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part, after the `:`.
    pub fn hex(&self) -> &str {
        &self.full[self.algorithm.as_str().len() + 1..]
    }

    /// The whole digest, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = DigestHasher::new(algorithm);
        hasher.update(data);
        hasher.finish()
    }

    /// The sha256 digest of `data`: the canonical algorithm for content we create.
    pub fn sha256(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    /// Whether `data` hashes to this digest.
    pub fn verifies(&self, data: &[u8]) -> bool {
        Digest::of(self.algorithm, data) == *self
    }

    fn from_parts(algorithm: Algorithm, hex: &str) -> Digest {
        Digest {
            algorithm,
            full: format!("{}:{hex}", algorithm.as_str()),
        }
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`
fn is_algorithm_grammar(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let sep = |c: u8| matches!(c, b'+' | b'.' | b'_' | b'-');
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // No two separators in a row; every other byte is alphanumeric.
    b.windows(2).all(|w| !(sep(w[0]) && sep(w[1]))) && b.iter().all(|&c| alnum(c) || sep(c))
}

/// `[a-zA-Z0-9=_-]+`
fn is_encoded_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'))
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        let (alg, encoded) = s.split_once(':').ok_or(DigestError::Invalid)?;
        if !is_algorithm_grammar(alg) || !is_encoded_grammar(encoded) {
            return Err(DigestError::Invalid);
        }
        let algorithm = Algorithm::from_name(alg).ok_or(DigestError::Unsupported)?;
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(DigestError::Invalid);
        }
        Ok(Digest::from_parts(algorithm, encoded))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.full)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format_args!("{e}: {s:?}")))
    }
}

/// Hashes a stream of bytes with one algorithm, for blobs too large to hold whole.
#[derive(Clone)]
pub struct DigestHasher {
    state: HasherState,
    len: u64,
}

#[derive(Clone)]
enum HasherState {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Sha256 => HasherState::Sha256(Sha256::new()),
            Algorithm::Sha512 => HasherState::Sha512(Sha512::new()),
        };
        DigestHasher { state, len: 0 }
    }

    /// A hasher of the algorithm of `expected`, to verify content against it.
    pub fn for_digest(expected: &Digest) -> Self {
        DigestHasher::new(expected.algorithm())
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            HasherState::Sha256(_) => Algorithm::Sha256,
            HasherState::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            HasherState::Sha256(h) => h.update(data),
            HasherState::Sha512(h) => h.update(data),
        }
        self.len += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything hashed.
    pub fn finish(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self.state {
            HasherState::Sha256(h) => hex::encode(h.finalize()),
            HasherState::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest::from_parts(algorithm, &hex)
    }

    /// Whether everything hashed matches `expected` (same algorithm and hash).
    pub fn verify(self, expected: &Digest) -> bool {
        self.algorithm() == expected.algorithm() && self.finish() == *expected
    }
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestHasher")
            .field("algorithm", &self.algorithm())
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_nothing_is_the_well_known_digest() {
        assert_eq!(Digest::sha256(b"").as_str(), EMPTY_SHA256);
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert!(d.verifies(b""));
        assert!(!d.verifies(b"x"));
    }

    #[test]
    fn sha512_is_accepted_and_computed() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.as_str().starts_with("sha512:ddaf35a193617aba"));
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn malformed_digests_are_invalid() {
        let upper = EMPTY_SHA256.to_uppercase().replace("SHA256", "sha256");
        let short = &EMPTY_SHA256[..EMPTY_SHA256.len() - 1];
        let long = format!("{EMPTY_SHA256}0");
        let non_hex = EMPTY_SHA256.replace('e', "g");
        for bad in [
            "",
            ":",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:abc",
            "sha256::abc",
            "sha256:abc/def",
            "sha256:../../etc",
            upper.as_str(),
            short,
            long.as_str(),
            non_hex.as_str(),
            "sha256-:abc",
            "sha256+-x:abc",
            "sha512:abc",
        ] {
            assert_eq!(bad.parse::<Digest>(), Err(DigestError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn well_formed_digests_of_other_algorithms_are_unsupported() {
        for other in [
            "md5:abc",
            "blake3:0123",
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
        ] {
            assert_eq!(
                other.parse::<Digest>(),
                Err(DigestError::Unsupported),
                "{other:?}"
            );
        }
    }

    #[test]
    fn serde_round_trips_and_refuses_bad_strings() {
        let d = Digest::sha256(b"hello");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:nope\"").is_err());
    }

    #[test]
    fn streaming_hash_verifies_only_the_same_algorithm() {
        let want = Digest::of(Algorithm::Sha512, b"hello world");
        let mut h = DigestHasher::for_digest(&want);
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert!(h.clone().verify(&want));
        assert!(!h.verify(&Digest::sha256(b"hello world")));
    }

    proptest! {
        #[test]
        fn chunked_hashing_equals_one_shot(data in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..2048) {
            let cut = cut.min(data.len());
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let mut h = DigestHasher::new(alg);
                h.update(&data[..cut]);
                h.update(&data[cut..]);
                let d = h.finish();
                prop_assert_eq!(&d, &Digest::of(alg, &data));
                prop_assert_eq!(d.as_str().parse::<Digest>().unwrap(), d.clone());
            }
        }

        #[test]
        fn parsing_never_panics_and_accepted_strings_round_trip(s in "\\PC{0,140}") {
            if let Ok(d) = s.parse::<Digest>() {
                prop_assert_eq!(d.as_str(), s.as_str());
                prop_assert!(!d.as_str().contains('/'));
            }
        }
    }
}
