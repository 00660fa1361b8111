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

/// Makes an async handler idempotent. See `idempotent_runtime` for the
/// arguments and the behaviour.
#[proc_macro_attribute]
pub fn idempotent(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_attr(attr.into(), item.into()).into()
}

fn expand_attr(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
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
        Some(opts) if errors.is_empty() => expand::expand(func, opts),
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
