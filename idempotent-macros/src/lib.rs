//! The `#[idempotent]` attribute. Use it through `idempotent-runtime`, which
//! re-exports it and holds everything the generated code calls.
//!
//! The macro parses and validates its arguments at compile time (errors point
//! at the offending token), then rewrites the item into a call into the
//! runtime. All behaviour lives in the runtime.
//!
//! Modules import one way: `args` (the argument table and the parse) →
//! `item` (the function as written) → `valid` (the rules) → `expand` (one
//! file per door).

mod args;
mod expand;
mod item;
mod valid;

use proc_macro::TokenStream;

use args::Door;

/// `#[idempotent]` for axum handlers; use it as `idempotent_runtime::axum::idempotent`.
///
#[doc = include_str!("../doc/axum.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_axum(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_attr(attr.into(), item.into(), Door::Axum).into()
}

/// `#[idempotent]` for actix-web handlers; use it as
/// `idempotent_runtime::actix::idempotent`.
///
#[doc = include_str!("../doc/actix.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_actix(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_attr(attr.into(), item.into(), Door::Actix).into()
}

/// `#[idempotent(key = …)]` for any `async fn`; use it as
/// `idempotent_runtime::idempotent` or `idempotent_runtime::function::idempotent`.
///
#[doc = include_str!("../doc/function.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_function(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_attr(attr.into(), item.into(), Door::Function).into()
}

/// `#[idempotent]` for unary tonic methods; use it as
/// `idempotent_runtime::tonic::idempotent`.
///
#[doc = include_str!("../doc/tonic.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_tonic(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_attr(attr.into(), item.into(), Door::Tonic).into()
}

/// `idempotent_runtime::idempotent` with the `axum` feature alone: a
/// function's attribute when it names a `key`, else an axum handler's.
///
#[doc = include_str!("../doc/root.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_root_axum(attr: TokenStream, item: TokenStream) -> TokenStream {
    let door = root_door(&attr.clone().into(), Door::Axum);
    expand_attr(attr.into(), item.into(), door).into()
}

/// `idempotent_runtime::idempotent` with the `actix` feature alone: a
/// function's attribute when it names a `key`, else an actix-web handler's.
///
#[doc = include_str!("../doc/root.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_root_actix(attr: TokenStream, item: TokenStream) -> TokenStream {
    let door = root_door(&attr.clone().into(), Door::Actix);
    expand_attr(attr.into(), item.into(), door).into()
}

/// `idempotent_runtime::idempotent` with both framework features: a
/// function's attribute when it names a `key`; on a handler, one error
/// saying which path to import.
///
#[doc = include_str!("../doc/root.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_ambiguous(attr: TokenStream, item: TokenStream) -> TokenStream {
    if args::names_key(&attr.clone().into()) {
        return expand_attr(attr.into(), item.into(), Door::Function).into();
    }
    framework_error(
        item.into(),
        "both the `axum` and `actix` features of idempotent-runtime are enabled, so `#[idempotent]` cannot tell which framework this handler is for: import `idempotent_runtime::axum::idempotent` or `idempotent_runtime::actix::idempotent` (on a function, name its key: `#[idempotent(key = …)]`)",
    )
    .into()
}

/// `idempotent_runtime::idempotent` with no framework feature: a
/// function's attribute when it names a `key`; on a handler, one error
/// saying which feature to enable.
///
#[doc = include_str!("../doc/root.md")]
#[doc = include_str!("../doc/arguments.md")]
#[proc_macro_attribute]
pub fn idempotent_no_framework(attr: TokenStream, item: TokenStream) -> TokenStream {
    if args::names_key(&attr.clone().into()) {
        return expand_attr(attr.into(), item.into(), Door::Function).into();
    }
    framework_error(
        item.into(),
        "`#[idempotent]` on an HTTP handler needs a framework: enable the `axum` or `actix` feature of idempotent-runtime, e.g. `idempotent-runtime = { version = \"0.1\", features = [\"axum\"] }`; on any other `async fn`, name its key: `#[idempotent(key = …)]`",
    )
    .into()
}

/// The door of the crate-root attribute: a function when the arguments
/// name a `key`, else the one framework's handler.
fn root_door(attr: &proc_macro2::TokenStream, framework: Door) -> Door {
    if args::names_key(attr) {
        Door::Function
    } else {
        framework
    }
}

fn framework_error(item: proc_macro2::TokenStream, message: &str) -> proc_macro2::TokenStream {
    let err = syn::Error::new(proc_macro2::Span::call_site(), message).to_compile_error();
    quote::quote! { #err #item }
}

fn expand_attr(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
    door: Door,
) -> proc_macro2::TokenStream {
    let mut errors = Vec::new();
    let args = match args::Args::parse(attr, door) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let func: item::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        // A function whose signature does not parse: rustc reports the real
        // syntax error on the item, re-emitted unchanged. (Its body is never
        // parsed here: a syntax error there is reported by rustc on the
        // expanded item.)
        // Ours stays too, in case rustc accepts what syn cannot read: the
        // function must not compile without its idempotency.
        Err(e) if item::looks_like_fn(item.clone()) => {
            errors.push(syn::Error::new(
                e.span(),
                "`#[idempotent]` cannot read this function's signature: fix the syntax error here",
            ));
            return with_errors(item, errors);
        }
        Err(_) => {
            let err = syn::Error::new_spanned(
                &item,
                "`#[idempotent]` can only be applied to an `async fn`",
            );
            return with_errors(item, vec![err]);
        }
    };
    errors.extend(func.check(door));
    let opts = match args.map(|args| valid::validate(args, door, &func)) {
        Some(Ok(o)) => Some(o),
        Some(Err(es)) => {
            errors.extend(es);
            None
        }
        None => None,
    };
    match opts {
        Some(opts) if errors.is_empty() => expand::expand(func, opts, door),
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
    use super::Door;

    fn expand(attr: &str, item: &str) -> String {
        expand_for(attr, item, Door::Axum)
    }

    fn expand_for(attr: &str, item: &str, door: Door) -> String {
        super::expand_attr(attr.parse().unwrap(), item.parse().unwrap(), door).to_string()
    }

    #[test]
    fn an_item_that_is_not_a_function_is_refused() {
        let out = expand("", "struct Payments;");
        assert!(
            out.contains("can only be applied to an `async fn`"),
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
        let out = expand_for(
            "key = o",
            "async fn f(o: u8) -> Result<u8, E> { let x = 1 x }",
            Door::Function,
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("let x = 1 x"), "{out}");
    }

    #[test]
    fn a_syntax_error_in_the_signature_keeps_the_item_as_written() {
        let out = expand("", "async fn h(x: ) -> u8 { 1 }");
        assert!(out.contains("compile_error"), "{out}");
        assert!(
            out.contains("cannot read this function's signature"),
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

    #[test]
    fn the_crate_root_attribute_is_a_functions_when_it_names_a_key() {
        let attr: proc_macro2::TokenStream = "key = order.id".parse().unwrap();
        assert_eq!(super::root_door(&attr, Door::Axum), Door::Function);
        let attr: proc_macro2::TokenStream = r#"scope = "p""#.parse().unwrap();
        assert_eq!(super::root_door(&attr, Door::Actix), Door::Actix);
    }
}
