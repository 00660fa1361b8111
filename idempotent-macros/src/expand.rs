//! Code generation: the handler becomes a thin outer function that extracts,
//! then calls into the runtime with the user's own function nested inside it.
//!
//! Every trait the user's types must satisfy is checked by code spanned on
//! those types (through the runtime's hidden check traits), so rustc reports
//! a wrong return type or argument there, naming the trait.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, PathArguments, ReturnType, Signature, Type, Visibility,
};

use crate::valid::{Cache, LeaseCheck, OnConflict, Options, Principal, RetryInviting};

/// The handler as written. Its statements are kept as tokens, never parsed,
/// so a syntax error among them reaches rustc as written and rustc reports
/// it there.
pub(crate) struct HandlerFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    /// `{ ... }`, inner attributes included.
    pub(crate) body: Group,
}

impl Parse for HandlerFn {
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
        Ok(HandlerFn {
            attrs,
            vis,
            sig,
            body: tidy_body(body),
        })
    }
}

impl HandlerFn {
    /// The item as written, but without a variadic `...`, which would only
    /// add rustc's own errors to ours.
    pub(crate) fn without_variadic(&self) -> TokenStream {
        let HandlerFn {
            attrs,
            vis,
            sig,
            body,
        } = self;
        let mut sig = sig.clone();
        sig.variadic = None;
        quote! { #(#attrs)* #vis #sig #body }
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

/// Checks the item is a handler we can rewrite.
pub(crate) fn check_item(f: &HandlerFn) -> Vec<syn::Error> {
    let mut errors = Vec::new();
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span(),
            "`#[idempotent]` requires an `async fn`",
        ));
    }
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
    for ty in arg_types(sig) {
        if mentions(ty.to_token_stream(), "impl") {
            errors.push(syn::Error::new_spanned(
                ty,
                "`#[idempotent]` handlers cannot be generic; use a concrete type instead of `impl Trait`",
            ));
        }
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            v,
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

pub(crate) fn expand(f: HandlerFn, opts: Options, framework: Framework) -> TokenStream {
    let HandlerFn {
        attrs,
        vis,
        sig,
        body,
    } = f;
    let name = &sig.ident;
    let spec = format_ident!("__idempotent_spec_{}", name);
    let config = config_tokens(&opts, &name.to_string());
    let lease_check = opts.lease_check.as_ref().map(|c| lease_check(c, &spec));

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

    let types = arg_types(&sig);
    let ret = Returned::of(&sig);
    let generated = match framework {
        Framework::Axum => axum(
            &spec,
            &inner_name,
            &types,
            opts.state.as_ref(),
            &ret,
            sig.ident.span(),
        ),
        Framework::Actix => actix(&spec, &inner_name, &types, &ret),
    };
    let Generated {
        outer_args,
        outer_ret,
        checks,
        call,
        items,
    } = generated;
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

        #lease_check
        #items
    }
}

/// What a framework adds around the user's function.
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

/// axum: leading extractors unchanged, the last one (or `()`) wrapped in
/// `Extract`, which reads the key and buffers the body before running it.
fn axum(
    spec: &syn::Ident,
    inner_name: &syn::Ident,
    types: &[&Type],
    state: Option<&Type>,
    ret: &Returned,
    name_span: Span,
) -> Generated {
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
pub(crate) fn axum_state(types: &[&Type]) -> Option<TokenStream> {
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

/// actix-web: the handler takes the request (typed by the spec, so that
/// `handler_config` reads the options from the handler) and the payload; the runtime
/// reads the key, buffers the body, then extracts the user's arguments (in
/// order, over the buffered body, through an impl written here) and runs the
/// handler.
fn actix(spec: &syn::Ident, inner_name: &syn::Ident, types: &[&Type], ret: &Returned) -> Generated {
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

/// `<ty as check_trait>::item`, spanned so that an unimplemented
/// `check_trait` is reported on the whole of `ty`. As a statement
/// (`item == "check"`) or as the callee of an extraction.
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

/// The spans of the first and last tokens: an error spanning from one to
/// the other covers the whole type (one span cannot, on stable).
fn span_range(tokens: TokenStream) -> (Span, Span) {
    let mut tokens = tokens.into_iter();
    let first = tokens.next().map_or_else(Span::call_site, |t| t.span());
    let last = tokens.last().map_or(first, |t| t.span());
    (first, last)
}

/// Whether a type can be named in a check (not `Self`, `_` or `impl Trait`,
/// which are reported elsewhere or cannot be named outside the signature).
fn checkable(ty: &Type) -> bool {
    let tokens = ty.to_token_stream();
    !mentions(tokens.clone(), "Self") && !mentions(tokens.clone(), "impl") && !mentions(tokens, "_")
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

fn arg_types(sig: &Signature) -> Vec<&Type> {
    sig.inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(t) => Some(&*t.ty),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// `const _: () = ...` failing compilation, on the written `lease` or `ttl`,
/// when the built options' lease outlives their TTL.
fn lease_check(check: &LeaseCheck, spec: &syn::Ident) -> TokenStream {
    let LeaseCheck { span, message } = check;
    quote_spanned! {*span=>
        const _: () = if ::idempotent_runtime::__private::lease_exceeds_ttl(&#spec::CONFIG) {
            ::core::panic!(#message)
        };
    }
}

/// `HandlerConfig::new(scope)` and a setter for each option written, nothing
/// else: the runtime holds the defaults.
pub(crate) fn config_tokens(opts: &Options, fn_name: &str) -> TokenStream {
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
    quote! {
        #p::HandlerConfig::new(#scope) #(#setters)*
    }
}

#[cfg(test)]
mod tests;
