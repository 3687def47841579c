//! `Range: bytes=...` parsing for layer GETs (RFC 7233, single ranges).

use std::ops::Range;

/// What a `Range` header asks of an object of a given size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole object (also for other units and multi-ranges, which
    /// RFC 7233 lets a server ignore).
    Full,
    /// One satisfiable range, clamped to the object.
    Partial(Range<u64>),
    /// Malformed or outside the object: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value against an object of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(value) = header else {
        return RangeRequest::Full;
    };
    let value = value.trim();
    let Some(spec) = value.strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (start.trim().is_empty(), end.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(end) {
            Some(0) | None => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(size.saturating_sub(n)..size),
        },
        // bytes=A-: from A to the end.
        (false, true) => match num(start) {
            Some(a) if a < size => RangeRequest::Partial(a..size),
            _ => RangeRequest::Unsatisfiable,
        },
        (false, false) => match (num(start), num(end)) {
            (Some(a), Some(b)) if a <= b && a < size => {
                RangeRequest::Partial(a..b.saturating_add(1).min(size))
            }
            _ => RangeRequest::Unsatisfiable,
        },
        (true, true) => RangeRequest::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges_follow_rfc_7233() {
        assert_eq!(parse(None, 10), Full);
        assert_eq!(parse(Some("bytes=0-0"), 10), Partial(0..1));
        assert_eq!(parse(Some("bytes=2-"), 10), Partial(2..10));
        assert_eq!(parse(Some("bytes=2-100"), 10), Partial(2..10));
        assert_eq!(parse(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(parse(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(parse(Some("items=0-1"), 10), Full);
        assert_eq!(parse(Some("bytes=0-1,3-4"), 10), Full);
    }

    #[test]
    fn bad_or_outside_ranges_are_unsatisfiable() {
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=-0",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse(Some(bad), 10), Unsatisfiable, "{bad}");
        }
        assert_eq!(parse(Some("bytes=0-"), 0), Unsatisfiable);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// `Range` values from a grammar, mostly close to valid, plus arbitrary text.
        fn range_header() -> impl Strategy<Value = String> {
            let num = prop_oneof![
                (0u64..64).prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                Just(String::new()),
                Just("99999999999999999999999".to_string()),
                "[ +\\-0-9a-z]{1,4}",
            ];
            let spec = (
                num.clone(),
                prop_oneof![Just("-"), Just("--"), Just(""), Just(" - ")],
                num,
            )
                .prop_map(|(a, sep, b)| format!("{a}{sep}{b}"));
            prop_oneof![
                4 => (prop_oneof![Just("bytes="), Just("bytes = "), Just("BYTES="), Just("items="), Just("")], spec.clone())
                    .prop_map(|(unit, s)| format!("{unit}{s}")),
                1 => (spec.clone(), spec).prop_map(|(a, b)| format!("bytes={a},{b}")),
                1 => any::<String>(),
            ]
        }

        fn digits(s: &str) -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            #[test]
            fn partial_ranges_lie_inside_the_object(
                header in proptest::option::of(range_header()),
                size in prop_oneof![0u64..100, any::<u64>()],
            ) {
                match parse(header.as_deref(), size) {
                    RangeRequest::Partial(r) => {
                        prop_assert!(r.start < r.end, "empty range {:?}", r);
                        prop_assert!(r.end <= size, "{:?} past {}", r, size);
                    }
                    RangeRequest::Full => {}
                    RangeRequest::Unsatisfiable => {
                        // Only a single `bytes=` spec can be unsatisfiable.
                        let spec = header
                            .as_deref()
                            .map(str::trim)
                            .and_then(|h| h.strip_prefix("bytes="));
                        prop_assert!(spec.is_some_and(|s| !s.contains(',')), "{:?}", header);
                        // And a well-formed one only when it misses the object.
                        if let Some((a, b)) = spec.and_then(|s| s.trim().split_once('-')) {
                            match (digits(a), digits(b), a.trim().is_empty(), b.trim().is_empty()) {
                                (Some(a), None, _, true) => prop_assert!(a >= size),
                                (None, Some(n), true, _) => prop_assert!(n == 0 || size == 0),
                                (Some(a), Some(b), _, _) => prop_assert!(a > b || a >= size),
                                _ => {}
                            }
                        }
                    }
                }
            }

            #[test]
            fn satisfiable_specs_are_served(a in 0u64..1000, len in 1u64..1000, size in 1u64..2000) {
                let want = if a < size {
                    RangeRequest::Partial(a..(a + len).min(size))
                } else {
                    RangeRequest::Unsatisfiable
                };
                let header = format!("bytes={a}-{}", a + len - 1);
                prop_assert_eq!(parse(Some(&header), size), want);
                let suffix = format!("bytes=-{len}");
                prop_assert_eq!(
                    parse(Some(&suffix), size),
                    RangeRequest::Partial(size.saturating_sub(len)..size)
                );
            }
        }
    }
}
