//! Rules: each argument on its own, then the rules between arguments.
//!
//! Options the user did not write stay `None`: the runtime's
//! `HandlerConfig::new` holds the defaults, and the macro emits only the
//! setters written. A rule that needs a default (a `lease` longer than the
//! default `ttl`, say) becomes a `LeaseCheck`, which the expansion turns into
//! a `const` evaluated over the built options.

use proc_macro2::Span;
use syn::{LitStr, Path, Type};

use crate::args::{Args, PrincipalArg};
use crate::expand::Framework;

/// Validated options, ready for code generation: `None` is "not written".
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) header: Option<String>,
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) scope: Option<String>,
    pub(crate) required: Option<bool>,
    pub(crate) lease_ms: Option<u64>,
    pub(crate) on_conflict: Option<OnConflict>,
    pub(crate) cache: Option<Cache>,
    pub(crate) retry_inviting: Option<RetryInviting>,
    pub(crate) replay_header: Option<String>,
    pub(crate) principal: Option<(Principal, Span)>,
    /// axum: the state the arguments are checked with.
    pub(crate) state: Option<Type>,
    /// Set when only one of `lease` and `ttl` is written.
    pub(crate) lease_check: Option<LeaseCheck>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnConflict {
    Reject,
    /// Wait this many milliseconds, or the runtime's `DEFAULT_WAIT`.
    Wait(Option<u64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cache {
    All,
    Success,
    NonServerError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryInviting {
    Release,
    Store,
}

pub(crate) enum Principal {
    Header(String),
    Function(Path),
}

/// "The lease must not outlive the TTL" where one of them is the runtime's
/// default: checked at compile time over the built options, failing with
/// `message` on the written value.
pub(crate) struct LeaseCheck {
    pub(crate) span: Span,
    pub(crate) message: String,
}

/// The runtime's `MIN_LEASE`: renewals run every lease/3.
const MIN_LEASE_MS: u64 = 1000;

pub(crate) fn validate(args: Args, framework: Framework) -> Result<Options, Vec<syn::Error>> {
    let errors = std::cell::RefCell::new(args.errors);

    let header = args
        .header
        .as_ref()
        .map(|h| note(&errors, header_name(h, "header")));
    let replay_header = args
        .replay_header
        .as_ref()
        .map(|h| note(&errors, header_name(h, "replay_header")));
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
    let waits = args.on_conflict.as_ref().map(|s| {
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
    let retry_inviting = args.retry_inviting.as_ref().map(|s| {
        note(
            &errors,
            match s.value().as_str() {
                "release" => Ok(RetryInviting::Release),
                "store" => Ok(RetryInviting::Store),
                other => Err(syn::Error::new(
                    s.span(),
                    format!(
                        "invalid `retry_inviting` {other:?}: expected \"release\" or \"store\""
                    ),
                )),
            },
        )
    });
    let state = args
        .state
        .map(|(key, ty)| note(&errors, state(&key, ty, framework)));
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
    // Each duration on its own: a lease is at least `MIN_LEASE`, and so is a
    // TTL, which no lease may outlive.
    let ttl_ms = match (&args.ttl, ttl.flatten()) {
        (Some(t), Some(ms)) if ms < MIN_LEASE_MS => {
            errors.push(syn::Error::new(
                t.span(),
                format!(
                    "`ttl` must be at least 1s, the shortest `lease` (a claim must not outlive the record it protects); got {:?}",
                    t.value()
                ),
            ));
            None
        }
        (_, ms) => ms,
    };
    let lease_ms = match (&args.lease, lease.flatten()) {
        (Some(l), Some(ms)) if ms < MIN_LEASE_MS => {
            errors.push(syn::Error::new(
                l.span(),
                format!(
                    "`lease` must be at least 1s (renewals run every lease/3); got {:?}",
                    l.value()
                ),
            ));
            None
        }
        (_, ms) => ms,
    };
    // Rules between arguments, each with its fix.
    let mut lease_check = None;
    match (&args.lease, lease_ms, &args.ttl, ttl_ms) {
        (Some(l), Some(lease_ms), Some(t), Some(ttl_ms)) if lease_ms > ttl_ms => {
            errors.push(syn::Error::new(
                l.span(),
                format!(
                    "`lease` ({}) is longer than `ttl` ({}): a claim must not outlive the record it protects; shorten `lease` or lengthen `ttl`",
                    l.value(),
                    t.value()
                ),
            ));
        }
        (Some(l), Some(_), None, _) => {
            lease_check = Some(LeaseCheck {
                span: l.span(),
                message: format!(
                    "`lease` ({}) is longer than the default `ttl`: a claim must not outlive the record it protects; shorten `lease` or add a `ttl` at least as long, e.g. `ttl = \"{}\"`",
                    l.value(),
                    l.value()
                ),
            });
        }
        (None, _, Some(t), Some(_)) => {
            lease_check = Some(LeaseCheck {
                span: t.span(),
                message: format!(
                    "`ttl` ({}) is shorter than the default `lease`: a claim must not outlive the record it protects; add a shorter `lease`, e.g. `lease = \"{}\"`",
                    t.value(),
                    t.value()
                ),
            });
        }
        // Both written and in order, neither written (the defaults agree),
        // or one invalid and already reported.
        _ => {}
    }
    let waits = waits.flatten();
    if let (Some(w), false) = (&args.wait, waits == Some(true)) {
        errors.push(syn::Error::new(
            w.span(),
            "`wait` requires `on_conflict = \"wait\"`; add it, or remove `wait`",
        ));
    }

    let cache = cache.flatten();
    let retry_inviting = retry_inviting.flatten();
    if let (Some(r), Some(Cache::Success), Some(RetryInviting::Store)) =
        (&args.retry_inviting, cache, retry_inviting)
    {
        errors.push(syn::Error::new(
            r.span(),
            "`retry_inviting = \"store\"` has no effect with `cache = \"success\"`, which stores no 4xx or 5xx response; use `cache = \"all\"` or `cache = \"non_server_error\"`, or remove `retry_inviting`",
        ));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Options {
        header: header.flatten(),
        ttl_ms,
        scope: scope.flatten(),
        required: args.required.as_ref().map(|b| b.value),
        lease_ms,
        on_conflict: waits.map(|waits| {
            if waits {
                OnConflict::Wait(wait.flatten())
            } else {
                OnConflict::Reject
            }
        }),
        cache,
        retry_inviting,
        replay_header: replay_header.flatten(),
        principal: principal.flatten(),
        state: state.flatten(),
        lease_check,
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

/// The axum state: a type that can be named in the checks, on axum only.
fn state(key: &syn::Ident, ty: Type, framework: Framework) -> syn::Result<Type> {
    if let Framework::Actix = framework {
        return Err(syn::Error::new(
            key.span(),
            "`state` is for axum handlers: actix-web extractors take no state type; remove `state`",
        ));
    }
    let tokens = quote::ToTokens::to_token_stream(&ty);
    if ["_", "impl", "Self"]
        .iter()
        .any(|word| crate::expand::mentions(tokens.clone(), word))
    {
        return Err(syn::Error::new_spanned(
            ty,
            "`state` expects a concrete type like `AppState`, without `_`, `impl` or `Self`: the state of the `Router` this handler is routed in",
        ));
    }
    Ok(ty)
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
    use super::{parse_duration_ms, validate, Cache, OnConflict, Options, RetryInviting};
    use crate::expand::Framework;
    use proptest::prelude::*;

    fn options(attr: &str) -> Result<Options, Vec<String>> {
        options_for(attr, Framework::Axum)
    }

    fn options_for(attr: &str, framework: Framework) -> Result<Options, Vec<String>> {
        let args = syn::parse_str(attr).map_err(|e| vec![e.to_string()])?;
        validate(args, framework).map_err(|es| es.iter().map(ToString::to_string).collect())
    }

    fn error(attr: &str) -> String {
        match options(attr) {
            Ok(_) => panic!("{attr} is accepted"),
            Err(es) => {
                assert_eq!(es.len(), 1, "{es:?}");
                es[0].clone()
            }
        }
    }

    #[test]
    fn options_not_written_stay_unset() {
        let o = options(r#"scope = "payments""#).unwrap();
        assert_eq!(o.scope.as_deref(), Some("payments"));
        assert!(o.header.is_none() && o.replay_header.is_none());
        assert!(o.ttl_ms.is_none() && o.lease_ms.is_none());
        assert!(o.required.is_none() && o.on_conflict.is_none() && o.cache.is_none());
        assert!(o.principal.is_none() && o.lease_check.is_none());
        assert!(o.retry_inviting.is_none() && o.state.is_none());
    }

    #[test]
    fn options_written_are_set_as_written() {
        let o = options(
            r#"header = "X-Key", ttl = "7d", lease = "1m", required = false, on_conflict = "reject", cache = "success", replay_header = "X-Replayed""#,
        )
        .unwrap();
        assert_eq!(o.header.as_deref(), Some("x-key"));
        assert_eq!(o.replay_header.as_deref(), Some("x-replayed"));
        assert_eq!(o.ttl_ms, Some(7 * 86_400_000));
        assert_eq!(o.lease_ms, Some(60_000));
        assert_eq!(o.required, Some(false));
        assert_eq!(o.on_conflict, Some(OnConflict::Reject));
        assert_eq!(o.cache, Some(Cache::Success));
        let o = options(r#"retry_inviting = "store", state = Arc<AppState>"#).unwrap();
        assert_eq!(o.retry_inviting, Some(RetryInviting::Store));
        let state = o.state.unwrap();
        assert_eq!(quote::quote!(#state).to_string(), "Arc < AppState >");
        let o = options(r#"retry_inviting = "release""#).unwrap();
        assert_eq!(o.retry_inviting, Some(RetryInviting::Release));
    }

    #[test]
    fn waiting_without_a_wait_leaves_the_duration_to_the_runtime() {
        let o = options(r#"on_conflict = "wait""#).unwrap();
        assert_eq!(o.on_conflict, Some(OnConflict::Wait(None)));
        let o = options(r#"on_conflict = "wait", wait = "3s""#).unwrap();
        assert_eq!(o.on_conflict, Some(OnConflict::Wait(Some(3_000))));
    }

    #[test]
    fn storing_retry_inviting_responses_needs_a_cache_that_keeps_errors() {
        assert!(error(r#"cache = "success", retry_inviting = "store""#)
            .starts_with("`retry_inviting = \"store\"` has no effect with `cache = \"success\"`"));
        assert!(options(r#"cache = "success", retry_inviting = "release""#).is_ok());
        assert!(options(r#"cache = "non_server_error", retry_inviting = "store""#).is_ok());
        assert!(options(r#"retry_inviting = "store""#).is_ok());
    }

    #[test]
    fn state_is_a_concrete_type_for_axum() {
        assert!(options(r#"state = &'static str"#).is_ok());
        assert!(options(r#"state = ()"#).is_ok());
        for bad in ["_", "Arc<_>", "impl Clone", "Self"] {
            assert!(
                error(&format!("state = {bad}")).starts_with("`state` expects a concrete type"),
                "{bad}"
            );
        }
        let errors = options_for("state = AppState", Framework::Actix)
            .err()
            .unwrap();
        assert_eq!(
            errors,
            ["`state` is for axum handlers: actix-web extractors take no state type; remove `state`"]
        );
    }

    #[test]
    fn lease_against_a_default_ttl_is_left_to_a_compile_time_check() {
        let check = options(r#"lease = "2d""#).unwrap().lease_check.unwrap();
        assert!(check
            .message
            .starts_with("`lease` (2d) is longer than the default `ttl`"));
        let check = options(r#"ttl = "10s""#).unwrap().lease_check.unwrap();
        assert!(check
            .message
            .starts_with("`ttl` (10s) is shorter than the default `lease`"));
        assert!(check.message.ends_with("e.g. `lease = \"10s\"`"));
        // Both written: decided here. Neither: the defaults agree.
        assert!(options(r#"ttl = "1h", lease = "1m""#)
            .unwrap()
            .lease_check
            .is_none());
        assert!(options("").unwrap().lease_check.is_none());
    }

    #[test]
    fn lease_longer_than_ttl_both_written() {
        assert_eq!(
            error(r#"ttl = "30m", lease = "1h""#),
            "`lease` (1h) is longer than `ttl` (30m): a claim must not outlive the record it protects; shorten `lease` or lengthen `ttl`"
        );
    }

    #[test]
    fn lease_and_ttl_are_at_least_one_second() {
        assert!(error(r#"lease = "999ms""#).starts_with("`lease` must be at least 1s"));
        assert!(error(r#"ttl = "500ms""#).starts_with("`ttl` must be at least 1s"));
        // One error for a short TTL, not also "shorten `lease`".
        assert!(error(r#"ttl = "500ms", lease = "1s""#).starts_with("`ttl` must be at least 1s"));
        assert!(options(r#"ttl = "1s", lease = "1s""#).is_ok());
    }

    #[test]
    fn invalid_values_name_what_is_accepted() {
        assert_eq!(
            error(r#"on_conflict = "queue""#),
            "invalid `on_conflict` \"queue\": expected \"reject\" or \"wait\""
        );
        assert!(error(r#"scope = "pay ments""#)
            .starts_with("invalid `scope` \"pay ments\": expected 1 to 100"));
        assert!(error(&format!("scope = \"{}\"", "a".repeat(101))).starts_with("invalid `scope`"));
        assert!(error(r#"cache = "2xx""#).starts_with("invalid `cache`"));
        assert_eq!(
            error(r#"retry_inviting = "keep""#),
            "invalid `retry_inviting` \"keep\": expected \"release\" or \"store\""
        );
        assert!(error(r#"header = "Idempotency Key""#).starts_with("invalid `header`"));
        assert!(error(r#"wait = "5s""#).starts_with("`wait` requires `on_conflict = \"wait\"`"));
    }

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
