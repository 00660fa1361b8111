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

pub(crate) fn expand(f: ItemFn, opts: Options) -> TokenStream {
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

    // Lint attributes govern the body, so they go on the inner function; all
    // other attributes (docs, routing, OpenAPI, ...) stay on the handler.
    let (lint_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs.into_iter().partition(|a| {
        ["allow", "expect", "warn", "deny", "forbid"]
            .iter()
            .any(|l| a.path().is_ident(l))
    });

    let inner_name = syn::Ident::new("__idempotent_handler", Span::mixed_site());
    let mut inner_sig = sig.clone();
    inner_sig.ident = inner_name.clone();

    let typed: Vec<_> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let extract = syn::Ident::new("__idempotent_extract", Span::mixed_site());
    let last = syn::Ident::new("__idempotent_last", Span::mixed_site());
    let ctx = syn::Ident::new("__idempotent_ctx", Span::mixed_site());
    let mut outer_args = Vec::new();
    let mut call_args = Vec::new();
    let (leading, last_ty) = match typed.split_last() {
        Some((l, rest)) => (rest.to_vec(), Some(&l.ty)),
        None => (Vec::new(), None),
    };
    for (i, t) in leading.iter().enumerate() {
        let ident = syn::Ident::new(&format!("__idempotent_arg{i}"), Span::mixed_site());
        let ty = &t.ty;
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
    let last_span = last_ty.map_or_else(|| sig.ident.span(), |t| t.span());
    outer_args.push(quote_spanned! {last_span=>
        #extract: ::idempotent_runtime::__private::axum::Extract<#spec, #last_ty_tokens>
    });
    let last_binding = if last_ty.is_some() {
        quote! { #last }
    } else {
        quote! { () }
    };

    let ret_span = match &sig.output {
        ReturnType::Default => sig.paren_token.span.join(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let run = quote_spanned! {ret_span=>
        ::idempotent_runtime::__private::axum::run(#ctx, move || #inner_name(#(#call_args),*)).await
    };
    let fn_token = &sig.fn_token;
    let asyncness = &sig.asyncness;

    quote! {
        #(#outer_attrs)*
        #vis #asyncness #fn_token #name(#(#outer_args),*) -> ::idempotent_runtime::__private::axum::Response {
            #(#lint_attrs)*
            #inner_sig #block

            let (#ctx, #last_binding) = ::idempotent_runtime::__private::axum::Extract::into_parts(#extract);
            #run
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types, unreachable_pub)]
        #vis struct #spec;

        impl ::idempotent_runtime::__private::HandlerSpec for #spec {
            fn config() -> &'static ::idempotent_runtime::__private::HandlerConfig {
                static CONFIG: ::idempotent_runtime::__private::HandlerConfig = #config;
                &CONFIG
            }
        }

        ::idempotent_runtime::__private::require_axum_feature! {}
    }
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
