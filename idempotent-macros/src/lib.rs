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
    let mut errors = Vec::new();
    let args = match syn::parse2::<args::Args>(attr) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let func: expand::HandlerFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        // A function whose signature does not parse: rustc reports the real
        // syntax error on the item, re-emitted unchanged. (Its body is never
        // parsed here: a syntax error there is reported by rustc on the
        // expanded handler.)
        // Ours stays too, in case rustc accepts what syn cannot read: the
        // handler must not compile without its idempotency.
        Err(e) if expand::looks_like_fn(item.clone()) => {
            errors.push(syn::Error::new(
                e.span(),
                "`#[idempotent]` cannot read this handler's signature: fix the syntax error here",
            ));
            return with_errors(item, errors);
        }
        Err(_) => {
            let err = syn::Error::new_spanned(
                &item,
                "`#[idempotent]` can only be applied to an `async fn` handler",
            );
            return with_errors(item, vec![err]);
        }
    };
    errors.extend(expand::check_item(&func));
    let opts = match args.map(|args| valid::validate(args, framework)) {
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
        _ if func.sig.variadic.is_some() => with_errors(func.without_variadic(), errors),
        _ => with_errors(item, errors),
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
    use super::expand::Framework;

    fn expand(attr: &str, item: &str) -> String {
        super::expand_attr(
            attr.parse().unwrap(),
            item.parse().unwrap(),
            Framework::Axum,
        )
        .to_string()
    }

    #[test]
    fn an_item_that_is_not_a_function_is_refused() {
        let out = expand("", "struct Payments;");
        assert!(
            out.contains("can only be applied to an `async fn` handler"),
            "{out}"
        );
        assert!(out.contains("struct Payments"), "{out}");
    }

    #[test]
    fn a_syntax_error_in_the_body_is_left_to_rustc() {
        let out = expand("", "async fn h() -> u8 { let x = 1 x }");
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("async fn __idempotent_handler"), "{out}");
        assert!(out.contains("let x = 1 x"), "{out}");
    }

    #[test]
    fn a_syntax_error_in_the_signature_keeps_the_item_as_written() {
        let out = expand("", "async fn h(x: ) -> u8 { 1 }");
        assert!(out.contains("compile_error"), "{out}");
        assert!(
            out.contains("cannot read this handler's signature"),
            "{out}"
        );
        assert!(out.contains("async fn h (x :) -> u8 { 1 }"), "{out}");
    }

    #[test]
    fn errors_keep_the_item_and_come_all_at_once() {
        let out = expand(r#"headr = "x", ttl = "soon""#, "fn h() {}");
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
        assert!(out.ends_with("fn h () { }"), "{out}");
    }

    #[test]
    fn a_variadic_handler_is_re_emitted_without_its_dots() {
        let out = expand("", "async fn h(a: u8, ...) {}");
        assert!(out.contains("cannot be variadic"), "{out}");
        assert!(out.contains("async fn h (a : u8 ,) { }"), "{out}");
    }

    #[test]
    fn framework_errors_keep_the_item_and_say_what_to_do() {
        let item: proc_macro2::TokenStream = "async fn h() {}".parse().unwrap();
        let out = super::framework_error(item, "enable the `axum` or `actix` feature").to_string();
        assert!(out.contains("compile_error"));
        assert!(out.contains("enable the `axum` or `actix` feature"));
        assert!(out.contains("async fn h"));
    }
}
