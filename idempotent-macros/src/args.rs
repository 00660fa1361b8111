//! Parsing `#[idempotent(name = value, ...)]`.
//!
//! One table, [`ARGUMENTS`], says everything about an argument: its name,
//! what its value is, an example, the values it accepts, which doors take it,
//! its default and what it means. The parse below, the examples in error
//! messages and the attribute reference (`doc/arguments.md`, checked against
//! the table by a test) all read it. Adding an argument is a row here, its
//! rule in `valid.rs` and its setter in the expansion.
//!
//! This module imports nothing from the rest of the crate: the others import
//! it.

use proc_macro2::Span;
use syn::parse::discouraged::Speculative;
use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Path, Token, Type};

/// What the attribute is on, and so which arguments it takes and what it
/// generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Door {
    /// An axum 0.8 handler.
    Axum,
    /// An actix-web 4 handler.
    Actix,
    /// Any `async fn` returning `Result`: the key is an expression.
    Function,
    /// A unary method of a tonic service.
    Tonic,
}

impl Door {
    /// Every door, in the order of the reference's columns.
    pub(crate) const ALL: [Door; 4] = [Door::Axum, Door::Actix, Door::Function, Door::Tonic];

    /// What the attribute is on, for messages: "axum handlers".
    pub(crate) fn items(self) -> &'static str {
        match self {
            Door::Axum => "axum handlers",
            Door::Actix => "actix-web handlers",
            Door::Function => "functions",
            Door::Tonic => "tonic methods",
        }
    }

    /// The column title in the reference.
    #[cfg(test)]
    fn column(self) -> &'static str {
        match self {
            Door::Axum => "axum",
            Door::Actix => "actix-web",
            Door::Function => "fn",
            Door::Tonic => "tonic",
        }
    }
}

/// What an argument's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string literal.
    Str,
    /// `true` or `false`.
    Bool,
    /// A header name (a string literal) or the path of a function.
    StrOrPath,
    /// Any expression.
    Expr,
    /// A type.
    Type,
}

/// One row of the table.
pub(crate) struct Argument {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// A value, as written: in "as in `ttl = "24h"`" and in the reference.
    pub(crate) example: &'static str,
    /// For a string with a fixed set of values: the values.
    pub(crate) values: &'static [&'static str],
    /// What the value must be, for "`x` expects …" when it is of the wrong
    /// kind; empty: derived from `kind`, `example` and `values`.
    pub(crate) expects: &'static str,
    /// The doors that take it.
    pub(crate) doors: &'static [Door],
    /// The default, for the reference.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) default: &'static str,
    /// What it does, for the reference.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) meaning: &'static str,
}

const HTTP_AND_TONIC: &[Door] = &[Door::Axum, Door::Actix, Door::Tonic];
const ALL: &[Door] = &Door::ALL;

/// Every argument of `#[idempotent]`.
pub(crate) const ARGUMENTS: &[Argument] = &[
    Argument {
        name: "header",
        kind: Kind::Str,
        example: "\"Idempotency-Key\"",
        values: &[],
        expects: "",
        doors: HTTP_AND_TONIC,
        default: "`\"Idempotency-Key\"`",
        meaning: "the request header (tonic: metadata key) carrying the key; a valid header name",
    },
    Argument {
        name: "key",
        kind: Kind::Expr,
        example: "order.id",
        values: &[],
        expects: "",
        doors: &[Door::Function, Door::Tonic],
        default: "functions: required; tonic: the `header`",
        meaning: "the key, as an expression over the arguments (`order.id`, `format!(\"{}:{}\", m.tenant, m.id)`, `request.get_ref().request_id`): a string, bytes or an integer, checked as keys are",
    },
    Argument {
        name: "ttl",
        kind: Kind::Str,
        example: "\"24h\"",
        values: &[],
        expects: "",
        doors: ALL,
        default: "`\"24h\"`",
        meaning: "how long a completed result is kept and replayed (`500ms`, `90s`, `15m`, `24h`, `7d`); at least the shortest lease, 1 s",
    },
    Argument {
        name: "scope",
        kind: Kind::Str,
        example: "\"payments\"",
        values: &[],
        expects: "",
        doors: ALL,
        default: "the function's name (tonic: the method's full gRPC path)",
        meaning: "namespace of keys: the same key under two scopes is two records. Set it explicitly: with the default, renaming the function silently resets idempotency",
    },
    Argument {
        name: "required",
        kind: Kind::Bool,
        example: "false",
        values: &[],
        expects: "",
        doors: HTTP_AND_TONIC,
        default: "`true`",
        meaning: "a request without the key: `true` refuses it (400, tonic `INVALID_ARGUMENT`); `false` runs the handler without idempotency",
    },
    Argument {
        name: "lease",
        kind: Kind::Str,
        example: "\"30s\"",
        values: &[],
        expects: "",
        doors: ALL,
        default: "`\"30s\"`",
        meaning: "how long a claim lives without renewal (crash recovery); renewed every `lease / 3` while the function runs; at least 1 s, at most `ttl`",
    },
    Argument {
        name: "on_conflict",
        kind: Kind::Str,
        example: "\"wait\"",
        values: &["reject", "wait"],
        expects: "",
        doors: ALL,
        default: "`\"reject\"`",
        meaning: "a duplicate arriving while the first runs: `reject` refuses it (409 with `Retry-After`, tonic `ABORTED`, a function's in-progress error); `wait` waits for the first to finish and replays its result",
    },
    Argument {
        name: "wait",
        kind: Kind::Str,
        example: "\"10s\"",
        values: &[],
        expects: "",
        doors: ALL,
        default: "`\"10s\"`",
        meaning: "with `on_conflict = \"wait\"` only: how long to wait before refusing",
    },
    Argument {
        name: "cache",
        kind: Kind::Str,
        example: "\"success\"",
        values: &["all", "success", "non_server_error"],
        expects: "",
        doors: ALL,
        default: "`\"all\"`; functions: `\"success\"`",
        meaning: "which results are stored: `all`, `success` (2xx, tonic `OK`, a function's `Ok`), `non_server_error` (HTTP and tonic: all but 5xx); a result not stored frees the key, so a retry runs again. A function with `cache = \"all\"` stores its `Err` too",
    },
    Argument {
        name: "retry_inviting",
        kind: Kind::Str,
        example: "\"store\"",
        values: &["release", "store"],
        expects: "",
        doors: HTTP_AND_TONIC,
        default: "`\"release\"`",
        meaning: "an answer that invites a retry (408, 425, 429, 502, 503, 504 or `Retry-After`; tonic `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `ABORTED`, `DEADLINE_EXCEEDED`, `CANCELLED`): `release` does not store it and frees the key; `store` stores it like any other answer `cache` keeps",
    },
    Argument {
        name: "replay_header",
        kind: Kind::Str,
        example: "\"Idempotent-Replayed\"",
        values: &[],
        expects: "",
        doors: HTTP_AND_TONIC,
        default: "`\"Idempotent-Replayed\"`",
        meaning: "header (tonic: metadata key) set to `true` on replayed answers",
    },
    Argument {
        name: "principal",
        kind: Kind::StrOrPath,
        example: "\"X-Api-Key\"",
        values: &[],
        expects: "a header name like \"X-Api-Key\" or the path of a function `fn(&RequestHead<'_>) -> Option<String>`",
        doors: HTTP_AND_TONIC,
        default: "none",
        meaning: "who keys belong to: a header name or a function of the request head; a result is never replayed to another principal, and a request whose principal cannot be read is refused",
    },
    Argument {
        name: "state",
        kind: Kind::Type,
        example: "AppState",
        values: &[],
        expects: "a type like `AppState`: the state of the `Router` this handler is routed in",
        doors: &[Door::Axum],
        default: "the `T` of the handler's `State<T>` argument",
        meaning: "the state type of the `Router` the handler is routed in, which its arguments are checked against where the handler is defined",
    },
    Argument {
        name: "fingerprint",
        kind: Kind::Expr,
        example: "order.lines",
        values: &[],
        expects: "",
        doors: &[Door::Function],
        default: "every argument but the receiver, the `store` and the `Tx`",
        meaning: "what must be equal for a retry to be the same call: a serializable expression over the arguments, or `false` for no payload check (any reuse of the key replays)",
    },
    Argument {
        name: "store",
        kind: Kind::Expr,
        example: "self.idempotency",
        values: &[],
        expects: "",
        doors: &[Door::Function, Door::Tonic],
        default: "the process-wide memory store (tonic: the one a layer installed)",
        meaning: "the `Idempotency` to use: an expression over the arguments or `self` giving an `Idempotency`, `&Idempotency` or `Arc<Idempotency>`",
    },
];

impl Argument {
    /// The row named `name`.
    pub(crate) fn named(name: &str) -> Option<&'static Argument> {
        ARGUMENTS.iter().find(|a| a.name == name)
    }

    /// Whether `door` takes it.
    pub(crate) fn takes(&self, door: Door) -> bool {
        self.doors.contains(&door)
    }

    /// "`x` expects …": what its value must be.
    pub(crate) fn expects(&self) -> String {
        if !self.expects.is_empty() {
            return self.expects.to_owned();
        }
        match (self.kind, self.values) {
            (Kind::Bool, _) => "`true` or `false`".into(),
            (Kind::Str, []) => format!("a string literal like {}", self.example),
            (Kind::Str, values) => format!("a string literal: {}", one_of(values)),
            _ => format!("an expression like `{}`", self.example),
        }
    }
}

/// `"a", "b" or "c"`.
pub(crate) fn one_of(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// A value as parsed, of the argument's [`Kind`].
pub(crate) enum Value {
    Str(LitStr),
    Bool(LitBool),
    Path(Path),
    Expr(Expr),
    Type(Type),
}

/// One argument as written: its keyword (where "specified more than once"
/// and "not for …" land), its row and its value.
pub(crate) struct Arg {
    pub(crate) key: Ident,
    pub(crate) spec: &'static Argument,
    pub(crate) value: Value,
}

impl Arg {
    /// The span of the value (where "invalid value" lands).
    pub(crate) fn span(&self) -> Span {
        match &self.value {
            Value::Str(s) => s.span(),
            Value::Bool(b) => b.span(),
            Value::Path(p) => p.span(),
            Value::Expr(e) => e.span(),
            Value::Type(t) => t.span(),
        }
    }
}

/// The arguments as written, in order, and what was wrong with them.
pub(crate) struct Args {
    pub(crate) given: Vec<Arg>,
    /// Problems found while parsing; parsing goes on so all are reported.
    pub(crate) errors: Vec<syn::Error>,
    /// Which door they are for (unknown names are listed per door).
    door: Door,
}

impl Args {
    /// No arguments, for `door`.
    pub(crate) fn empty(door: Door) -> Self {
        Args {
            given: Vec::new(),
            errors: Vec::new(),
            door,
        }
    }

    /// Parses the attribute's arguments for `door`. On a syntax error, fails
    /// with it and with every error found before it: what follows cannot be
    /// read, so the rules between arguments are not checked.
    pub(crate) fn parse(attr: proc_macro2::TokenStream, door: Door) -> syn::Result<Self> {
        let parser = |input: ParseStream<'_>| {
            let mut args = Args::empty(door);
            match args.parse_all(input) {
                Ok(()) => Ok(args),
                Err(syntax) => {
                    let mut errors = std::mem::take(&mut args.errors);
                    errors.push(syntax);
                    let mut all = errors.remove(0);
                    for e in errors {
                        all.combine(e);
                    }
                    Err(all)
                }
            }
        };
        syn::parse::Parser::parse2(parser, attr)
    }

    /// The argument `name`, if written.
    pub(crate) fn get(&self, name: &str) -> Option<&Arg> {
        self.given.iter().find(|a| a.spec.name == name)
    }

    fn parse_all(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        while !input.is_empty() {
            let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            let spec = Argument::named(&key.to_string());
            input.parse::<Token![=]>().map_err(|e| {
                let example = spec.map_or("...", |s| s.example);
                syn::Error::new(
                    e.span(),
                    format!("expected `=` after `{key}`, as in `{key} = {example}`"),
                )
            })?;
            match spec {
                Some(spec) => {
                    if let Some(value) = self.value(input, &key, spec)? {
                        if self.get(spec.name).is_some() {
                            self.errors.push(syn::Error::new(
                                key.span(),
                                format!("`{key}` specified more than once"),
                            ));
                        } else {
                            self.given.push(Arg { key, spec, value });
                        }
                    }
                }
                None => {
                    // The value is read, so that parsing goes on after it.
                    input.parse::<Expr>()?;
                    self.errors.push(self.unknown(&key));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    }

    /// `unknown argument `x`; expected one of …` (those the door takes).
    fn unknown(&self, key: &Ident) -> syn::Error {
        let names: Vec<String> = ARGUMENTS
            .iter()
            .filter(|a| a.takes(self.door))
            .map(|a| format!("`{}`", a.name))
            .collect();
        syn::Error::new(
            key.span(),
            format!(
                "unknown argument `{key}`; expected one of {}",
                names.join(", ")
            ),
        )
    }

    /// Reads a value of `spec`'s kind. `Ok(None)`: a value of the wrong kind,
    /// reported, and parsing goes on after it; `Err`: a syntax error.
    fn value(
        &mut self,
        input: ParseStream<'_>,
        key: &Ident,
        spec: &'static Argument,
    ) -> syn::Result<Option<Value>> {
        let wrong =
            |span: Span| syn::Error::new(span, format!("`{key}` expects {}", spec.expects()));
        if spec.kind == Kind::Type {
            // A type, or (reported) an expression that is not one.
            let fork = input.fork();
            if let Ok(ty) = fork.parse::<Type>() {
                input.advance_to(&fork);
                return Ok(Some(Value::Type(ty)));
            }
            return match input.parse::<Expr>() {
                Ok(value) => {
                    self.errors.push(wrong(value.span()));
                    Ok(None)
                }
                Err(e) => Err(wrong(e.span())),
            };
        }
        let value: Expr = input.parse()?;
        let parsed = match (spec.kind, value) {
            (Kind::Expr, value) => Some(Value::Expr(value)),
            (
                Kind::Str | Kind::StrOrPath,
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }),
            ) => Some(Value::Str(s)),
            (
                Kind::Bool,
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }),
            ) => Some(Value::Bool(b)),
            (Kind::StrOrPath, Expr::Path(p)) if p.qself.is_none() => Some(Value::Path(p.path)),
            (_, other) => {
                self.errors.push(wrong(other.span()));
                None
            }
        };
        Ok(parsed)
    }
}

/// Whether the arguments name a `key` (the function form's mark, for the
/// crate-root attribute that serves both functions and handlers).
pub(crate) fn names_key(attr: &proc_macro2::TokenStream) -> bool {
    let mut tokens = attr.clone().into_iter().peekable();
    let mut at_start = true;
    while let Some(t) = tokens.next() {
        match &t {
            proc_macro2::TokenTree::Ident(i) if at_start && i == "key" => {
                if matches!(tokens.peek(), Some(proc_macro2::TokenTree::Punct(p)) if p.as_char() == '=')
                {
                    return true;
                }
            }
            _ => {}
        }
        at_start = matches!(&t, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',');
    }
    false
}

/// The reference table of the arguments, as `doc/arguments.md` holds it
/// (written by the test that checks it).
#[cfg(test)]
pub(crate) fn reference() -> String {
    let mut out = String::from("| argument | default | meaning |");
    for door in Door::ALL {
        out.push_str(&format!(" {} |", door.column()));
    }
    out.push_str("\n|---|---|---|");
    for _ in Door::ALL {
        out.push_str(":-:|");
    }
    out.push('\n');
    for a in ARGUMENTS {
        out.push_str(&format!(
            "| `{} = {}` | {} | {} |",
            a.name,
            a.example.replace('|', "\\|"),
            a.default,
            a.meaning.replace('|', "\\|")
        ));
        for door in Door::ALL {
            out.push_str(if a.takes(door) { " ✓ |" } else { " |" });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(attr: &str) -> Vec<String> {
        errors_for(attr, Door::Axum)
    }

    fn errors_for(attr: &str, door: Door) -> Vec<String> {
        match Args::parse(attr.parse().unwrap(), door) {
            Ok(args) => args.errors.iter().map(ToString::to_string).collect(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_argument_is_taken_by_a_door_and_named_once() {
        for (i, a) in ARGUMENTS.iter().enumerate() {
            assert!(!a.doors.is_empty(), "{}", a.name);
            assert!(
                ARGUMENTS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
            assert!(!a.example.is_empty() && !a.meaning.is_empty(), "{}", a.name);
        }
    }

    /// The reference on the macro items is this table, rendered: run with
    /// `UPDATE_REFERENCE=1` to write it after changing the table.
    #[test]
    fn the_reference_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/arguments.md");
        let written = std::fs::read_to_string(path).unwrap_or_default();
        let start = written.find("| argument |").unwrap_or(written.len());
        let expected = format!("{}{}", &written[..start], reference());
        if std::env::var_os("UPDATE_REFERENCE").is_some() {
            std::fs::write(path, &expected).unwrap();
        } else {
            assert_eq!(
                written, expected,
                "doc/arguments.md is out of date: run `UPDATE_REFERENCE=1 cargo test -p idempotent-macros`"
            );
        }
    }

    #[test]
    fn a_missing_equals_sign_shows_the_argument_written_out() {
        assert_eq!(
            errors(r#"ttl "24h""#),
            ["expected `=` after `ttl`, as in `ttl = \"24h\"`"]
        );
        assert_eq!(
            errors(r#"on_conflict "wait""#),
            ["expected `=` after `on_conflict`, as in `on_conflict = \"wait\"`"]
        );
        assert_eq!(
            errors(r#"tll "24h""#),
            ["expected `=` after `tll`, as in `tll = ...`"]
        );
    }

    #[test]
    fn a_syntax_error_keeps_the_errors_found_before_it() {
        let errors = errors(r#"headr = "x", ttl = 24, scope "payments""#);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("unknown argument `headr`"));
        assert!(errors[1].starts_with("`ttl` expects a string literal"));
        assert!(errors[2].starts_with("expected `=` after `scope`"));
    }

    #[test]
    fn unknown_arguments_list_what_the_door_takes() {
        let axum = &errors("kee = 1")[0];
        assert!(
            axum.contains("`header`") && axum.contains("`state`"),
            "{axum}"
        );
        assert!(!axum.contains("`key`"), "{axum}");
        let function = &errors_for("kee = 1", Door::Function)[0];
        assert!(function.contains("`key`") && function.contains("`store`"));
        assert!(!function.contains("`header`"), "{function}");
    }

    #[test]
    fn values_of_the_wrong_kind_say_what_is_expected() {
        assert_eq!(
            errors(r#"on_conflict = wait, required = "no""#),
            [
                "`on_conflict` expects a string literal: \"reject\" or \"wait\"",
                "`required` expects `true` or `false`"
            ]
        );
        assert_eq!(
            errors("principal = 5"),
            ["`principal` expects a header name like \"X-Api-Key\" or the path of a function `fn(&RequestHead<'_>) -> Option<String>`"]
        );
    }

    #[test]
    fn state_takes_a_type_and_a_value_that_is_not_one_is_reported() {
        let args = Args::parse(
            r#"state = Arc<AppState>, scope = "s""#.parse().unwrap(),
            Door::Axum,
        )
        .unwrap();
        let Value::Type(ty) = &args.get("state").unwrap().value else {
            panic!("not a type")
        };
        assert_eq!(quote::quote!(#ty).to_string(), "Arc < AppState >");
        assert!(args.get("scope").is_some());
        let not_a_type = "`state` expects a type like `AppState`: the state of the `Router` this handler is routed in";
        // An expression: reported, and parsing goes on.
        assert_eq!(
            errors(r#"state = "AppState", ttl = 24"#),
            [not_a_type, "`ttl` expects a string literal like \"24h\""]
        );
        // Neither a type nor an expression: a syntax error.
        assert_eq!(errors("state = ,"), [not_a_type]);
        assert_eq!(
            errors("state = A, state = B"),
            ["`state` specified more than once"]
        );
    }

    #[test]
    fn expressions_are_kept_as_written() {
        let args = Args::parse(
            r#"key = format!("{}:{}", m.tenant, m.id), store = self.idempotency"#
                .parse()
                .unwrap(),
            Door::Function,
        )
        .unwrap();
        assert!(args.errors.is_empty());
        assert!(matches!(args.get("key").unwrap().value, Value::Expr(_)));
        assert!(matches!(args.get("store").unwrap().value, Value::Expr(_)));
    }

    #[test]
    fn repetitions_are_reported_and_parsing_goes_on() {
        let errors = errors(r#"ttl = "1h", ttl = "2h", required = "no""#);
        assert_eq!(
            errors,
            [
                "`ttl` specified more than once",
                "`required` expects `true` or `false`"
            ]
        );
    }

    #[test]
    fn the_function_form_is_told_by_its_key() {
        let names = |s: &str| names_key(&s.parse().unwrap());
        assert!(names("key = order.id"));
        assert!(names(r#"scope = "s", key = m.key, ttl = "1h""#));
        assert!(!names(r#"scope = "key""#));
        assert!(!names("fingerprint = key"));
        assert!(!names("header = \"k\""));
    }

    #[test]
    fn values_are_listed_in_prose() {
        assert_eq!(one_of(&["a"]), "\"a\"");
        assert_eq!(one_of(&["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(one_of(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
