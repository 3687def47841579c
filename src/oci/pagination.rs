//! Pagination of `GET /v2/<name>/tags/list` and `GET /v2/_catalog`: the `n` and `last` query
//! parameters, paging a sorted list, and the `Link: <...>; rel="next"` header both ways (the
//! server builds it, the mount follows other registries' links).
//!
//! The spec's rule: results are in lexical order, start strictly after `last`, hold at most
//! `n`, and a `Link` header names the next page when there may be more. A registry may not
//! return fewer than `n` while more exist, so instead of silently cutting a large `n` we refuse
//! one above the server's maximum with `PAGINATION_NUMBER_INVALID`, as the reference server does.

use std::collections::HashMap;

use super::error::ErrorCode;

/// Why a page request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("n must be a non-negative integer no larger than {max}")]
    InvalidNumber { max: usize },
}

impl PageError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::PaginationNumberInvalid
    }
}

/// The paging parameters of a listing request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageQuery {
    /// At most this many entries; `None` means all of them, `Some(0)` none (and no `Link`).
    pub n: Option<usize>,
    /// Entries strictly after this one.
    pub last: Option<String>,
}

impl PageQuery {
    /// Parses the raw query string (without `?`); other parameters are ignored. `n` above `max`,
    /// negative or not a number is refused.
    pub fn parse(query: &str, max: usize) -> Result<PageQuery, PageError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let params: HashMap<String, String> = pairs.into_iter().collect();
        let n = match params.get("n") {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => {
                let n: usize = s.parse().map_err(|_| PageError::InvalidNumber { max })?;
                if n > max {
                    return Err(PageError::InvalidNumber { max });
                }
                Some(n)
            }
        };
        let last = params.get("last").filter(|s| !s.is_empty()).cloned();
        Ok(PageQuery { n, last })
    }
}

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<'a, T> {
    pub items: &'a [T],
    /// The `last` of the next page, when entries remain after this one.
    pub next_last: Option<&'a str>,
}

/// Cuts the page `query` asks for out of `sorted`, which must be in lexical order without
/// duplicates.
pub fn paginate<'a, T: AsRef<str>>(sorted: &'a [T], query: &PageQuery) -> Page<'a, T> {
    let start = match &query.last {
        Some(last) => sorted.partition_point(|x| x.as_ref() <= last.as_str()),
        None => 0,
    };
    let rest = sorted.get(start..).unwrap_or(&[]);
    let take = query.n.map_or(rest.len(), |n| n.min(rest.len()));
    let items = rest.get(..take).unwrap_or(&[]);
    let next_last = if take < rest.len() && take > 0 {
        items.last().map(AsRef::as_ref)
    } else {
        None
    };
    Page { items, next_last }
}

/// The value of the `Link` header for the next page of `path` (such as
/// `/v2/alice/app/tags/list`): `</v2/alice/app/tags/list?n=2&last=b>; rel="next"`.
pub fn next_link(path: &str, n: Option<usize>, last: &str) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(n) = n {
        params.push(("n", n.to_string()));
    }
    params.push(("last", last.to_string()));
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    format!("<{path}?{query}>; rel=\"next\"")
}

/// The target of the `rel="next"` link in a `Link` header value, if there is one. The target
/// may be relative (`/v2/...?last=x`, as the spec's examples) or absolute; the caller resolves
/// it against the URL it requested.
pub fn parse_next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        // This link's parameters run to the next `<` (targets cannot contain one unescaped).
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(n: Option<usize>, last: Option<&str>) -> PageQuery {
        PageQuery {
            n,
            last: last.map(str::to_string),
        }
    }

    #[test]
    fn queries_parse_and_bad_numbers_are_refused() {
        assert_eq!(PageQuery::parse("", 100), Ok(q(None, None)));
        assert_eq!(
            PageQuery::parse("n=2&last=b", 100),
            Ok(q(Some(2), Some("b")))
        );
        assert_eq!(
            PageQuery::parse("last=a%2Fb&x=1", 100),
            Ok(q(None, Some("a/b")))
        );
        assert_eq!(PageQuery::parse("n=0", 100), Ok(q(Some(0), None)));
        assert_eq!(PageQuery::parse("n=&last=", 100), Ok(q(None, None)));
        for bad in ["n=-1", "n=x", "n=1.5", "n=101", "n=99999999999999999999999"] {
            assert_eq!(
                PageQuery::parse(bad, 100),
                Err(PageError::InvalidNumber { max: 100 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn pages_follow_last_and_stop_at_the_end() {
        let tags = ["a", "b", "c", "d", "e"];
        let p = paginate(&tags, &q(Some(2), None));
        assert_eq!(p.items, ["a", "b"]);
        assert_eq!(p.next_last, Some("b"));
        let p = paginate(&tags, &q(Some(2), Some("b")));
        assert_eq!(p.items, ["c", "d"]);
        let p = paginate(&tags, &q(Some(2), Some("d")));
        assert_eq!(p.items, ["e"]);
        assert_eq!(p.next_last, None);
        // Exactly n left: no next page.
        assert_eq!(paginate(&tags, &q(Some(2), Some("c"))).next_last, None);
        // `last` need not be an entry.
        assert_eq!(paginate(&tags, &q(None, Some("bb"))).items, ["c", "d", "e"]);
        assert_eq!(paginate(&tags, &q(Some(0), None)).items, [] as [&str; 0]);
        assert_eq!(paginate(&tags, &q(Some(0), None)).next_last, None);
        assert_eq!(paginate(&tags, &q(None, Some("z"))).items, [] as [&str; 0]);
    }

    #[test]
    fn the_link_header_round_trips() {
        let link = next_link("/v2/alice/app/tags/list", Some(2), "b");
        assert_eq!(link, "</v2/alice/app/tags/list?n=2&last=b>; rel=\"next\"");
        assert_eq!(
            parse_next_link(&link).as_deref(),
            Some("/v2/alice/app/tags/list?n=2&last=b")
        );
        let catalog = next_link("/v2/_catalog", None, "a/b");
        assert_eq!(
            parse_next_link(&catalog).as_deref(),
            Some("/v2/_catalog?last=a%2Fb")
        );
    }

    #[test]
    fn links_of_other_registries_parse() {
        let ghcr = r#"</v2/_catalog?last=x&n=100>; rel="next""#;
        assert_eq!(
            parse_next_link(ghcr).as_deref(),
            Some("/v2/_catalog?last=x&n=100")
        );
        let several = r#"<https://r.example/v2/a/tags/list?last=p>; rel="prev", <https://r.example/v2/a/tags/list?last=q>; rel=next"#;
        assert_eq!(
            parse_next_link(several).as_deref(),
            Some("https://r.example/v2/a/tags/list?last=q")
        );
        assert_eq!(parse_next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(parse_next_link(""), None);
        assert_eq!(parse_next_link("<unterminated"), None);
        assert_eq!(parse_next_link(r#"</x>; title="next""#), None);
    }

    proptest! {
        #[test]
        fn following_pages_visits_every_entry_once(
            set in proptest::collection::btree_set("[a-z0-9]{1,4}", 0..40),
            n in 1usize..7,
        ) {
            let all: Vec<String> = set.into_iter().collect();
            let mut seen = Vec::new();
            let mut query = q(Some(n), None);
            loop {
                let page = paginate(&all, &query);
                prop_assert!(page.items.len() <= n);
                seen.extend(page.items.iter().cloned());
                let Some(next) = page.next_last else { break };
                let link = next_link("/v2/_catalog", Some(n), next);
                let target = parse_next_link(&link).unwrap();
                let (_, qs) = target.split_once('?').unwrap();
                query = PageQuery::parse(qs, 100).unwrap();
            }
            prop_assert_eq!(seen, all);
        }

        #[test]
        fn link_parsing_never_panics(s in "\\PC{0,80}") {
            let _ = parse_next_link(&s);
        }
    }
}
