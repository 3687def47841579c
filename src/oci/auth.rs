//! The pieces of Docker token authentication (distribution `docs/spec/auth/token.md` and
//! `scope.md`) that are pure text: access scopes and what a token grants of them, the
//! `WWW-Authenticate` challenge, and the token endpoint's answer.
//!
//! The server builds challenges and parses the scopes a client asks a token for; the mount
//! parses other registries' challenges (quoted strings with commas and escapes inside) and
//! names the scopes it needs. Signing and checking tokens is the server's business, not this
//! module's.

use std::fmt;
use std::str::FromStr;

use super::name::Name;

/// Why a scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("invalid scope {0:?}: expected <type>:<name>:<actions>")]
    Malformed(String),
    #[error("invalid repository name in scope {0:?}")]
    Name(String),
}

/// An action on a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// `*`: every action (the catalog's only action).
    All,
    /// Anything else; never granted, kept so a scope prints back as it came.
    Other(String),
}

impl Action {
    pub fn as_str(&self) -> &str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
            Action::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Action {
        match s {
            "pull" => Action::Pull,
            "push" => Action::Push,
            "delete" => Action::Delete,
            "*" => Action::All,
            other => Action::Other(other.to_string()),
        }
    }
}

/// What a scope is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `repository:<name>`
    Repository(Name),
    /// `registry:catalog`
    Catalog,
    /// Any other type and name, kept verbatim (never granted).
    Other { kind: String, name: String },
}

/// One access scope: `repository:alice/app:pull,push`, `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource: Resource,
    /// In the order given, without duplicates.
    pub actions: Vec<Action>,
}

impl Scope {
    /// A repository scope.
    pub fn repository(name: Name, actions: &[Action]) -> Scope {
        Scope {
            resource: Resource::Repository(name),
            actions: actions.to_vec(),
        }
    }

    /// `registry:catalog:*`
    pub fn catalog() -> Scope {
        Scope {
            resource: Resource::Catalog,
            actions: vec![Action::All],
        }
    }

    /// Whether the scope asks for `action` (or for `*`).
    pub fn allows(&self, action: &Action) -> bool {
        self.actions
            .iter()
            .any(|a| a == action || *a == Action::All)
    }

    /// The scope cut down to the actions the caller may do: what a token grants is the
    /// intersection of what was asked and what is allowed. `*` asked grants every allowed
    /// action; unknown actions are never granted.
    pub fn restrict(&self, allowed: &[Action]) -> Scope {
        let known = |a: &&Action| !matches!(a, Action::Other(_));
        let actions = if self.actions.contains(&Action::All) {
            allowed.iter().filter(known).cloned().collect()
        } else {
            self.actions
                .iter()
                .filter(known)
                .filter(|a| allowed.contains(a) || allowed.contains(&Action::All))
                .cloned()
                .collect()
        };
        Scope {
            resource: self.resource.clone(),
            actions,
        }
    }

    /// The scope as an entry of a token's `access` claim.
    pub fn to_access(&self) -> AccessEntry {
        let (kind, name) = match &self.resource {
            Resource::Repository(n) => ("repository".to_string(), n.to_string()),
            Resource::Catalog => ("registry".to_string(), "catalog".to_string()),
            Resource::Other { kind, name } => (kind.clone(), name.clone()),
        };
        AccessEntry {
            kind,
            name,
            actions: self
                .actions
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
        }
    }
}

/// One entry of a token's `access` claim, in the token spec's JSON shape:
/// `{"type":"repository","name":"alice/app","actions":["pull","push"]}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The answer of a token endpoint: `{"token","access_token","expires_in","issued_at"}`. Both
/// token fields carry the same token (the spec keeps `access_token` for OAuth 2 clients);
/// registries send either or both.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Seconds the token is valid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// RFC 3339 time of issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
}

/// The token spec's lifetime for a token whose response does not say, and its minimum.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 60;

impl TokenResponse {
    /// A response carrying `token` in both fields.
    pub fn new(token: String, expires_in: u64, issued_at: String) -> Self {
        TokenResponse {
            token: Some(token.clone()),
            access_token: Some(token),
            expires_in: Some(expires_in),
            issued_at: Some(issued_at),
        }
    }

    /// The token to send as `Authorization: Bearer <token>`: `token`, else `access_token`.
    pub fn bearer(&self) -> Option<&str> {
        self.token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(self.access_token.as_deref().filter(|t| !t.is_empty()))
    }

    /// How long to keep the token: `expires_in`, at least the spec's 60 seconds.
    pub fn lifetime_secs(&self) -> u64 {
        self.expires_in
            .unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS)
            .max(DEFAULT_TOKEN_LIFETIME_SECS)
    }
}

/// Never prints the token: responses end up in logs.
impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |t: &Option<String>| t.as_ref().map(|_| "<redacted>");
        f.debug_struct("TokenResponse")
            .field("token", &redacted(&self.token))
            .field("access_token", &redacted(&self.access_token))
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// The token spec's resource type: `[a-z0-9]+`, optionally with a class, `repository(plugin)`.
fn is_resource_type(s: &str) -> bool {
    let (base, class) = match s.split_once('(') {
        Some((b, c)) => (b, c.strip_suffix(')')),
        None => (s, Some("")),
    };
    let word = |w: &str| w.bytes().all(|b| b.is_ascii_alphanumeric());
    !base.is_empty() && word(base) && class.is_some_and(word)
}

impl FromStr for Scope {
    type Err = ScopeError;
    /// The name may itself hold `:` (`repository:host:5000/app:pull`), so the type ends at the
    /// first `:` and the actions start after the last.
    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        let malformed = || ScopeError::Malformed(s.to_string());
        let (kind, rest) = s.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        if !is_resource_type(kind) || name.is_empty() {
            return Err(malformed());
        }
        let mut parsed: Vec<Action> = Vec::new();
        for a in actions.split(',') {
            let ok = !a.is_empty() && (a == "*" || a.bytes().all(|b| b.is_ascii_lowercase()));
            if !ok {
                return Err(malformed());
            }
            let a = Action::parse(a);
            if !parsed.contains(&a) {
                parsed.push(a);
            }
        }
        let resource = match (kind, name) {
            ("repository", n) => {
                Resource::Repository(n.parse().map_err(|_| ScopeError::Name(s.to_string()))?)
            }
            ("registry", "catalog") => Resource::Catalog,
            (k, n) => Resource::Other {
                kind: k.to_string(),
                name: n.to_string(),
            },
        };
        Ok(Scope {
            resource,
            actions: parsed,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Resource::Repository(n) => write!(f, "repository:{n}:")?,
            Resource::Catalog => f.write_str("registry:catalog:")?,
            Resource::Other { kind, name } => write!(f, "{kind}:{name}:")?,
        }
        let actions: Vec<&str> = self.actions.iter().map(Action::as_str).collect();
        f.write_str(&actions.join(","))
    }
}

/// Parses the scopes of a token request or a challenge: each value may hold several,
/// space-separated (`scope=a b`), and a request may repeat the parameter.
pub fn parse_scopes<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Scope>, ScopeError> {
    values
        .into_iter()
        .flat_map(str::split_ascii_whitespace)
        .map(str::parse)
        .collect()
}

/// An authentication challenge (`WWW-Authenticate`), such as
/// `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `Bearer`, `Basic`, ... as sent.
    pub scheme: String,
    /// Parameters in order; names lower-cased (they are case-insensitive).
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// A Bearer challenge naming the token endpoint, the service and the scopes needed.
    pub fn bearer(realm: &str, service: &str, scopes: &[Scope]) -> Challenge {
        let mut params = vec![
            ("realm".to_string(), realm.to_string()),
            ("service".to_string(), service.to_string()),
        ];
        if !scopes.is_empty() {
            let scope: Vec<String> = scopes.iter().map(Scope::to_string).collect();
            params.push(("scope".to_string(), scope.join(" ")));
        }
        Challenge {
            scheme: "Bearer".to_string(),
            params,
        }
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }

    pub fn is_basic(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("basic")
    }

    /// A parameter by (case-insensitive) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }

    /// The scopes asked for, verbatim (space-separated when several).
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// The header value. Every value is quoted, with `"` and `\` escaped.
    pub fn to_header(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| {
                let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{k}=\"{escaped}\"")
            })
            .collect();
        if params.is_empty() {
            self.scheme.clone()
        } else {
            format!("{} {}", self.scheme, params.join(","))
        }
    }

    /// The first challenge of a header value, if it has one.
    pub fn parse(header: &str) -> Option<Challenge> {
        parse_challenges(header).into_iter().next()
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A small cursor over a header value (RFC 9110 section 11: challenges, auth-params,
/// quoted-strings).
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | ',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// A quoted-string after its opening `"`: up to the closing one, with `\x` meaning `x`.
    /// An unterminated string runs to the end.
    fn quoted(&mut self) -> String {
        let mut out = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return out;
                }
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        out.push(e);
                    }
                }
                c => out.push(c),
            }
        }
        self.pos = self.s.len();
        out
    }
}

/// Every challenge of a `WWW-Authenticate` value, in order. Unparseable tails are dropped,
/// never a panic: the value comes from whatever server the mount talks to.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut cur = Cursor { s: header, pos: 0 };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        cur.skip_ws_and_commas();
        let scheme = cur.token();
        if scheme.is_empty() {
            return out;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_string(),
            params: Vec::new(),
        };
        // Parameters: `name = value` separated by commas, until a token that is not followed
        // by `=`, which starts the next challenge.
        loop {
            cur.skip_ws_and_commas();
            let save = cur.pos;
            let name = cur.token();
            if name.is_empty() {
                break;
            }
            cur.skip_ws();
            if cur.peek() != Some('=') {
                cur.pos = save;
                break;
            }
            cur.pos += 1;
            cur.skip_ws();
            let value = if cur.peek() == Some('"') {
                cur.pos += 1;
                cur.quoted()
            } else {
                cur.token().to_string()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
        }
        out.push(challenge);
        // Anything that is neither a token nor a separator ends the parse.
        cur.skip_ws_and_commas();
        if cur.peek().is_some_and(|c| !is_tchar(c)) {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn scopes_parse_and_print_back() {
        let s: Scope = "repository:alice/app:pull,push".parse().unwrap();
        assert_eq!(
            s,
            Scope::repository(name("alice/app"), &[Action::Pull, Action::Push])
        );
        assert_eq!(s.to_string(), "repository:alice/app:pull,push");
        assert!(s.allows(&Action::Push));
        assert!(!s.allows(&Action::Delete));
        let c: Scope = "registry:catalog:*".parse().unwrap();
        assert_eq!(c, Scope::catalog());
        assert_eq!(c.to_string(), "registry:catalog:*");
        assert!(c.allows(&Action::Pull));
        let plugin: Scope = "repository(plugin):a/b:pull".parse().unwrap();
        assert!(matches!(plugin.resource, Resource::Other { .. }));
        assert_eq!(plugin.to_string(), "repository(plugin):a/b:pull");
        let hosted: Scope = "other:host:5000/x:pull".parse().unwrap();
        assert_eq!(
            hosted.resource,
            Resource::Other {
                kind: "other".into(),
                name: "host:5000/x".into()
            }
        );
        let dup: Scope = "repository:a:pull,pull,frob".parse().unwrap();
        assert_eq!(dup.actions, [Action::Pull, Action::Other("frob".into())]);
    }

    #[test]
    fn a_granted_scope_is_what_was_asked_and_allowed() {
        let asked: Scope = "repository:alice/app:pull,push,frob".parse().unwrap();
        assert_eq!(asked.restrict(&[Action::Pull]).actions, [Action::Pull]);
        assert_eq!(
            asked
                .restrict(&[Action::Pull, Action::Push, Action::Delete])
                .actions,
            [Action::Pull, Action::Push]
        );
        assert_eq!(asked.restrict(&[]).actions, []);
        assert_eq!(
            asked.restrict(&[Action::All]).actions,
            [Action::Pull, Action::Push]
        );
        let star: Scope = "repository:a:*".parse().unwrap();
        assert_eq!(
            star.restrict(&[Action::Pull, Action::Other("x".into())])
                .actions,
            [Action::Pull]
        );
        let entry = asked.restrict(&[Action::Pull]).to_access();
        assert_eq!(
            serde_json::to_value(&entry).unwrap(),
            serde_json::json!({"type": "repository", "name": "alice/app", "actions": ["pull"]})
        );
        assert_eq!(Scope::catalog().to_access().name, "catalog");
    }

    #[test]
    fn token_responses_of_every_registry_give_their_token() {
        let ours = TokenResponse::new("t0k".into(), 300, "2026-01-01T00:00:00Z".into());
        let json = serde_json::to_value(&ours).unwrap();
        assert_eq!(json["token"], "t0k");
        assert_eq!(json["access_token"], "t0k");
        assert_eq!(json["expires_in"], 300);
        let only_access: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(only_access.bearer(), Some("a"));
        assert_eq!(only_access.lifetime_secs(), 60);
        let empty_token: TokenResponse =
            serde_json::from_str(r#"{"token":"","access_token":"b","expires_in":10}"#).unwrap();
        assert_eq!(empty_token.bearer(), Some("b"));
        assert_eq!(empty_token.lifetime_secs(), 60);
        let none: TokenResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(none.bearer(), None);
        assert!(!format!("{ours:?}").contains("t0k"));
    }

    #[test]
    fn bad_scopes_are_refused() {
        for bad in [
            "",
            "repository",
            "repository:a",
            ":a:pull",
            "repository::pull",
            "repository:a:",
            "repository:a:pull,",
            "repository:a:PULL",
            "repo sitory:a:pull",
        ] {
            assert!(
                matches!(bad.parse::<Scope>(), Err(ScopeError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            "repository:Bad/Name:pull".parse::<Scope>(),
            Err(ScopeError::Name("repository:Bad/Name:pull".into()))
        );
    }

    #[test]
    fn several_scopes_come_space_separated_or_repeated() {
        let scopes = parse_scopes([
            "repository:a:pull repository:b/c:push",
            "registry:catalog:*",
        ])
        .unwrap();
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[2], Scope::catalog());
        assert!(parse_scopes(["repository:a:pull bogus"]).is_err());
        assert_eq!(parse_scopes([""]).unwrap(), []);
    }

    #[test]
    fn the_bearer_challenge_has_the_spec_shape() {
        let scope = Scope::repository(name("alice/app"), &[Action::Pull, Action::Push]);
        let c = Challenge::bearer("http://127.0.0.1:5000/v2/token", "127.0.0.1:5000", &[scope]);
        assert_eq!(
            c.to_header(),
            r#"Bearer realm="http://127.0.0.1:5000/v2/token",service="127.0.0.1:5000",scope="repository:alice/app:pull,push""#
        );
        assert_eq!(Challenge::parse(&c.to_header()), Some(c));
        let none = Challenge::bearer("https://r/v2/token", "r", &[]);
        assert_eq!(none.scope(), None);
    }

    #[test]
    fn challenges_of_other_registries_parse() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#;
        let c = Challenge::parse(hub).unwrap();
        assert!(c.is_bearer());
        assert_eq!(c.realm(), Some("https://auth.docker.io/token"));
        assert_eq!(c.service(), Some("registry.docker.io"));
        assert_eq!(c.scope(), Some("repository:library/alpine:pull,push"));

        let spaced = r#"bearer  Realm = "https://x/t" , service=plain, scope="a:b:c d:e:f", error="insufficient_scope""#;
        let c = Challenge::parse(spaced).unwrap();
        assert!(c.is_bearer());
        assert_eq!(c.realm(), Some("https://x/t"));
        assert_eq!(c.service(), Some("plain"));
        assert_eq!(c.scope(), Some("a:b:c d:e:f"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));

        let escaped = r#"Bearer realm="say \"hi\", \\ ok",service="s""#;
        let c = Challenge::parse(escaped).unwrap();
        assert_eq!(c.realm(), Some(r#"say "hi", \ ok"#));
        assert_eq!(c.service(), Some("s"));

        let two = r#"Basic realm="Registry Realm", Bearer realm="https://t",service="s""#;
        let all = parse_challenges(two);
        assert_eq!(all.len(), 2);
        assert!(all[0].is_basic());
        assert_eq!(all[0].realm(), Some("Registry Realm"));
        assert!(all[1].is_bearer());
        assert_eq!(all[1].service(), Some("s"));

        assert_eq!(Challenge::parse(""), None);
        assert_eq!(Challenge::parse("Basic").unwrap().params, []);
        let cut = Challenge::parse(r#"Bearer realm="unterminated"#).unwrap();
        assert_eq!(cut.realm(), Some("unterminated"));
    }

    proptest! {
        #[test]
        fn built_challenges_parse_back(realm in "\\PC{0,40}", service in "[ -~]{0,20}") {
            let c = Challenge::bearer(&realm, &service, &[Scope::catalog()]);
            prop_assert_eq!(Challenge::parse(&c.to_header()), Some(c));
        }

        #[test]
        fn challenge_parsing_never_panics(s in "\\PC{0,80}") {
            let _ = parse_challenges(&s);
        }

        #[test]
        fn scope_parsing_never_panics(s in "\\PC{0,60}") {
            if let Ok(scope) = s.parse::<Scope>() {
                prop_assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
            }
        }
    }
}
