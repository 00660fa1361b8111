//! The `#[idempotent]` attribute. Use it through `idempotent-runtime`, which
//! re-exports it and holds everything the generated code calls.
//!
//! The macro parses and validates its arguments at compile time (errors point
//! at the offending token), then rewrites the handler into a call into the
//! runtime. All behaviour lives in the runtime.

mod args;
mod expand;
mod valid;

use proc_macro::TokenStream;
use quote::ToTokens;

/// `#[idempotent]` for axum handlers; use it as `idempotent_runtime::axum::idempotent`.
#[proc_macro_attribute]
pub fn idempotent_axum(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_attr(attr.into(), item.into(), expand::Framework::Axum).into()
}

/// `#[idempotent]` for actix-web handlers; use it as
/// `idempotent_runtime::actix::idempotent`.
#[proc_macro_attribute]
pub fn idempotent_actix(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_attr(attr.into(), item.into(), expand::Framework::Actix).into()
}

/// What `idempotent_runtime::idempotent` is when both framework features are
/// enabled: the user's item and one error saying which path to import.
#[proc_macro_attribute]
pub fn idempotent_ambiguous(_attr: TokenStream, item: TokenStream) -> TokenStream {
    framework_error(
        item.into(),
        "both the `axum` and `actix` features of idempotent-runtime are enabled, so `#[idempotent]` cannot tell which framework this handler is for: import `idempotent_runtime::axum::idempotent` or `idempotent_runtime::actix::idempotent`",
    )
    .into()
}

/// What `idempotent_runtime::idempotent` is when no framework feature is
/// enabled.
#[proc_macro_attribute]
pub fn idempotent_no_framework(_attr: TokenStream, item: TokenStream) -> TokenStream {
    framework_error(
        item.into(),
        "`#[idempotent]` needs a framework: enable the `axum` or `actix` feature of idempotent-runtime, e.g. `idempotent-runtime = { version = \"0.1\", features = [\"axum\"] }`",
    )
    .into()
}

fn framework_error(item: proc_macro2::TokenStream, message: &str) -> proc_macro2::TokenStream {
    let err = syn::Error::new(proc_macro2::Span::call_site(), message).to_compile_error();
    quote::quote! { #err #item }
}

fn expand_attr(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
    framework: expand::Framework,
) -> proc_macro2::TokenStream {
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new_spanned(
                &item,
                "`#[idempotent]` can only be applied to an `async fn` handler",
            );
            return with_errors(item, vec![err]);
        }
    };
    let mut errors = Vec::new();
    let args = match syn::parse2::<args::Args>(attr) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    errors.extend(expand::check_item(&func));
    let opts = match args.map(valid::validate) {
        Some(Ok(o)) => Some(o),
        Some(Err(es)) => {
            errors.extend(es);
            None
        }
        None => None,
    };
    match opts {
        Some(opts) if errors.is_empty() => expand::expand(func, opts, framework),
        // On any error: the user's item unchanged (IDEs keep working) plus
        // every error at once.
        _ => with_errors(func.into_token_stream(), errors),
    }
}

fn with_errors(
    item: proc_macro2::TokenStream,
    errors: Vec<syn::Error>,
) -> proc_macro2::TokenStream {
    let errors = errors.into_iter().map(|e| e.to_compile_error());
    quote::quote! { #(#errors)* #item }
}

#[cfg(test)]
mod tests {
    #[test]
    fn framework_errors_keep_the_item_and_say_what_to_do() {
        let item: proc_macro2::TokenStream = "async fn h() {}".parse().unwrap();
        let out = super::framework_error(item, "enable the `axum` or `actix` feature").to_string();
        assert!(out.contains("compile_error"));
        assert!(out.contains("enable the `axum` or `actix` feature"));
        assert!(out.contains("async fn h"));
    }
}
