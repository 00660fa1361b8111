//! Code generation: the handler becomes a thin outer function that extracts,
//! then calls into the runtime with the user's own function nested inside it.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

use crate::valid::{Cache, Options, Principal};

/// Checks the item is a handler we can rewrite.
pub(crate) fn check_item(f: &ItemFn) -> Vec<syn::Error> {
    let mut errors = Vec::new();
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span(),
            "`#[idempotent]` requires an `async fn`",
        ));
    }
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        errors.push(syn::Error::new(
            r.span(),
            "`#[idempotent]` cannot be used on a method with a `self` receiver; make the handler a free `async fn` and pass state through an extractor such as `State`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            "`#[idempotent]` handlers cannot be generic; use concrete types",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(
            v.span(),
            "`#[idempotent]` handlers cannot be variadic",
        ));
    }
    errors
}

/// Which framework's handler to generate.
#[derive(Clone, Copy)]
pub(crate) enum Framework {
    Axum,
    Actix,
}

pub(crate) fn expand(f: ItemFn, opts: Options, framework: Framework) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = f;
    let name = &sig.ident;
    let spec = format_ident!("__idempotent_spec_{}", name);
    let config = config_tokens(&opts, &name.to_string());

    // Attributes stay on the handler (docs, lints, routing, OpenAPI, ...): the
    // nested function inherits lint levels from it. `#[instrument]` goes on
    // the nested function, whose parameters are the user's; inner attributes
    // (`#![...]`) go back inside the body.
    let (inner_style, outer): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Inner(_)));
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = outer.into_iter().partition(|a| {
        a.path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "instrument")
    });
    let stmts = &block.stmts;

    let inner_name = syn::Ident::new("__idempotent_handler", Span::mixed_site());
    let mut inner_sig = sig.clone();
    inner_sig.ident = inner_name.clone();

    let types: Vec<_> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(t) => Some(&*t.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let ret_span = match &sig.output {
        ReturnType::Default => sig.paren_token.span.join(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let (outer_args, outer_ret, call) = match framework {
        Framework::Axum => axum_call(&spec, &inner_name, &types, ret_span, sig.ident.span()),
        Framework::Actix => actix_call(&spec, &inner_name, &types, ret_span),
    };
    let fn_token = &sig.fn_token;
    let asyncness = &sig.asyncness;

    quote! {
        #(#outer_attrs)*
        #vis #asyncness #fn_token #name(#outer_args) -> #outer_ret {
            #(#inner_attrs)*
            #inner_sig {
                #(#inner_style)*
                #(#stmts)*
            }

            #call
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types, unreachable_pub)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #spec;

        impl ::idempotent_runtime::__private::HandlerSpec for #spec {
            fn config() -> &'static ::idempotent_runtime::__private::HandlerConfig {
                static CONFIG: ::idempotent_runtime::__private::HandlerConfig = #config;
                &CONFIG
            }
        }
    }
}

/// axum: leading extractors unchanged, the last one (or `()`) wrapped in
/// `Extract`, which reads the key and buffers the body before running it.
fn axum_call(
    spec: &syn::Ident,
    inner_name: &syn::Ident,
    types: &[&syn::Type],
    ret_span: Span,
    name_span: Span,
) -> (TokenStream, TokenStream, TokenStream) {
    let extract = syn::Ident::new("__idempotent_extract", Span::mixed_site());
    let last = syn::Ident::new("__idempotent_last", Span::mixed_site());
    let ctx = syn::Ident::new("__idempotent_ctx", Span::mixed_site());
    let mut outer_args = Vec::new();
    let mut call_args = Vec::new();
    let (leading, last_ty) = match types.split_last() {
        Some((l, rest)) => (rest, Some(*l)),
        None => (types, None),
    };
    for (i, ty) in leading.iter().enumerate() {
        let ident = syn::Ident::new(&format!("__idempotent_arg{i}"), Span::mixed_site());
        outer_args.push(quote! { #ident: #ty });
        call_args.push(ident.into_token_stream());
    }
    let last_ty_tokens = match last_ty {
        Some(ty) => {
            call_args.push(last.to_token_stream());
            ty.to_token_stream()
        }
        None => quote! { () },
    };
    let last_span = last_ty.map_or(name_span, |t| t.span());
    outer_args.push(quote_spanned! {last_span=>
        #extract: ::idempotent_runtime::__private::axum::Extract<#spec, #last_ty_tokens>
    });
    let last_binding = if last_ty.is_some() {
        quote! { #last }
    } else {
        quote! { () }
    };
    let handler = if call_args.is_empty() {
        quote! { #inner_name }
    } else {
        quote! { move || #inner_name(#(#call_args),*) }
    };
    let call = quote_spanned! {ret_span=>
        let (#ctx, #last_binding) = ::idempotent_runtime::__private::axum::Extract::into_parts(#extract);
        ::idempotent_runtime::__private::axum::run(#ctx, #handler).await
    };
    (
        quote! { #(#outer_args),* },
        quote! { ::idempotent_runtime::__private::axum::Response },
        call,
    )
}

/// actix-web: the handler takes the request and the payload; the runtime
/// reads the key, buffers the body, then runs the user's extractors (as one
/// tuple, in order, over the buffered body) and the handler.
fn actix_call(
    spec: &syn::Ident,
    inner_name: &syn::Ident,
    types: &[&syn::Type],
    ret_span: Span,
) -> (TokenStream, TokenStream, TokenStream) {
    let req = syn::Ident::new("__idempotent_req", Span::mixed_site());
    let payload = syn::Ident::new("__idempotent_payload", Span::mixed_site());
    let args: Vec<_> = (0..types.len())
        .map(|i| syn::Ident::new(&format!("__idempotent_arg{i}"), Span::mixed_site()))
        .collect();
    let call = quote_spanned! {ret_span=>
        ::idempotent_runtime::__private::actix::run::<#spec, (#(#types,)*), _, _, _>(
            #req,
            #payload,
            move |(#(#args,)*)| #inner_name(#(#args),*),
        )
        .await
    };
    (
        quote! {
            #req: ::idempotent_runtime::__private::actix::HttpRequest,
            #payload: ::idempotent_runtime::__private::actix::Payload
        },
        quote! { ::idempotent_runtime::__private::actix::HttpResponse },
        call,
    )
}

fn config_tokens(opts: &Options, fn_name: &str) -> TokenStream {
    let p = quote! { ::idempotent_runtime::__private };
    let scope = opts.scope.as_deref().unwrap_or(fn_name);
    let header = &opts.header;
    let replay = &opts.replay_header;
    let ttl = opts.ttl_ms;
    let lease = opts.lease_ms;
    let required = opts.required;
    let on_conflict = match opts.wait_ms {
        None => quote! { #p::OnConflict::Reject },
        Some(ms) => quote! { #p::OnConflict::Wait(#p::Duration::from_millis(#ms)) },
    };
    let cache = match opts.cache {
        Cache::All => quote! { #p::CachePolicy::All },
        Cache::Success => quote! { #p::CachePolicy::Success },
        Cache::NonServerError => quote! { #p::CachePolicy::NonServerError },
    };
    let principal = match &opts.principal {
        None => quote! { #p::Principal::None },
        Some((Principal::Header(h), _)) => quote! { #p::Principal::Header(#h) },
        Some((Principal::Function(path), span)) => {
            quote_spanned! {*span=> #p::Principal::Fn(#path) }
        }
    };
    quote! {
        #p::HandlerConfig::new(#scope)
            .header(#header)
            .ttl(#p::Duration::from_millis(#ttl))
            .lease(#p::Duration::from_millis(#lease))
            .required(#required)
            .on_conflict(#on_conflict)
            .cache(#cache)
            .replay_header(#replay)
            .principal(#principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(item: &str) -> String {
        let f: ItemFn = syn::parse_str(item).unwrap();
        let opts = crate::valid::validate(crate::args::Args::default())
            .ok()
            .unwrap();
        expand(f, opts, Framework::Axum).to_string()
    }

    #[test]
    fn instrument_goes_on_the_nested_function_lints_stay_outside() {
        let out = expanded(
            "#[allow(clippy::too_many_arguments)] #[tracing::instrument(skip(db))] async fn h(db: Db) { #![allow(unused)] }",
        );
        let allow = out.find("allow (clippy :: too_many_arguments)").unwrap();
        let outer_fn = out.find("async fn h").unwrap();
        let instrument = out.find("tracing :: instrument").unwrap();
        let inner_fn = out.find("async fn __idempotent_handler").unwrap();
        let inner_attr = out.find("# ! [allow (unused)]").unwrap();
        assert!(allow < outer_fn, "lint attribute on the handler");
        assert!(
            outer_fn < instrument && instrument < inner_fn,
            "instrument on the nested fn"
        );
        assert!(
            inner_fn < inner_attr,
            "inner attribute inside the nested body"
        );
    }

    #[test]
    fn zero_arguments_pass_the_function_itself() {
        let out = expanded("async fn h() {}");
        assert!(!out.contains("move ||"), "{out}");
    }
}
