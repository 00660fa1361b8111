//! Rules: each argument on its own, then the rules between arguments.

use proc_macro2::Span;
use syn::{LitStr, Path};

use crate::args::{Args, PrincipalArg};

/// Validated options, ready for code generation.
pub(crate) struct Options {
    pub(crate) header: String,
    pub(crate) ttl_ms: u64,
    pub(crate) scope: Option<String>,
    pub(crate) required: bool,
    pub(crate) lease_ms: u64,
    pub(crate) wait_ms: Option<u64>,
    pub(crate) cache: Cache,
    pub(crate) replay_header: String,
    pub(crate) principal: Option<(Principal, Span)>,
}

#[derive(Clone, Copy)]
pub(crate) enum Cache {
    All,
    Success,
    NonServerError,
}

pub(crate) enum Principal {
    Header(String),
    Function(Path),
}

const DEFAULT_TTL_MS: u64 = 24 * 3600 * 1000;
const DEFAULT_LEASE_MS: u64 = 30 * 1000;
const DEFAULT_WAIT_MS: u64 = 10 * 1000;
const MIN_LEASE_MS: u64 = 1000;

pub(crate) fn validate(args: Args) -> Result<Options, Vec<syn::Error>> {
    let errors = std::cell::RefCell::new(args.errors);

    let header = args
        .header
        .as_ref()
        .map(|h| note(&errors, header_name(h, "header")))
        .unwrap_or_else(|| Some("idempotency-key".into()));
    let replay_header = args
        .replay_header
        .as_ref()
        .map(|h| note(&errors, header_name(h, "replay_header")))
        .unwrap_or_else(|| Some("idempotent-replayed".into()));
    let ttl = args
        .ttl
        .as_ref()
        .map(|d| note(&errors, duration_arg(d, "ttl")));
    let lease = args
        .lease
        .as_ref()
        .map(|d| note(&errors, duration_arg(d, "lease")));
    let wait = args
        .wait
        .as_ref()
        .map(|d| note(&errors, duration_arg(d, "wait")));
    let scope = args.scope.as_ref().map(|s| note(&errors, scope(s)));
    let on_conflict = args.on_conflict.as_ref().map(|s| {
        note(
            &errors,
            match s.value().as_str() {
                "reject" => Ok(false),
                "wait" => Ok(true),
                other => Err(syn::Error::new(
                    s.span(),
                    format!("invalid `on_conflict` {other:?}: expected \"reject\" or \"wait\""),
                )),
            },
        )
    });
    let cache = args.cache.as_ref().map(|s| {
        note(&errors, match s.value().as_str() {
            "all" => Ok(Cache::All),
            "success" => Ok(Cache::Success),
            "non_server_error" => Ok(Cache::NonServerError),
            other => Err(syn::Error::new(
                s.span(),
                format!("invalid `cache` {other:?}: expected \"all\", \"success\" or \"non_server_error\""),
            )),
        })
    });
    let principal = args.principal.map(|p| {
        let span = p.span;
        match p.value {
            PrincipalArg::Header(h) => {
                note(&errors, header_name(&h, "principal")).map(|h| (Principal::Header(h), span))
            }
            PrincipalArg::Function(path) => Some((Principal::Function(path), span)),
        }
    });

    let mut errors = errors.into_inner();
    // Rules between arguments, each with its fix.
    let ttl_ms = match ttl {
        Some(Some(ms)) => Some(ms),
        Some(None) => None,
        None => Some(DEFAULT_TTL_MS),
    };
    let lease_ms = match lease {
        Some(Some(ms)) => Some(ms),
        Some(None) => None,
        None => Some(DEFAULT_LEASE_MS),
    };
    if let (Some(ttl_ms), Some(lease_ms)) = (ttl_ms, lease_ms) {
        if lease_ms > ttl_ms {
            let (span, msg) = match (&args.lease, &args.ttl) {
                (Some(l), _) => (
                    l.span(),
                    format!(
                        "`lease` ({}) is longer than `ttl` ({}): a claim must not outlive the record it protects; shorten `lease` or lengthen `ttl`",
                        l.value(),
                        args.ttl.as_ref().map_or("24h".into(), LitStr::value)
                    ),
                ),
                (None, Some(t)) => (
                    t.span(),
                    format!(
                        "`ttl` ({}) is shorter than the default `lease` of 30s; add a shorter `lease`, e.g. `lease = \"{}\"`",
                        t.value(),
                        t.value()
                    ),
                ),
                (None, None) => unreachable!("defaults satisfy lease <= ttl"),
            };
            errors.push(syn::Error::new(span, msg));
        }
    }
    if let (Some(l), Some(Some(ms))) = (&args.lease, lease) {
        if ms < MIN_LEASE_MS {
            errors.push(syn::Error::new(
                l.span(),
                format!(
                    "`lease` must be at least 1s (renewals run every lease/3); got {:?}",
                    l.value()
                ),
            ));
        }
    }
    let waits = matches!(on_conflict, Some(Some(true)));
    if let (Some(w), false) = (&args.wait, waits) {
        errors.push(syn::Error::new(
            w.span(),
            "`wait` requires `on_conflict = \"wait\"`; add it, or remove `wait`",
        ));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    // Every `None` below was reported above.
    let missing = || vec![syn::Error::new(Span::call_site(), "invalid arguments")];
    Ok(Options {
        header: header.ok_or_else(missing)?,
        ttl_ms: ttl_ms.ok_or_else(missing)?,
        scope: scope.flatten(),
        required: args.required.as_ref().is_none_or(|b| b.value),
        lease_ms: lease_ms.ok_or_else(missing)?,
        wait_ms: waits.then(|| wait.flatten().unwrap_or(DEFAULT_WAIT_MS)),
        cache: cache.flatten().unwrap_or(Cache::All),
        replay_header: replay_header.ok_or_else(missing)?,
        principal: principal.flatten(),
    })
}

fn note<T>(errors: &std::cell::RefCell<Vec<syn::Error>>, r: syn::Result<T>) -> Option<T> {
    r.map_err(|e| errors.borrow_mut().push(e)).ok()
}

/// A header name per RFC 9110 (a `token`), lowercased.
fn header_name(lit: &LitStr, arg: &str) -> syn::Result<String> {
    let v = lit.value();
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if v.is_empty() || !v.chars().all(tchar) {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid `{arg}` {v:?}: not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, no spaces or colons), e.g. \"Idempotency-Key\""
            ),
        ));
    }
    Ok(v.to_ascii_lowercase())
}

fn scope(lit: &LitStr) -> syn::Result<String> {
    let v = lit.value();
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
    if v.is_empty() || v.len() > 100 || !v.chars().all(ok) {
        return Err(syn::Error::new(
            lit.span(),
            format!("invalid `scope` {v:?}: expected 1 to 100 letters, digits, `-`, `_`, `.` or `/`, e.g. \"payments\""),
        ));
    }
    Ok(v)
}

fn duration_arg(lit: &LitStr, arg: &str) -> syn::Result<u64> {
    let v = lit.value();
    match parse_duration_ms(&v) {
        Some(0) => Err(syn::Error::new(
            lit.span(),
            format!("`{arg}` must be longer than zero"),
        )),
        Some(ms) => Ok(ms),
        None => Err(syn::Error::new(
            lit.span(),
            format!("invalid `{arg}` {v:?}: expected a duration like \"30s\", \"15m\", \"24h\" or \"7d\""),
        )),
    }
}

/// `<digits><unit>` with unit `ms`, `s`, `m`, `h` or `d`, in milliseconds.
/// `None` for anything else or on overflow.
pub(crate) fn parse_duration_ms(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match &s[digits..] {
        "ms" => 1,
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 3600 * 1000,
        "d" => 24 * 3600 * 1000,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;
    use proptest::prelude::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms("15m"), Some(900_000));
        assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
        assert_eq!(parse_duration_ms("7d"), Some(604_800_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("0s"), Some(0));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "s",
            "24",
            "24 hours",
            "1.5h",
            "-1s",
            "1H",
            "1s ",
            " 1s",
            "1w",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration_ms("18446744073709551615d"), None);
    }

    proptest! {
        #[test]
        fn round_trip(n in 0u64..1_000_000, unit in prop::sample::select(vec![("ms", 1u64), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)])) {
            prop_assert_eq!(parse_duration_ms(&format!("{n}{}", unit.0)), Some(n * unit.1));
        }

        #[test]
        fn never_panics(s in ".{0,30}") {
            let _ = parse_duration_ms(&s);
        }
    }
}
