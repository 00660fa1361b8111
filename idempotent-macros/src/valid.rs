//! Rules, in two stages: each argument on its own (is it for this door, is
//! its value valid), then the rules between arguments, each error naming
//! its fix.
//!
//! Options the user did not write stay `None`: the runtime's
//! `HandlerConfig::new` holds the defaults, and the macro emits only the
//! setters written. A rule that involves a value defined by the runtime (the
//! shortest lease, a default) is not decided here but emitted as a
//! [`ConstCheck`], which the expansion turns into a `const` evaluated over
//! the runtime's definition, failing on the written token.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Expr, ExprLit, Lit, LitStr, Path, Type};

use crate::args::{one_of, Arg, Args, Door, Value};
use crate::item::{mentions, ItemFn};

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
    /// Functions and tonic: the key's expression.
    pub(crate) key: Option<Expr>,
    /// Functions: what the fingerprint covers.
    pub(crate) fingerprint: Option<Fingerprint>,
    /// Functions and tonic: the runtime's expression.
    pub(crate) store: Option<Expr>,
    /// Rules over the runtime's definitions, checked at compile time.
    pub(crate) const_checks: Vec<ConstCheck>,
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

/// What a function's fingerprint covers.
pub(crate) enum Fingerprint {
    /// This expression's value.
    Of(Expr),
    /// Nothing: `fingerprint = false`.
    Off,
}

/// A rule decided at compile time over what the runtime defines:
/// `const _: () = assert!(<check>(<options>), <message>)`, failing on `span`.
pub(crate) struct ConstCheck {
    pub(crate) span: Span,
    pub(crate) rule: Rule,
    pub(crate) message: String,
}

pub(crate) enum Rule {
    /// The written duration (ms) is at least the runtime's `MIN_LEASE`.
    AtLeastMinLease(u64),
    /// The built options' lease does not outlive their TTL (one of the two
    /// is the runtime's default). Not checked when the written TTL (ms) is
    /// already below the shortest lease, which is the one error then.
    LeaseWithinTtl { ttl_ms: Option<u64> },
}

/// The shortest duration accepted for `lease` and `ttl` is the runtime's
/// `MIN_LEASE`; this is only how it is named in messages.
const MIN_LEASE_NAME: &str = "`idempotent_runtime::MIN_LEASE`";

pub(crate) fn validate(args: Args, door: Door, item: &ItemFn) -> Result<Options, Vec<syn::Error>> {
    let mut v = Validation {
        errors: Vec::new(),
        door,
    };
    for arg in &args.given {
        if !arg.spec.takes(door) {
            v.errors.push(not_for(arg, door));
        }
    }
    let mut opts = v.each(&args);
    v.between(&args, &mut opts, item);
    let mut errors = args.errors;
    errors.extend(v.errors);
    if errors.is_empty() {
        Ok(opts)
    } else {
        Err(errors)
    }
}

struct Validation {
    errors: Vec<syn::Error>,
    door: Door,
}

/// "`x` is for …, not for …", with the way to do it on this door.
fn not_for(arg: &Arg, door: Door) -> syn::Error {
    let name = arg.spec.name;
    let hint = match (name, door) {
        ("header" | "required", Door::Function) => {
            "; a function's key is an expression over its arguments: `key = order.id`"
        }
        ("key", Door::Axum | Door::Actix) => {
            "; an HTTP handler reads its key from the request header named by `header`"
        }
        ("state", Door::Actix) => "; actix-web extractors take no state type; remove `state`",
        ("fingerprint", Door::Tonic) => {
            "; a tonic method's fingerprint is its request message's protobuf encoding"
        }
        ("store", Door::Axum) => "; install the store with `IdempotencyLayer`",
        ("store", Door::Actix) => "; install the store as app data: `.app_data(idempotency.clone())`",
        ("replay_header" | "retry_inviting" | "principal", Door::Function) => {
            "; remove it (a function can tell a replay with `idempotent_runtime::function::observe`, and scopes its keys through `key`)"
        }
        _ => "; remove it",
    };
    let doors: Vec<&str> = Door::ALL
        .iter()
        .filter(|d| arg.spec.takes(**d))
        .map(|d| d.items())
        .collect();
    let doors = match doors.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => doors.concat(),
    };
    syn::Error::new(
        arg.key.span(),
        format!("`{name}` is for {doors}, not for {}{hint}", door.items()),
    )
}

impl Validation {
    fn note<T>(&mut self, r: syn::Result<T>) -> Option<T> {
        r.map_err(|e| self.errors.push(e)).ok()
    }

    /// Each argument on its own.
    fn each(&mut self, args: &Args) -> Options {
        let header = string(args, "header").and_then(|s| self.note(header_name(s, "header")));
        let replay_header =
            string(args, "replay_header").and_then(|s| self.note(header_name(s, "replay_header")));
        let ttl_ms = string(args, "ttl").and_then(|s| self.note(duration(s, "ttl")));
        let lease_ms = string(args, "lease").and_then(|s| self.note(duration(s, "lease")));
        let wait_ms = string(args, "wait").and_then(|s| self.note(duration(s, "wait")));
        let scope = string(args, "scope").and_then(|s| self.note(scope(s)));
        let waits = self.choice(args, "on_conflict").map(|c| c == "wait");
        let cache = self.choice(args, "cache").map(|c| match c.as_str() {
            "all" => Cache::All,
            "success" => Cache::Success,
            _ => Cache::NonServerError,
        });
        let retry_inviting = self
            .choice(args, "retry_inviting")
            .map(|c| match c.as_str() {
                "store" => RetryInviting::Store,
                _ => RetryInviting::Release,
            });
        let required = args.get("required").and_then(|a| match &a.value {
            Value::Bool(b) => Some(b.value),
            _ => None,
        });
        let principal = args.get("principal").and_then(|a| match &a.value {
            Value::Str(h) => self
                .note(header_name(h, "principal"))
                .map(|h| (Principal::Header(h), a.span())),
            Value::Path(p) => Some((Principal::Function(p.clone()), a.span())),
            _ => None,
        });
        let state = args.get("state").and_then(|a| match &a.value {
            Value::Type(t) => self.note(state(t)),
            _ => None,
        });
        let fingerprint = expr(args, "fingerprint").map(|e| match e {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }) if !b.value => Fingerprint::Off,
            e => Fingerprint::Of(e.clone()),
        });
        Options {
            header,
            ttl_ms,
            scope,
            required,
            lease_ms,
            on_conflict: waits.map(|w| {
                if w {
                    OnConflict::Wait(wait_ms)
                } else {
                    OnConflict::Reject
                }
            }),
            cache,
            retry_inviting,
            replay_header,
            principal,
            state,
            key: expr(args, "key").cloned(),
            fingerprint,
            store: expr(args, "store").cloned(),
            const_checks: Vec::new(),
        }
    }

    /// The value of a string argument with a fixed set of values.
    fn choice(&mut self, args: &Args, name: &str) -> Option<String> {
        let arg = args.get(name)?;
        let Value::Str(s) = &arg.value else {
            return None;
        };
        let value = s.value();
        if arg.spec.values.contains(&value.as_str()) {
            Some(value)
        } else {
            self.errors.push(syn::Error::new(
                s.span(),
                format!(
                    "invalid `{name}` {value:?}: expected {}",
                    one_of(arg.spec.values)
                ),
            ));
            None
        }
    }

    /// The rules between arguments, and between arguments and the item.
    fn between(&mut self, args: &Args, opts: &mut Options, item: &ItemFn) {
        self.durations(args, opts);
        if let Some(w) = args.get("wait") {
            // An invalid `on_conflict` is reported on its own.
            let mode_invalid = args.get("on_conflict").is_some() && opts.on_conflict.is_none();
            if !mode_invalid && !matches!(opts.on_conflict, Some(OnConflict::Wait(_))) {
                self.errors.push(syn::Error::new(
                    w.span(),
                    "`wait` requires `on_conflict = \"wait\"`; add it, or remove `wait`",
                ));
            }
        }
        if let (Some(r), Some(Cache::Success), Some(RetryInviting::Store)) =
            (args.get("retry_inviting"), opts.cache, opts.retry_inviting)
        {
            self.errors.push(syn::Error::new(
                r.span(),
                "`retry_inviting = \"store\"` has no effect with `cache = \"success\"`, which stores no 4xx or 5xx response; use `cache = \"all\"` or `cache = \"non_server_error\"`, or remove `retry_inviting`",
            ));
        }
        match self.door {
            Door::Function => self.function(args, opts, item),
            Door::Tonic => {
                if let (Some(h), Some(_)) = (args.get("header"), args.get("key")) {
                    self.errors.push(syn::Error::new(
                        h.key.span(),
                        "give `header` or `key`, not both: the key comes either from the request's metadata (`header`) or from the request message (`key`)",
                    ));
                }
                self.key_names_an_argument(args, item);
            }
            Door::Axum | Door::Actix => {}
        }
    }

    /// A lease is at least the runtime's shortest, and so is a TTL, which no
    /// lease may outlive.
    fn durations(&mut self, args: &Args, opts: &mut Options) {
        for (name, ms) in [("ttl", opts.ttl_ms), ("lease", opts.lease_ms)] {
            if let (Some(arg), Some(ms)) = (args.get(name), ms) {
                opts.const_checks.push(ConstCheck {
                    span: arg.span(),
                    rule: Rule::AtLeastMinLease(ms),
                    message: if name == "ttl" {
                        format!("`ttl` ({}) is shorter than the shortest lease, {MIN_LEASE_NAME}: a claim must not outlive the record it protects; lengthen `ttl`", written(arg))
                    } else {
                        format!("`lease` ({}) is shorter than the shortest lease, {MIN_LEASE_NAME} (renewals run every lease/3); lengthen `lease`", written(arg))
                    },
                });
            }
        }
        match (args.get("lease"), opts.lease_ms, args.get("ttl"), opts.ttl_ms) {
            (Some(l), Some(lease_ms), Some(t), Some(ttl_ms)) if lease_ms > ttl_ms => {
                self.errors.push(syn::Error::new(
                    l.span(),
                    format!(
                        "`lease` ({}) is longer than `ttl` ({}): a claim must not outlive the record it protects; shorten `lease` or lengthen `ttl`",
                        written(l),
                        written(t)
                    ),
                ));
            }
            (Some(l), Some(_), None, _) => opts.const_checks.push(ConstCheck {
                span: l.span(),
                rule: Rule::LeaseWithinTtl { ttl_ms: None },
                message: format!(
                    "`lease` ({0}) is longer than the default `ttl`: a claim must not outlive the record it protects; shorten `lease` or add a `ttl` at least as long, e.g. `ttl = \"{0}\"`",
                    written(l)
                ),
            }),
            (None, _, Some(t), Some(ttl_ms)) => opts.const_checks.push(ConstCheck {
                span: t.span(),
                rule: Rule::LeaseWithinTtl {
                    ttl_ms: Some(ttl_ms),
                },
                message: format!(
                    "`ttl` ({0}) is shorter than the default `lease`: a claim must not outlive the record it protects; add a shorter `lease`, e.g. `lease = \"{0}\"`",
                    written(t)
                ),
            }),
            // Both written and in order, neither written (the defaults agree),
            // or one invalid and already reported.
            _ => {}
        }
    }

    /// A function names its key; it keeps its `Ok` (and with `cache =
    /// "all"` its `Err`), which no status sorts further.
    fn function(&mut self, args: &Args, opts: &Options, item: &ItemFn) {
        if args.get("key").is_none() {
            self.errors.push(syn::Error::new(
                Span::call_site(),
                "`#[idempotent]` on a function needs its key: add `key = <expression over the arguments>`, e.g. `key = order.id`",
            ));
        }
        if let (Some(c), Some(Cache::NonServerError)) = (args.get("cache"), opts.cache) {
            self.errors.push(syn::Error::new(
                c.span(),
                "a function stores its `Ok` (`cache = \"success\"`, the default) or also its `Err` (`cache = \"all\"`); `non_server_error` is for HTTP and tonic answers",
            ));
        }
        self.key_names_an_argument(args, item);
    }

    /// A `key` expression reads the arguments (or `self`): a constant key
    /// would make every call the same call.
    fn key_names_an_argument(&mut self, args: &Args, item: &ItemFn) {
        let Some(key) = args.get("key") else {
            return;
        };
        let tokens = match &key.value {
            Value::Expr(e) => e.to_token_stream(),
            _ => return,
        };
        let names = item.arg_names();
        if !names.iter().any(|n| mentions(tokens.clone(), n)) {
            let names = names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let names = if names.is_empty() {
                "none".to_owned()
            } else {
                names
            };
            self.errors.push(syn::Error::new(
                key.span(),
                format!("`key` names no argument of the function ({names}): every call would have the same key; derive it from the arguments, e.g. `key = order.id`"),
            ));
        }
    }
}

/// A string argument's literal, if written as one.
fn string<'a>(args: &'a Args, name: &str) -> Option<&'a LitStr> {
    match &args.get(name)?.value {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// An expression argument, if written.
fn expr<'a>(args: &'a Args, name: &str) -> Option<&'a Expr> {
    match &args.get(name)?.value {
        Value::Expr(e) => Some(e),
        _ => None,
    }
}

/// A string argument's value as written, for messages.
fn written(arg: &Arg) -> String {
    match &arg.value {
        Value::Str(s) => s.value(),
        _ => String::new(),
    }
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

/// The axum state: a type that can be named in the checks.
fn state(ty: &Type) -> syn::Result<Type> {
    let tokens = ty.to_token_stream();
    if ["_", "impl", "Self"]
        .iter()
        .any(|word| mentions(tokens.clone(), word))
    {
        return Err(syn::Error::new_spanned(
            ty,
            "`state` expects a concrete type like `AppState`, without `_`, `impl` or `Self`: the state of the `Router` this handler is routed in",
        ));
    }
    Ok(ty.clone())
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

fn duration(lit: &LitStr, arg: &str) -> syn::Result<u64> {
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
mod tests;
