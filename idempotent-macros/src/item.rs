//! The item the attribute is on: a function as written, its body kept as
//! tokens, and what the rules and the expansions read of it. Imported by
//! `valid.rs` and `expand/`; imports only `args`.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Pat, PathArguments, ReturnType, Signature, Type,
    TypeParamBound, Visibility,
};

use crate::args::Door;

/// The function as written. Its statements are kept as tokens, never parsed,
/// so a syntax error among them reaches rustc as written and rustc reports
/// it there.
pub(crate) struct ItemFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    /// `{ ... }`, inner attributes included.
    pub(crate) body: Group,
}

impl Parse for ItemFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let body: Group = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), "expected the function body `{ ... }`"))?;
        if body.delimiter() != Delimiter::Brace {
            return Err(syn::Error::new(
                body.span(),
                "expected the function body `{ ... }`",
            ));
        }
        Ok(ItemFn {
            attrs,
            vis,
            sig,
            body: tidy_body(body),
        })
    }
}

impl ItemFn {
    /// The item as written, but without a variadic `...`, which would only
    /// add rustc's own errors to ours.
    pub(crate) fn without_variadic(&self) -> TokenStream {
        let ItemFn {
            attrs,
            vis,
            sig,
            body,
        } = self;
        let mut sig = sig.clone();
        sig.variadic = None;
        quote! { #(#attrs)* #vis #sig #body }
    }

    /// The types of the arguments but the receiver.
    pub(crate) fn arg_types(&self) -> Vec<&Type> {
        self.sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(&*t.ty),
                FnArg::Receiver(_) => None,
            })
            .collect()
    }

    /// The identifiers the arguments bind (plain `name: Type` arguments
    /// only), with `self` for a receiver.
    pub(crate) fn arg_names(&self) -> Vec<String> {
        self.sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Receiver(_) => Some("self".to_owned()),
                FnArg::Typed(t) => match &*t.pat {
                    Pat::Ident(i) => Some(i.ident.to_string()),
                    _ => None,
                },
            })
            .collect()
    }

    /// Checks that the item is a function `door` can rewrite.
    pub(crate) fn check(&self, door: Door) -> Vec<syn::Error> {
        let mut errors = Vec::new();
        let sig = &self.sig;
        let async_trait =
            matches!(door, Door::Function | Door::Tonic) && self.async_trait().is_some();
        if sig.asyncness.is_none() && !async_trait {
            errors.push(syn::Error::new(
                sig.fn_token.span(),
                "`#[idempotent]` requires an `async fn`",
            ));
        }
        if let Some(v) = &sig.variadic {
            errors.push(syn::Error::new_spanned(
                v,
                "`#[idempotent]` handlers cannot be variadic",
            ));
        }
        match door {
            Door::Axum | Door::Actix => errors.extend(self.check_handler()),
            Door::Function => errors.extend(self.check_function()),
            Door::Tonic => errors.extend(self.check_tonic()),
        }
        errors
    }

    /// An HTTP handler: a free function of concrete types.
    fn check_handler(&self) -> Vec<syn::Error> {
        let mut errors = Vec::new();
        let sig = &self.sig;
        if let Some(r) = sig.receiver() {
            errors.push(syn::Error::new_spanned(
                r,
                "`#[idempotent]` cannot be used on a method with a `self` receiver; make the handler a free `async fn` and pass state through an extractor such as `State`",
            ));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push(syn::Error::new_spanned(
                &sig.generics,
                "`#[idempotent]` handlers cannot be generic; use concrete types",
            ));
        }
        for ty in self.arg_types() {
            if mentions(ty.to_token_stream(), "impl") {
                errors.push(syn::Error::new_spanned(
                    ty,
                    "`#[idempotent]` handlers cannot be generic; use a concrete type instead of `impl Trait`",
                ));
            }
        }
        errors
    }

    /// A function: plain arguments (the key and the fingerprint name them),
    /// returning a value.
    fn check_function(&self) -> Vec<syn::Error> {
        let mut errors = Vec::new();
        for arg in &self.sig.inputs {
            if let FnArg::Typed(t) = arg {
                if !matches!(&*t.pat, Pat::Ident(i) if i.subpat.is_none()) {
                    errors.push(syn::Error::new_spanned(
                        &t.pat,
                        "`#[idempotent]` functions take plain arguments (`name: Type`), so that `key` and the fingerprint can name them; destructure in the body",
                    ));
                }
            }
        }
        if self.sig.asyncness.is_some() && matches!(self.sig.output, ReturnType::Default) {
            errors.push(syn::Error::new(
                self.sig.paren_token.span.join(),
                "an `#[idempotent]` function must return `Result<T, E>`: `T` is stored and replayed, `E` receives refusals through `From<IdempotencyError>`",
            ));
        }
        errors
    }
}

/// The body of an `async fn` as `#[async_trait]` rewrote it: `fn f(…) ->
/// Pin<Box<dyn Future<Output = R> + Send + '_>> { Box::pin(async move { …
/// }) }`. That attribute is on the `impl`, so it expands before ours on the
/// methods inside it.
pub(crate) struct AsyncTraitBody {
    /// What comes before `Box::pin`.
    pub(crate) before: TokenStream,
    /// `Box::pin`, as written.
    pub(crate) pin: TokenStream,
    /// `async move { … }`.
    pub(crate) block: TokenStream,
    /// What comes after the call.
    pub(crate) after: TokenStream,
    /// `R`.
    pub(crate) output: Type,
}

impl ItemFn {
    /// The body as `#[async_trait]` left it, if it did.
    pub(crate) fn async_trait(&self) -> Option<AsyncTraitBody> {
        if self.sig.asyncness.is_some() {
            return None;
        }
        let output = future_output(match &self.sig.output {
            ReturnType::Type(_, ty) => ty,
            ReturnType::Default => return None,
        })?;
        // `Box::pin(async move { … })` as the body's last call, whatever
        // comes before it.
        let tokens: Vec<TokenTree> = self.body.stream().into_iter().collect();
        let call = tokens.iter().rposition(|t| {
            matches!(t, TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis
                && g.stream().to_string().starts_with("async move"))
        })?;
        let TokenTree::Group(args) = &tokens[call] else {
            return None;
        };
        let pin_start = call.checked_sub(4)?;
        let pin: TokenStream = tokens[pin_start..call].iter().cloned().collect();
        if pin.to_string().replace(' ', "") != "Box::pin" {
            return None;
        }
        let block: syn::Expr = syn::parse2(args.stream()).ok()?;
        if !matches!(block, syn::Expr::Async(_)) {
            return None;
        }
        Some(AsyncTraitBody {
            before: tokens[..pin_start].iter().cloned().collect(),
            pin,
            block: block.to_token_stream(),
            after: tokens[call + 1..].iter().cloned().collect(),
            output,
        })
    }
}

/// `R` of `Pin<Box<dyn Future<Output = R> + …>>`.
fn future_output(ty: &Type) -> Option<Type> {
    let Type::Path(pin) = ty else { return None };
    let Type::Path(boxed) = single_type_argument(pin.path.segments.last()?)? else {
        return None;
    };
    let Type::TraitObject(dyn_future) = single_type_argument(boxed.path.segments.last()?)? else {
        return None;
    };
    dyn_future.bounds.iter().find_map(|b| {
        let TypeParamBound::Trait(t) = b else {
            return None;
        };
        let future = t.path.segments.last()?;
        if future.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &future.arguments else {
            return None;
        };
        args.args.iter().find_map(|a| match a {
            GenericArgument::AssocType(a) if a.ident == "Output" => Some(a.ty.clone()),
            _ => None,
        })
    })
}

fn single_type_argument(segment: &syn::PathSegment) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

impl ItemFn {
    /// A unary tonic method: `(&self, request: Request<T>) -> Result<Response<U>,
    /// Status>`, and optionally a `Tx` the runtime hands over; streaming is
    /// refused.
    fn check_tonic(&self) -> Vec<syn::Error> {
        let mut errors = Vec::new();
        let requests: Vec<&syn::PatType> = self
            .sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) if !is_tx(&t.ty) => Some(t),
                _ => None,
            })
            .collect();
        let shape = "a unary tonic method: `async fn method(&self, request: Request<T>) -> Result<Response<U>, Status>`";
        match requests.as_slice() {
            [request] => match last_segment(&request.ty) {
                Some(s) if s.ident == "Request" => {
                    if single_type_argument(s)
                        .is_some_and(|t| mentions(t.to_token_stream(), "Streaming"))
                    {
                        errors.push(syn::Error::new_spanned(
                            &request.ty,
                            "`#[idempotent]` takes unary methods: a client-streaming request (`Request<Streaming<T>>`) has no one message to fingerprint and replay",
                        ));
                    }
                }
                _ => errors.push(syn::Error::new_spanned(
                    &request.ty,
                    format!("`#[idempotent]` expects {shape}; this argument is not a `Request<T>`"),
                )),
            },
            _ => errors.push(syn::Error::new_spanned(
                &self.sig.inputs,
                format!("`#[idempotent]` expects {shape} (and, optionally, a `Tx`)"),
            )),
        }
        let output = match self.async_trait() {
            Some(body) => Some(body.output),
            None => match &self.sig.output {
                ReturnType::Type(_, ty) => Some((**ty).clone()),
                ReturnType::Default => None,
            },
        };
        let response = output.as_ref().and_then(|o| {
            let ok = last_segment(o)
                .filter(|s| s.ident == "Result")
                .and_then(single_type_argument)?;
            last_segment(ok)
                .filter(|s| s.ident == "Response")
                .and_then(single_type_argument)
        });
        match (response, &output) {
            (Some(reply), _) => {
                let tokens = reply.to_token_stream();
                let streaming = matches!(reply, Type::Path(p) if p.qself.is_some()
                    || p.path.segments.first().is_some_and(|s| s.ident == "Self"))
                    || mentions(tokens, "Stream")
                    || mentions(reply.to_token_stream(), "impl");
                if streaming {
                    errors.push(syn::Error::new_spanned(
                        reply,
                        "`#[idempotent]` takes unary methods: a server-streaming reply has no one message to store and replay",
                    ));
                }
            }
            (None, Some(o)) => errors.push(syn::Error::new_spanned(
                o,
                format!("`#[idempotent]` expects {shape}; this does not return `Result<Response<U>, Status>`"),
            )),
            (None, None) => errors.push(syn::Error::new(
                self.sig.paren_token.span.join(),
                format!("`#[idempotent]` expects {shape}; this returns nothing"),
            )),
        }
        errors
    }
}

/// The last segment of a path type.
fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

/// The body with its inner attributes (`#![...]`) re-emitted as syn prints
/// them and its statements untouched; unchanged if those attributes do not
/// parse, for rustc to report.
fn tidy_body(body: Group) -> Group {
    let parser = |input: ParseStream<'_>| {
        let attrs = input.call(Attribute::parse_inner)?;
        let rest: TokenStream = input.parse()?;
        Ok(quote! { #(#attrs)* #rest })
    };
    match syn::parse::Parser::parse2(parser, body.stream()) {
        Ok(stream) => {
            let mut tidy = Group::new(Delimiter::Brace, stream);
            tidy.set_span(body.span());
            tidy
        }
        Err(_) => body,
    }
}

/// Whether the item starts like a function (attributes, visibility,
/// qualifiers, then `fn`), whether or not the rest of it parses.
pub(crate) fn looks_like_fn(item: TokenStream) -> bool {
    let parser = |input: ParseStream<'_>| {
        let _ = input.call(Attribute::parse_outer);
        let _ = input.parse::<Visibility>();
        while input.peek(syn::Token![const])
            || input.peek(syn::Token![async])
            || input.peek(syn::Token![unsafe])
            || input.peek(syn::Token![extern])
            || input.peek(syn::LitStr)
        {
            input.parse::<TokenTree>()?;
        }
        let is_fn = input.peek(syn::Token![fn]);
        input.parse::<TokenStream>()?;
        Ok(is_fn)
    };
    syn::parse::Parser::parse2(parser, item).unwrap_or(false)
}

/// Whether the identifier (or `_`) occurs anywhere in the tokens.
pub(crate) fn mentions(tokens: TokenStream, word: &str) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == word,
        TokenTree::Punct(p) => word == "_" && p.as_char() == '_',
        TokenTree::Group(g) => mentions(g.stream(), word),
        TokenTree::Literal(_) => false,
    })
}

/// The spans of the first and last tokens: an error spanning from one to
/// the other covers the whole of them (one span cannot, on stable).
pub(crate) fn span_range(tokens: TokenStream) -> (Span, Span) {
    let mut tokens = tokens.into_iter();
    let first = tokens.next().map_or_else(Span::call_site, |t| t.span());
    let last = tokens.last().map_or(first, |t| t.span());
    (first, last)
}

/// Whether a type names the runtime's `Tx`, or `Option<Tx>` (a `Tx` where
/// the store has one), by their last path segments: a function's is handed
/// over by the runtime rather than passed by the caller, and a handler that
/// takes one claims inside its transaction.
pub(crate) fn is_tx(ty: &Type) -> bool {
    match ty {
        Type::Group(g) => is_tx(&g.elem),
        Type::Paren(p) => is_tx(&p.elem),
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().is_some_and(|s| {
            (s.ident == "Tx" && s.arguments.is_none())
                || (s.ident == "Option" && single_type_argument(s).is_some_and(is_tx_alone))
        }),
        _ => false,
    }
}

fn is_tx_alone(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Tx" && s.arguments.is_none()))
}
