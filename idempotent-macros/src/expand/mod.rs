//! Code generation: one file per door, and here what they share: the options
//! as a `HandlerConfig` expression, the compile-time checks of rules the
//! runtime defines, the frame of an HTTP handler (a thin outer function
//! calling into the runtime, the user's function nested inside), and the
//! helpers that put errors on the user's tokens.
//!
//! Every trait the user's types must satisfy is checked by code spanned on
//! those types (through the runtime's hidden check traits), so rustc reports
//! a wrong return type or argument there, naming the trait.

mod actix;
mod axum;
mod function;
mod tonic;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{ReturnType, Signature, Type};

use crate::args::Door;
use crate::item::{is_tx, span_range, ItemFn};
use crate::valid::{Cache, ConstCheck, OnConflict, Options, Principal, RetryInviting, Rule};

/// The item rewritten for `door`.
pub(crate) fn expand(item: ItemFn, opts: Options, door: Door) -> TokenStream {
    match door {
        Door::Axum => handler(item, opts, door, axum::generate),
        Door::Actix => handler(item, opts, door, actix::generate),
        Door::Function => function::expand(item, opts),
        Door::Tonic => tonic::expand(item, opts),
    }
}

/// What an HTTP door adds around the user's function.
struct Generated {
    outer_args: TokenStream,
    outer_ret: TokenStream,
    /// Items checking the user's types, in the outer function's body.
    checks: TokenStream,
    /// The call into the runtime, ending the outer function's body.
    call: TokenStream,
    /// Items next to the handler.
    items: TokenStream,
}

/// What a door's generator is given.
struct Handler<'a> {
    spec: &'a syn::Ident,
    inner_name: &'a syn::Ident,
    types: &'a [&'a Type],
    opts: &'a Options,
    ret: &'a Returned,
    name_span: Span,
}

/// An HTTP handler: the outer function extracts and calls into the runtime
/// with the user's own function nested inside; a unit struct (the spec)
/// carries the options, so that `handler_config` reads them from the handler.
fn handler(
    item: ItemFn,
    opts: Options,
    door: Door,
    generate: fn(&Handler<'_>) -> Generated,
) -> TokenStream {
    let transactional = item.arg_types().into_iter().any(is_tx);
    let ItemFn {
        attrs,
        vis,
        sig,
        body,
    } = item;
    let name = &sig.ident;
    let spec = format_ident!("__idempotent_spec_{}", name);
    let config = config_tokens(&opts, &name.to_string(), transactional, door);
    let const_checks = const_checks(&opts.const_checks, &quote! { #spec::CONFIG });

    // Attributes stay on the handler (docs, lints, routing, OpenAPI, ...): the
    // nested function inherits lint levels from it. `#[instrument]` goes on
    // the nested function, whose parameters are the user's; inner attributes
    // (`#![...]`) are in the body, which goes there unchanged.
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs.into_iter().partition(|a| {
        a.path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "instrument")
    });

    let inner_name = syn::Ident::new("__idempotent_handler", Span::mixed_site());
    let mut inner_sig = sig.clone();
    inner_sig.ident = inner_name.clone();

    let types: Vec<&Type> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            syn::FnArg::Typed(t) => Some(&*t.ty),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let ret = Returned::of(&sig);
    let Generated {
        outer_args,
        outer_ret,
        checks,
        call,
        items,
    } = generate(&Handler {
        spec: &spec,
        inner_name: &inner_name,
        types: &types,
        opts: &opts,
        ret: &ret,
        name_span: sig.ident.span(),
    });
    let fn_token = &sig.fn_token;
    let asyncness = &sig.asyncness;

    quote! {
        #(#outer_attrs)*
        #vis #asyncness #fn_token #name(#outer_args) -> #outer_ret {
            #(#inner_attrs)*
            #inner_sig #body

            #checks

            #call
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types, unreachable_pub)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #spec;

        impl #spec {
            const CONFIG: ::idempotent_runtime::__private::HandlerConfig = #config;
        }

        impl ::idempotent_runtime::__private::HandlerSpec for #spec {
            fn config() -> &'static ::idempotent_runtime::__private::HandlerConfig {
                static CONFIG: ::idempotent_runtime::__private::HandlerConfig = #spec::CONFIG;
                &CONFIG
            }
        }

        #const_checks
        #items
    }
}

/// The user's return type, for the conversion that checks it.
struct Returned {
    /// The first and last token of the type, so an error spans all of it.
    first: Span,
    last: Span,
    /// Where errors of the runtime call land.
    span: Span,
}

impl Returned {
    fn of(sig: &Signature) -> Self {
        match &sig.output {
            ReturnType::Default => {
                let span = sig.paren_token.span.join();
                Returned {
                    first: span,
                    last: span,
                    span,
                }
            }
            ReturnType::Type(_, ty) => {
                let (first, last) = span_range(ty.to_token_stream());
                Returned {
                    first,
                    last,
                    span: ty.span(),
                }
            }
        }
    }

    /// `value` (the handler's output) converted by `method` of `check_trait`,
    /// spelled so that an unimplemented `check_trait` is reported on the
    /// whole return type.
    fn convert(
        &self,
        check_trait: TokenStream,
        method: &str,
        value: TokenStream,
        extra_args: TokenStream,
    ) -> TokenStream {
        let (first, last) = (self.first, self.last);
        let method = syn::Ident::new(method, last);
        let returned = syn::Ident::new("__idempotent_returned", first);
        let open = quote_spanned! {first=> < };
        let field = quote_spanned! {last=> 0 };
        let callee = quote_spanned! {first=> #open _ as #check_trait>:: };
        quote! {{
            let #returned = (#value,);
            #callee #method(#returned.#field #extra_args)
        }}
    }
}

/// `<ty as check_trait>::item`, spanned so that an unimplemented
/// `check_trait` is reported on the whole of `ty`. As a statement
/// (`item == "check"`) or as the callee of a call.
fn check_type(ty: &Type, check_trait: TokenStream, item: &str) -> TokenStream {
    let (first, last) = span_range(ty.to_token_stream());
    let open = quote_spanned! {first=> < };
    let item_ident = syn::Ident::new(item, last);
    let path = quote_spanned! {first=> #open #ty as #check_trait>:: };
    if item == "check" {
        quote! { let _ = #path #item_ident; }
    } else {
        quote! { #path #item_ident }
    }
}

/// `const _: () = …` for each rule the runtime's definitions decide, failing
/// compilation on the written `lease` or `ttl`; `config` names the built
/// options in a `const` context.
fn const_checks(checks: &[ConstCheck], config: &TokenStream) -> TokenStream {
    let p = quote! { ::idempotent_runtime::__private };
    checks
        .iter()
        .map(
            |ConstCheck {
                 span,
                 rule,
                 message,
             }| {
                let fails = match rule {
                    Rule::AtLeastMinLease(ms) => quote! { #p::below_min_lease(#ms) },
                    Rule::LeaseWithinTtl { ttl_ms: None } => {
                        quote! { #p::lease_exceeds_ttl(&#config) }
                    }
                    Rule::LeaseWithinTtl { ttl_ms: Some(ms) } => {
                        quote! { !#p::below_min_lease(#ms) && #p::lease_exceeds_ttl(&#config) }
                    }
                };
                quote_spanned! {*span=>
                    const _: () = if #fails {
                        ::core::panic!(#message)
                    };
                }
            },
        )
        .collect()
}

/// The options as a `HandlerConfig`: the door's defaults (held by the
/// runtime) and a setter for each option written, nothing else.
fn config_tokens(opts: &Options, fn_name: &str, transactional: bool, door: Door) -> TokenStream {
    let p = quote! { ::idempotent_runtime::__private };
    let scope = opts.scope.as_deref().unwrap_or(fn_name);
    let mut setters = Vec::new();
    if let Some(header) = &opts.header {
        setters.push(quote! { .header(#header) });
    }
    if let Some(ms) = opts.ttl_ms {
        setters.push(quote! { .ttl(#p::Duration::from_millis(#ms)) });
    }
    if let Some(ms) = opts.lease_ms {
        setters.push(quote! { .lease(#p::Duration::from_millis(#ms)) });
    }
    if let Some(required) = opts.required {
        setters.push(quote! { .required(#required) });
    }
    if let Some(on_conflict) = opts.on_conflict {
        let value = match on_conflict {
            OnConflict::Reject => quote! { #p::OnConflict::Reject },
            OnConflict::Wait(Some(ms)) => {
                quote! { #p::OnConflict::Wait(#p::Duration::from_millis(#ms)) }
            }
            OnConflict::Wait(None) => quote! { #p::OnConflict::Wait(#p::DEFAULT_WAIT) },
        };
        setters.push(quote! { .on_conflict(#value) });
    }
    if let Some(cache) = opts.cache {
        let value = match cache {
            Cache::All => quote! { #p::CachePolicy::All },
            Cache::Success => quote! { #p::CachePolicy::Success },
            Cache::NonServerError => quote! { #p::CachePolicy::NonServerError },
        };
        setters.push(quote! { .cache(#value) });
    }
    if let Some(retry_inviting) = opts.retry_inviting {
        let value = match retry_inviting {
            RetryInviting::Release => quote! { #p::RetryInviting::Release },
            RetryInviting::Store => quote! { #p::RetryInviting::Store },
        };
        setters.push(quote! { .retry_inviting(#value) });
    }
    if let Some(replay) = &opts.replay_header {
        setters.push(quote! { .replay_header(#replay) });
    }
    match &opts.principal {
        None => {}
        Some((Principal::Header(h), _)) => {
            setters.push(quote! { .principal(#p::Principal::Header(#h)) });
        }
        Some((Principal::Function(path), span)) => {
            // Coerced in a `let` of the expected type, so a function of the
            // wrong type fails on the path with both types shown.
            let f = syn::Ident::new("__idempotent_principal", Span::mixed_site());
            setters.push(quote_spanned! {*span=>
                .principal(#p::Principal::Fn({
                    let #f: fn(&::idempotent_runtime::RequestHead<'_>) -> ::core::option::Option<::std::string::String> = #path;
                    #f
                }))
            });
        }
    }
    if transactional {
        setters.push(quote! { .transactional(true) });
    }
    match (door, &opts.scope) {
        (Door::Function, _) => quote! { #p::HandlerConfig::for_function(#scope) #(#setters)* },
        // The method's full path, known from the request.
        (Door::Tonic, None) => quote! { #p::HandlerConfig::for_grpc_method() #(#setters)* },
        _ => quote! { #p::HandlerConfig::new(#scope) #(#setters)* },
    }
}

#[cfg(test)]
mod tests;
