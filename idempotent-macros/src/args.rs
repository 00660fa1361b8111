//! Parsing `#[idempotent(key = value, ...)]` into one struct, every argument
//! kept with its span so later errors point at the right token.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Path, Token};

pub(crate) const ARGUMENTS: &[&str] = &[
    "header",
    "ttl",
    "scope",
    "required",
    "lease",
    "on_conflict",
    "wait",
    "cache",
    "replay_header",
    "principal",
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
    pub(crate) replay_header: Option<LitStr>,
    pub(crate) principal: Option<WithSpan<PrincipalArg>>,
    /// Problems found while parsing; parsing goes on so all are reported.
    pub(crate) errors: Vec<syn::Error>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            input.parse::<Token![=]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected `=` after `{key}`, as in `{key} = ...`"),
                )
            })?;
            let value: Expr = input.parse()?;
            args.accept(key, value);
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
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
                _ => "\"Idempotent-Replayed\"",
            };
            Err(syn::Error::new(
                other.span(),
                format!("`{key}` expects a string literal like {example}"),
            ))
        }
    }
}
