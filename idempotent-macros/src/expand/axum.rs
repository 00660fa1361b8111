//! axum: leading extractors unchanged, the last one (or `()`) wrapped in
//! `Extract`, which reads the key and buffers the body before running it.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, Type};

use super::{check_type, Generated, Handler};
use crate::item::mentions;

pub(super) fn generate(h: &Handler<'_>) -> Generated {
    let Handler {
        spec,
        inner_name,
        types,
        opts,
        ret,
        name_span,
    } = *h;
    let p = quote! { ::idempotent_runtime::__private::axum };
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
        #extract: #p::Extract<#spec, #last_ty_tokens>
    });
    let last_binding = if last_ty.is_some() {
        quote! { #last }
    } else {
        quote! { () }
    };

    // Each argument is an extractor for the state the handler is routed
    // with. That state is known only where the router is built; as
    // axum-macros' `debug_handler` does, take the one written as `state`,
    // else the one of the handler's `State<T>` arguments. Without either (or
    // with several `State<T>`), check nothing: a custom extractor may need a
    // state that the router has and `()` has not, and axum reports an
    // argument that is not an extractor where the handler is routed.
    let state = opts.state.as_ref();
    let state_named = state.map(|ty| quote! { let _ = ::core::marker::PhantomData::<#ty>; });
    let checks = match state
        .map(ToTokens::to_token_stream)
        .or_else(|| axum_state(types))
    {
        Some(state) => {
            let leading = leading
                .iter()
                .filter(|t| checkable(t))
                .map(|ty| check_type(ty, quote! { #p::AxumPartsExtractor<#state> }, "check"));
            let last = last_ty
                .filter(|t| checkable(t))
                .map(|ty| check_type(ty, quote! { #p::AxumExtractor<#state, _> }, "check"));
            let all: Vec<_> = state_named.into_iter().chain(leading).chain(last).collect();
            if all.is_empty() {
                TokenStream::new()
            } else {
                quote! { const _: () = { #(#all)* }; }
            }
        }
        None => TokenStream::new(),
    };

    let output = quote! { #inner_name(#(#call_args),*).await };
    let respond = ret.convert(
        quote! { #p::AxumResponse },
        "into_axum_response",
        output,
        TokenStream::new(),
    );
    let handler = if call_args.is_empty() {
        quote! { || async move { #respond } }
    } else {
        quote! { move || async move { #respond } }
    };
    let span = ret.span;
    let call = quote_spanned! {span=>
        let (#ctx, #last_binding) = #p::Extract::into_parts(#extract);
        #p::run(#ctx, #handler).await
    };
    Generated {
        outer_args: quote! { #(#outer_args),* },
        outer_ret: quote! { #p::Response },
        checks,
        call,
        items: TokenStream::new(),
    }
}

/// The state extractors are checked with when `state` is not written: the
/// `T` of the handler's `State<T>` arguments if they agree; `None` if there
/// are none (the state is unknown) or if they differ (substates).
pub(super) fn axum_state(types: &[&Type]) -> Option<TokenStream> {
    let mut states: Vec<String> = Vec::new();
    let mut first = None;
    for ty in types {
        if let Some(state) = state_of(ty) {
            let key = state.to_token_stream().to_string();
            if !states.contains(&key) {
                states.push(key);
                first.get_or_insert(state);
            }
        }
    }
    match (states.len(), first) {
        (1, Some(state)) => Some(state.to_token_stream()),
        _ => None,
    }
}

/// `T` of a type `State<T>` (any path ending in `State`).
fn state_of(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Group(g) => state_of(&g.elem),
        Type::Paren(p) => state_of(&p.elem),
        Type::Path(p) if p.qself.is_none() => {
            let segment = p.path.segments.last()?;
            if segment.ident != "State" {
                return None;
            }
            let PathArguments::AngleBracketed(args) = &segment.arguments else {
                return None;
            };
            let mut types = args.args.iter().filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            });
            match (types.next(), types.next()) {
                (Some(t), None) => Some(t),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a type can be named in a check (not `Self`, `_` or `impl Trait`,
/// which are reported elsewhere or cannot be named outside the signature).
fn checkable(ty: &Type) -> bool {
    let tokens = ty.to_token_stream();
    !mentions(tokens.clone(), "Self") && !mentions(tokens.clone(), "impl") && !mentions(tokens, "_")
}
