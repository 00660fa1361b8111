//! Parsing `#[idempotent(key = value, ...)]` into one struct, every argument
//! kept with its span so later errors point at the right token.

use proc_macro2::Span;
use syn::parse::discouraged::Speculative;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Path, Token, Type};

pub(crate) const ARGUMENTS: &[&str] = &[
    "header",
    "ttl",
    "scope",
    "required",
    "lease",
    "on_conflict",
    "wait",
    "cache",
    "retry_inviting",
    "replay_header",
    "principal",
    "state",
];

/// A value with the span of its keyword (for "specified more than once") and
/// of itself (for "invalid value").
pub(crate) struct WithSpan<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

pub(crate) enum PrincipalArg {
    Header(LitStr),
    Function(Path),
}

#[derive(Default)]
pub(crate) struct Args {
    pub(crate) header: Option<LitStr>,
    pub(crate) ttl: Option<LitStr>,
    pub(crate) scope: Option<LitStr>,
    pub(crate) required: Option<LitBool>,
    pub(crate) lease: Option<LitStr>,
    pub(crate) on_conflict: Option<LitStr>,
    pub(crate) wait: Option<LitStr>,
    pub(crate) cache: Option<LitStr>,
    pub(crate) retry_inviting: Option<LitStr>,
    pub(crate) replay_header: Option<LitStr>,
    pub(crate) principal: Option<WithSpan<PrincipalArg>>,
    /// The axum state the arguments are checked with, and its keyword (where
    /// `state` on an actix-web handler is reported).
    pub(crate) state: Option<(Ident, Type)>,
    /// Problems found while parsing; parsing goes on so all are reported.
    pub(crate) errors: Vec<syn::Error>,
}

impl Parse for Args {
    /// On a syntax error, fails with it and with every error found before
    /// it: what follows cannot be read, so the rules between arguments are
    /// not checked.
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
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
    }
}

impl Args {
    fn parse_all(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        while !input.is_empty() {
            let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            input.parse::<Token![=]>().map_err(|e| {
                let example = example(&key.to_string()).unwrap_or("...");
                syn::Error::new(
                    e.span(),
                    format!("expected `=` after `{key}`, as in `{key} = {example}`"),
                )
            })?;
            if key == "state" {
                match state_type(input)? {
                    Ok(ty) => {
                        let repeated = set(&mut self.state, &key, (key.clone(), ty));
                        self.errors.extend(repeated);
                    }
                    Err(e) => self.errors.push(e),
                }
            } else {
                let value: Expr = input.parse()?;
                self.accept(key, value);
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    }
}

impl Args {
    fn accept(&mut self, key: Ident, value: Expr) {
        let name = key.to_string();
        let result = match name.as_str() {
            "header" => string(&key, value).map(|v| set(&mut self.header, &key, v)),
            "ttl" => string(&key, value).map(|v| set(&mut self.ttl, &key, v)),
            "scope" => string(&key, value).map(|v| set(&mut self.scope, &key, v)),
            "lease" => string(&key, value).map(|v| set(&mut self.lease, &key, v)),
            "on_conflict" => string(&key, value).map(|v| set(&mut self.on_conflict, &key, v)),
            "wait" => string(&key, value).map(|v| set(&mut self.wait, &key, v)),
            "cache" => string(&key, value).map(|v| set(&mut self.cache, &key, v)),
            "retry_inviting" => {
                string(&key, value).map(|v| set(&mut self.retry_inviting, &key, v))
            }
            "replay_header" => string(&key, value).map(|v| set(&mut self.replay_header, &key, v)),
            "required" => match value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => Ok(set(&mut self.required, &key, b)),
                other => Err(syn::Error::new(
                    other.span(),
                    "`required` expects `true` or `false`",
                )),
            },
            "principal" => match value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Ok(set(
                    &mut self.principal,
                    &key,
                    WithSpan {
                        span: s.span(),
                        value: PrincipalArg::Header(s),
                    },
                )),
                Expr::Path(p) if p.qself.is_none() => Ok(set(
                    &mut self.principal,
                    &key,
                    WithSpan {
                        span: p.span(),
                        value: PrincipalArg::Function(p.path),
                    },
                )),
                other => Err(syn::Error::new(
                    other.span(),
                    "`principal` expects a header name like \"X-Api-Key\" or the path of a function `fn(&RequestHead<'_>) -> Option<String>`",
                )),
            },
            _ => Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown argument `{name}`; expected one of {}",
                    ARGUMENTS
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        };
        match result {
            Ok(Some(e)) | Err(e) => self.errors.push(e),
            Ok(None) => {}
        }
    }
}

/// The value of `state`: a type. A value that reads as an expression but
/// not as a type (a string, say) is an error and parsing goes on after it;
/// one that reads as neither is a syntax error.
fn state_type(input: ParseStream<'_>) -> syn::Result<syn::Result<Type>> {
    let fork = input.fork();
    if let Ok(ty) = fork.parse::<Type>() {
        input.advance_to(&fork);
        return Ok(Ok(ty));
    }
    let message = "`state` expects a type like `AppState`: the state of the `Router` this handler is routed in";
    match input.parse::<Expr>() {
        Ok(value) => Ok(Err(syn::Error::new_spanned(value, message))),
        Err(e) => Err(syn::Error::new(e.span(), message)),
    }
}

/// Stores a value, or reports a repetition on the second keyword.
fn set<T>(slot: &mut Option<T>, key: &Ident, value: T) -> Option<syn::Error> {
    if slot.is_some() {
        return Some(syn::Error::new(
            key.span(),
            format!("`{key}` specified more than once"),
        ));
    }
    *slot = Some(value);
    None
}

fn string(key: &Ident, value: Expr) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s),
        other => {
            let example = match key.to_string().as_str() {
                "header" => "\"Idempotency-Key\"",
                "ttl" => "\"24h\"",
                "lease" | "wait" => "\"30s\"",
                "scope" => "\"payments\"",
                "on_conflict" => "\"reject\" or \"wait\"",
                "cache" => "\"all\", \"success\" or \"non_server_error\"",
                "retry_inviting" => "\"release\" or \"store\"",
                _ => "\"Idempotent-Replayed\"",
            };
            Err(syn::Error::new(
                other.span(),
                format!("`{key}` expects a string literal like {example}"),
            ))
        }
    }
}

/// A value for `key`, to show in messages.
fn example(key: &str) -> Option<&'static str> {
    Some(match key {
        "header" => "\"Idempotency-Key\"",
        "ttl" => "\"24h\"",
        "scope" => "\"payments\"",
        "required" => "false",
        "lease" | "wait" => "\"30s\"",
        "on_conflict" => "\"wait\"",
        "cache" => "\"success\"",
        "retry_inviting" => "\"store\"",
        "replay_header" => "\"Idempotent-Replayed\"",
        "principal" => "\"X-Api-Key\"",
        "state" => "AppState",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{example, Args, ARGUMENTS};

    fn errors(attr: &str) -> Vec<String> {
        match syn::parse_str::<Args>(attr) {
            Ok(args) => args.errors.iter().map(ToString::to_string).collect(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_argument_has_an_example() {
        for arg in ARGUMENTS {
            assert!(example(arg).is_some(), "{arg}");
        }
    }

    #[test]
    fn a_missing_equals_sign_shows_the_argument_written_out() {
        assert_eq!(
            errors(r#"ttl "24h""#),
            ["expected `=` after `ttl`, as in `ttl = \"24h\"`"]
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
    fn state_takes_a_type_and_a_value_that_is_not_one_is_reported() {
        let args = syn::parse_str::<Args>(r#"state = Arc<AppState>, scope = "s""#).unwrap();
        let (key, ty) = args.state.unwrap();
        assert_eq!(key.to_string(), "state");
        assert_eq!(quote::quote!(#ty).to_string(), "Arc < AppState >");
        assert!(args.scope.is_some());
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
}
