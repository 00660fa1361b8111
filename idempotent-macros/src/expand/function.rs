//! Any `async fn` returning `Result<T, E>`: the body runs through the
//! runtime's life cycle with the key and the fingerprint taken from the
//! arguments, and the runtime's `Tx` (an argument the caller does not pass)
//! handed to it.
//!
//! Everything stays inside the function, so that it works for free
//! functions, inherent methods and trait-impl methods alike, also as
//! `#[async_trait]` leaves them (its expansion runs first: it is on the
//! `impl`). Two ways to run:
//! - **detached**, when nothing is borrowed (owned arguments, no receiver or
//!   one by value): the body finishes, and its result is stored, even if the
//!   caller stops waiting, as a handler does when its client hangs up;
//! - **inline** otherwise (`&self`, a reference argument, generics): the
//!   body is part of the caller's future, and a caller that stops waiting
//!   releases the claim (or rolls the `Tx` back).

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, GenericArgument, Pat, PathArguments, ReturnType, Type};

use super::{config_tokens, const_checks};
use crate::args::Door;
use crate::item::{is_tx, mentions, span_range, AsyncTraitBody, ItemFn};
use crate::valid::{Cache, Fingerprint, Options};

pub(super) fn expand(item: ItemFn, opts: Options) -> TokenStream {
    let p = quote! { ::idempotent_runtime::__private::function };
    let tx = item.sig.inputs.iter().find_map(|a| match a {
        FnArg::Typed(t) if is_tx(&t.ty) => Some((*t.pat.clone(), *t.ty.clone())),
        _ => None,
    });
    let config_name = syn::Ident::new("__IDEMPOTENT_CONFIG", Span::mixed_site());
    let options_name = syn::Ident::new("__IDEMPOTENT_OPTIONS", Span::mixed_site());
    let config = config_tokens(
        &opts,
        &item.sig.ident.to_string(),
        tx.is_some(),
        Door::Function,
    );
    let checks = const_checks(&opts.const_checks, &config_name.to_token_stream());

    let shape = item.async_trait();
    let output = match &shape {
        None => match &item.sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            // Refused by `ItemFn::check`.
            ReturnType::Default => syn::parse_quote!(()),
        },
        Some(shape) => shape.output.clone(),
    };
    let (ok_codec, err_codec, refusal) = codecs(&output, opts.cache);

    let runtime = match &opts.store {
        Some(store) => {
            let span = store.span();
            quote_spanned! {span=> #p::runtime_of(&(#store)) }
        }
        None => quote! { #p::default_runtime() },
    };
    let key = opts.key.as_ref().map(|key| {
        // Every token on the expression, so that a key of the wrong type
        // fails there.
        let (first, last) = span_range(key.to_token_stream());
        let callee = quote_spanned! {first=> ::idempotent_runtime::__private::function::key_of };
        let mut value = Group::new(Delimiter::Parenthesis, key.to_token_stream());
        value.set_span(last);
        let borrow = quote_spanned! {first=> & };
        let mut args = Group::new(Delimiter::Parenthesis, quote! { #borrow #value });
        args.set_span(last);
        quote! { #callee #args }
    });
    let fingerprint = fingerprint(&item, &opts);

    let body_param = match &tx {
        Some((pat, ty)) => {
            let span = ty.span();
            let guard = quote_spanned! {span=> ::idempotent_runtime::__private::require_postgres_for_tx!{} };
            (quote! { #pat: #ty }, guard)
        }
        None => (quote! { _: () }, TokenStream::new()),
    };
    let (param, guard) = body_param;
    // Spanned on the return type: a function that does not return a
    // `Result` fails there, once, naming the trait.
    let run = {
        let run = if detachable(&item) {
            quote! { run_detached }
        } else {
            quote! { run }
        };
        let (first, _) = span_range(output.to_token_stream());
        quote_spanned! {first=> ::idempotent_runtime::__private::function::#run }
    };
    let call = syn::Ident::new("__idempotent_call", Span::mixed_site());
    let prelude = quote! {
        const #config_name: ::idempotent_runtime::__private::HandlerConfig = #config;
        #checks
        static #options_name: ::idempotent_runtime::__private::HandlerConfig = #config_name;
        #guard
        let #call = #p::Call::new(&#options_name, #runtime, #key, #fingerprint);
    };

    let ItemFn {
        attrs,
        vis,
        mut sig,
        body,
    } = item;
    // The `Tx` is the runtime's to give: callers do not pass it.
    sig.inputs = sig
        .inputs
        .into_iter()
        .filter(|a| !matches!(a, FnArg::Typed(t) if is_tx(&t.ty)))
        .collect();
    match shape {
        None => {
            let (inner_attrs, body) = split_inner_attributes(body);
            quote! {
                #(#attrs)*
                #vis #sig {
                    #(#inner_attrs)*
                    #prelude
                    #run(#call, #ok_codec, #err_codec, #refusal, move |#param| async move #body).await
                }
            }
        }
        Some(AsyncTraitBody {
            before,
            pin,
            block,
            after,
            ..
        }) => {
            // `#[async_trait]`'s block rebinds the arguments (`let order =
            // order;`) and the `Tx` among them: it becomes the body, and the
            // prelude runs in a block of its own before it.
            quote! {
                #(#attrs)*
                #vis #sig {
                    #before
                    #pin(async move {
                        #prelude
                        #run(#call, #ok_codec, #err_codec, #refusal, move |#param| #block).await
                    })
                    #after
                }
            }
        }
    }
}

/// `T` and `E` of a return type written `Result<T, E>`.
pub(super) fn result_types(ty: &Type) -> Option<(&Type, &Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(t), Some(e), None) => Some((t, e)),
        _ => None,
    }
}

/// How `T` (and, with `cache = "all"`, `E`) are stored, and how a refusal
/// becomes an `E`: each named on its type, so that a type that cannot be
/// stored, or an error type that cannot receive refusals, fails there.
fn codecs(output: &Type, cache: Option<Cache>) -> (TokenStream, TokenStream, TokenStream) {
    let p = quote! { ::idempotent_runtime::__private::function };
    let keeps_errors = cache == Some(Cache::All);
    // Written `Result<T, E>`: on `T` and `E`. An alias (`io::Result<T>`):
    // through the trait every `Result` implements, on the whole type.
    let (ok, err) = match result_types(output) {
        Some((t, e)) => (t.to_token_stream(), e.to_token_stream()),
        None => {
            let (first, last) = span_range(output.to_token_stream());
            let open = quote_spanned! {first=> < };
            let ok = syn::Ident::new("Ok", last);
            let err = syn::Ident::new("Err", last);
            (
                quote! { #open #output as #p::FunctionResult>::#ok },
                quote! { #open #output as #p::FunctionResult>::#err },
            )
        }
    };
    let on = |ty: &TokenStream, trait_: TokenStream, item: &str| {
        let (first, last) = span_range(ty.clone());
        let open = quote_spanned! {first=> < };
        let item = syn::Ident::new(item, last);
        quote_spanned! {first=> #open #ty as #trait_>::#item }
    };
    let ok_codec = {
        let codec = on(&ok, quote! { #p::StoredValue }, "codec");
        quote! { #codec() }
    };
    let err_codec = if keeps_errors {
        let codec = on(&err, quote! { #p::StoredError }, "codec");
        quote! { ::core::option::Option::Some(#codec()) }
    } else {
        quote! { ::core::option::Option::None }
    };
    let refusal = on(&err, quote! { #p::ReceivesRefusals }, "refusal");
    (ok_codec, err_codec, refusal)
}

/// What the fingerprint covers: the expression written, nothing
/// (`fingerprint = false`), or every argument but the receiver, the `Tx`
/// and the one named as `store`; each added through a check on its type.
fn fingerprint(item: &ItemFn, opts: &Options) -> TokenStream {
    let p = quote! { ::idempotent_runtime::__private::function };
    let f = syn::Ident::new("__idempotent_fingerprint", Span::mixed_site());
    let adds: Vec<TokenStream> = match &opts.fingerprint {
        Some(Fingerprint::Off) => {
            return quote! { ::core::result::Result::Ok(::core::option::Option::None) }
        }
        Some(Fingerprint::Of(expr)) => {
            let (first, last) = span_range(expr.to_token_stream());
            let callee = quote_spanned! {first=> ::idempotent_runtime::__private::function::Fingerprinter::add_value };
            let mut args = Group::new(Delimiter::Parenthesis, quote! { &mut #f, &(#expr) });
            args.set_span(last);
            vec![quote! { #callee #args; }]
        }
        None => {
            // The store handle: the argument the `store` expression starts
            // from (`store = idem`, `store = app.idempotency`).
            let store = opts.store.as_ref().and_then(|s| {
                s.to_token_stream()
                    .into_iter()
                    .next()
                    .and_then(|t| match t {
                        TokenTree::Ident(i) => Some(i.to_string()),
                        _ => None,
                    })
            });
            item.sig
                .inputs
                .iter()
                .filter_map(|a| match a {
                    FnArg::Typed(t) if !is_tx(&t.ty) => match &*t.pat {
                        Pat::Ident(i) if Some(i.ident.to_string()) != store => Some((i, &t.ty)),
                        _ => None,
                    },
                    _ => None,
                })
                .map(|(i, ty)| {
                    let name = &i.ident;
                    let (first, last) = span_range(ty.to_token_stream());
                    let open = quote_spanned! {first=> < };
                    let add = syn::Ident::new("add", last);
                    quote! { #open #ty as #p::Fingerprinted>::#add(&mut #f, &#name); }
                })
                .collect()
        }
    };
    quote! {{
        let mut #f = #p::Fingerprinter::new();
        #(#adds)*
        #f.finish()
    }}
}

/// Whether the body can be detached from the caller: it borrows nothing
/// (no generics, no reference or lifetime in the arguments, no receiver or
/// one taken by value).
fn detachable(item: &ItemFn) -> bool {
    let sig = &item.sig;
    if !sig.generics.params.is_empty() {
        return false;
    }
    sig.inputs.iter().all(|a| match a {
        FnArg::Receiver(r) => match &r.kind {
            syn::ReceiverKind::Value => true,
            syn::ReceiverKind::Typed(_, ty) => !borrows(ty),
            _ => false,
        },
        FnArg::Typed(t) => !borrows(&t.ty),
    })
}

/// Whether a type borrows: a reference, a lifetime or an `impl Trait`.
fn borrows(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Punct(p) => p.as_char() == '&' || p.as_char() == '\'',
            TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream()) || mentions(ty.to_token_stream(), "impl")
}

/// The body's inner attributes (`#![...]`), which go on the function, and
/// the body without them.
pub(super) fn split_inner_attributes(body: Group) -> (Vec<Attribute>, Group) {
    let parser = |input: syn::parse::ParseStream<'_>| {
        let attrs = input.call(Attribute::parse_inner)?;
        let rest: TokenStream = input.parse()?;
        Ok((attrs, rest))
    };
    match syn::parse::Parser::parse2(parser, body.stream()) {
        Ok((attrs, rest)) => {
            let mut inner = Group::new(Delimiter::Brace, rest);
            inner.set_span(body.span());
            (attrs, inner)
        }
        Err(_) => (Vec::new(), body),
    }
}
