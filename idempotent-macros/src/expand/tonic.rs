//! A unary tonic method: the request goes through the runtime's life cycle
//! (key from metadata or `key = …`, fingerprint of the message), and the
//! method's own body becomes a closure of the request (and of the `Tx`, an
//! argument the trait does not declare, which the runtime hands over).
//! Like the function form, everything stays inside the method, in either
//! shape it meets: as written, or as `#[tonic::async_trait]` (on the
//! `impl`, so first) rewrote it.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::FnArg;

use super::function::split_inner_attributes;
use super::{config_tokens, const_checks};
use crate::args::Door;
use crate::item::{is_tx, span_range, AsyncTraitBody, ItemFn};
use crate::valid::Options;

pub(super) fn expand(item: ItemFn, opts: Options) -> TokenStream {
    let p = quote! { ::idempotent_runtime::__private::tonic };
    let tx = item.sig.inputs.iter().find_map(|a| match a {
        FnArg::Typed(t) if is_tx(&t.ty) => Some((*t.pat.clone(), *t.ty.clone())),
        _ => None,
    });
    // The request: the one other typed argument (checked before).
    let Some(request) = item.sig.inputs.iter().find_map(|a| match a {
        FnArg::Typed(t) if !is_tx(&t.ty) => Some(t.clone()),
        _ => None,
    }) else {
        return item.without_variadic();
    };
    let request_name = match &*request.pat {
        syn::Pat::Ident(i) => i.ident.clone(),
        _ => syn::Ident::new("request", request.pat.span()),
    };
    let request_pat = &request.pat;
    let request_ty = &request.ty;

    let config_name = syn::Ident::new("__IDEMPOTENT_CONFIG", Span::mixed_site());
    let options_name = syn::Ident::new("__IDEMPOTENT_OPTIONS", Span::mixed_site());
    let config = config_tokens(
        &opts,
        &item.sig.ident.to_string(),
        tx.is_some(),
        Door::Tonic,
    );
    let checks = const_checks(&opts.const_checks, &config_name.to_token_stream());
    let runtime = match &opts.store {
        Some(store) => {
            let span = store.span();
            quote_spanned! {span=> ::core::option::Option::Some(#p::runtime_of(&(#store))) }
        }
        None => quote! { ::core::option::Option::None },
    };
    let key = match &opts.key {
        Some(key) => {
            let (first, _) = span_range(key.to_token_stream());
            let callee = quote_spanned! {first=> ::idempotent_runtime::__private::tonic::key_of };
            quote! { ::core::option::Option::Some(#callee(&(#key))) }
        }
        None => quote! { ::core::option::Option::None },
    };
    let (tx_param, guard) = match &tx {
        Some((pat, ty)) => {
            let span = ty.span();
            let guard = quote_spanned! {span=> ::idempotent_runtime::__private::require_postgres_for_tx!{} };
            (quote! { #pat: #ty }, guard)
        }
        None => (quote! { _: () }, TokenStream::new()),
    };
    let call = syn::Ident::new("__idempotent_call", Span::mixed_site());
    let method = item.sig.ident.to_string();
    let prelude = quote! {
        const #config_name: ::idempotent_runtime::__private::HandlerConfig = #config;
        #checks
        static #options_name: ::idempotent_runtime::__private::HandlerConfig = #config_name;
        #guard
        let #call = #p::Call::new(&#options_name, #method, #runtime, #key);
    };

    let shape = item.async_trait();
    let ItemFn {
        attrs,
        vis,
        mut sig,
        body,
    } = item;
    // The `Tx` is the runtime's to give: the trait does not declare it.
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
                    #p::run(#call, #request_name, move |#request_pat: #request_ty, #tx_param| async move #body).await
                }
            }
        }
        Some(AsyncTraitBody {
            before,
            pin,
            block,
            after,
            ..
        }) => quote! {
            #(#attrs)*
            #vis #sig {
                #before
                #pin(async move {
                    #prelude
                    #p::run(#call, #request_name, move |#request_name: #request_ty, #tx_param| #block).await
                })
                #after
            }
        },
    }
}
