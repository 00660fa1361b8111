//! actix-web: the handler takes the request (typed by the spec, so that
//! `handler_config` reads the options from the handler) and the payload; the
//! runtime reads the key, buffers the body, then extracts the user's
//! arguments (in order, over the buffered body, through an impl written
//! here) and runs the handler.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};

use super::{check_type, Generated, Handler};
use crate::item::span_range;

pub(super) fn generate(h: &Handler<'_>) -> Generated {
    let Handler {
        spec,
        inner_name,
        types,
        ret,
        ..
    } = *h;
    let p = quote! { ::idempotent_runtime::__private::actix };
    let req = syn::Ident::new("__idempotent_req", Span::mixed_site());
    let respond_req = syn::Ident::new("__idempotent_respond_req", Span::mixed_site());
    let payload = syn::Ident::new("__idempotent_payload", Span::mixed_site());
    let args: Vec<_> = (0..types.len())
        .map(|i| syn::Ident::new(&format!("__idempotent_arg{i}"), Span::mixed_site()))
        .collect();

    let output = quote! { #inner_name(#(#args),*).await };
    let respond = ret.convert(
        quote! { #p::ActixResponse },
        "into_actix_response",
        output,
        quote! { , &#respond_req },
    );
    // No arguments: nothing to extract (`()`). Otherwise the arguments are
    // extracted by an impl without bounds, so that an argument that is not
    // an extractor fails there, on its type, and not as a bound of `run`.
    let (arguments, pattern, items) = if types.is_empty() {
        (quote! { () }, quote! { () }, TokenStream::new())
    } else {
        let extract_req = syn::Ident::new("__idempotent_req", Span::mixed_site());
        let extract_payload = syn::Ident::new("__idempotent_payload", Span::mixed_site());
        // Every check first: the extraction that follows has the same span
        // and the same unmet bound, so rustc reports only the check.
        let checks = types
            .iter()
            .map(|ty| check_type(ty, quote! { #p::ActixExtractor }, "check"));
        let starts = types.iter().zip(&args).map(|(ty, arg)| {
            let extract = check_type(ty, quote! { #p::ActixExtractor }, "extract");
            let (_, last) = span_range(ty.to_token_stream());
            let mut call_args = Group::new(
                Delimiter::Parenthesis,
                quote! { #extract_req, #extract_payload },
            );
            call_args.set_span(last);
            quote! { let #arg = #extract #call_args; }
        });
        // The arguments are extracted through a type of their own, as
        // private as an item can be: its impl names the user's argument
        // types, which may be less visible than the handler and its spec (a
        // `pub` handler of a private `NewPayment`; E0446 on the spec).
        let args_ty = format_ident!("{}_args", spec);
        let items = quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types, dead_code)]
            struct #args_ty;

            impl #p::Arguments for #args_ty {
                type Values = (#(#types,)*);
                fn extract(
                    #extract_req: &#p::HttpRequest,
                    #extract_payload: &mut #p::RequestPayload,
                ) -> #p::ExtractFuture<Self> {
                    #(#checks)*
                    #(#starts)*
                    ::std::boxed::Box::pin(async move {
                        #p::ExtractResult::Ok(#p::Extracted((#(#args.await?,)*)))
                    })
                }
            }
        };
        (
            quote! { #p::Extracted<#args_ty> },
            quote! { #p::Extracted((#(#args,)*)) },
            items,
        )
    };
    let span = ret.span;
    let call = quote_spanned! {span=>
        let #respond_req = ::core::clone::Clone::clone(#p::Request::http(&#req));
        #p::run::<#spec, #arguments, _, _, _>(
            #req,
            #payload,
            move |#pattern| async move { #respond },
        )
        .await
    };
    Generated {
        outer_args: quote! {
            #req: #p::Request<#spec>,
            #payload: #p::Payload
        },
        outer_ret: quote! { #p::HttpResponse },
        checks: TokenStream::new(),
        call,
        items,
    }
}
