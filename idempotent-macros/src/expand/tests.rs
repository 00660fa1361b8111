//! Unit tests of the expansion: what the macro emits for each option and
//! item shape, per door.

use super::axum::axum_state;
use super::*;
use crate::args::Args;
use crate::item::looks_like_fn;

fn expanded(item: &str) -> String {
    expanded_with("", item, Door::Axum)
}

fn expanded_with(attr: &str, item: &str, door: Door) -> String {
    let f: ItemFn = syn::parse_str(item).unwrap();
    let args = Args::parse(attr.parse().unwrap(), door).unwrap();
    let opts = crate::valid::validate(args, door, &f).ok().unwrap();
    expand(f, opts, door).to_string()
}

#[test]
fn instrument_goes_on_the_nested_function_lints_stay_outside() {
    let out = expanded(
        "#[allow(clippy::too_many_arguments)] #[tracing::instrument(skip(db))] async fn h(db: Db) { #![allow(unused)] }",
    );
    let allow = out.find("allow (clippy :: too_many_arguments)").unwrap();
    let outer_fn = out.find("async fn h").unwrap();
    let instrument = out.find("tracing :: instrument").unwrap();
    let inner_fn = out.find("async fn __idempotent_handler").unwrap();
    let inner_attr = out.find("# ! [allow (unused)]").unwrap();
    assert!(allow < outer_fn, "lint attribute on the handler");
    assert!(
        outer_fn < instrument && instrument < inner_fn,
        "instrument on the nested fn"
    );
    assert!(
        inner_fn < inner_attr,
        "inner attribute inside the nested body"
    );
}

#[test]
fn only_the_options_written_are_set() {
    let out = expanded_with(r#"scope = "payments""#, "async fn h() {}", Door::Axum);
    assert!(
        out.contains(r#"HandlerConfig :: new ("payments") ;"#),
        "{out}"
    );
    let out = expanded_with(
        r#"ttl = "1h", cache = "success""#,
        "async fn h() {}",
        Door::Axum,
    );
    let config = &out[out.find("HandlerConfig :: new").unwrap()..];
    let config = &config[..config.find(';').unwrap()];
    assert_eq!(
        config,
        "HandlerConfig :: new (\"h\") . ttl (:: idempotent_runtime :: __private :: Duration :: from_millis (3600000u64)) . cache (:: idempotent_runtime :: __private :: CachePolicy :: Success) "
    );
}

#[test]
fn defaults_are_named_from_the_runtime() {
    let out = expanded_with(r#"on_conflict = "wait""#, "async fn h() {}", Door::Axum);
    assert!(
        out.contains(". on_conflict (:: idempotent_runtime :: __private :: OnConflict :: Wait (:: idempotent_runtime :: __private :: DEFAULT_WAIT))"),
        "{out}"
    );
    let out = expanded_with(
        r#"on_conflict = "wait", wait = "3s", retry_inviting = "store""#,
        "async fn h() {}",
        Door::Axum,
    );
    assert!(out.contains("Duration :: from_millis (3000u64)"), "{out}");
    assert!(
        out.contains(
            ". retry_inviting (:: idempotent_runtime :: __private :: RetryInviting :: Store)"
        ),
        "{out}"
    );
}

#[test]
fn rules_over_the_runtime_are_checked_in_a_const() {
    let out = expanded_with(r#"lease = "2d""#, "async fn h() {}", Door::Axum);
    assert!(
        out.contains("const _ : () = if :: idempotent_runtime :: __private :: lease_exceeds_ttl (& __idempotent_spec_h :: CONFIG)"),
        "{out}"
    );
    assert!(
        out.contains("const _ : () = if :: idempotent_runtime :: __private :: below_min_lease (172800000u64)"),
        "{out}"
    );
    let out = expanded_with(r#"lease = "2d", ttl = "7d""#, "async fn h() {}", Door::Axum);
    assert!(!out.contains("lease_exceeds_ttl"), "{out}");
}

#[test]
fn axum_arguments_are_checked_for_the_state_of_their_position() {
    let out = expanded(
        "async fn h(State(s): State<App>, p: Path<u32>, Json(j): Json<T>) -> String { todo!() }",
    );
    assert!(out.contains("< State < App > as :: idempotent_runtime :: __private :: axum :: AxumPartsExtractor < App > > :: check"), "{out}");
    assert!(out.contains("< Path < u32 > as :: idempotent_runtime :: __private :: axum :: AxumPartsExtractor < App > > :: check"), "{out}");
    assert!(out.contains("< Json < T > as :: idempotent_runtime :: __private :: axum :: AxumExtractor < App , _ > > :: check"), "{out}");
    assert!(out.contains("< _ as :: idempotent_runtime :: __private :: axum :: AxumResponse > :: into_axum_response"), "{out}");
}

#[test]
fn the_state_is_the_one_written_else_that_of_the_state_argument() {
    let check = |ty: &str, state: &str| {
        format!("< {ty} as :: idempotent_runtime :: __private :: axum :: AxumPartsExtractor < {state} > > :: check")
    };
    // Written: it checks every argument, `State<T>` ones included
    // (substates), and is named even without arguments to check.
    let out = expanded_with(
        "state = AppState",
        "async fn h(a: State<Pool>, u: User, Json(j): Json<T>) {}",
        Door::Axum,
    );
    assert!(out.contains(&check("State < Pool >", "AppState")), "{out}");
    assert!(out.contains(&check("User", "AppState")), "{out}");
    assert!(out.contains("< Json < T > as :: idempotent_runtime :: __private :: axum :: AxumExtractor < AppState , _ > > :: check"), "{out}");
    let out = expanded_with("state = AppState", "async fn h() {}", Door::Axum);
    assert!(
        out.contains(
            "const _ : () = { let _ = :: core :: marker :: PhantomData :: < AppState > ; } ;"
        ),
        "{out}"
    );
    // Not written, no `State<T>`: the state is unknown, nothing is checked.
    let out = expanded("async fn h(u: User, Json(j): Json<T>) {}");
    assert!(!out.contains("AxumPartsExtractor"), "{out}");
    assert!(!out.contains("AxumExtractor"), "{out}");
    assert!(!out.contains("PhantomData"), "{out}");
}

#[test]
fn the_state_of_the_state_arguments() {
    let types = |sig: &str| -> Vec<Type> {
        let f: ItemFn = syn::parse_str(&format!("{sig} {{}}")).unwrap();
        f.arg_types().into_iter().cloned().collect()
    };
    let state = |sig: &str| {
        let types = types(sig);
        axum_state(&types.iter().collect::<Vec<_>>()).map(|s| s.to_string())
    };
    assert_eq!(state("fn h(a: HeaderMap)"), None);
    assert_eq!(
        state("fn h(a: State<App>, b: axum::extract::State<App>)").as_deref(),
        Some("App")
    );
    assert_eq!(
        state("fn h(a: State<&'static str>)").as_deref(),
        Some("& 'static str")
    );
    // Substates: only the router knows the state.
    assert_eq!(state("fn h(a: State<App>, b: State<Pool>)"), None);
}

#[test]
fn several_states_check_no_extractor() {
    let out = expanded("async fn h(a: State<App>, b: State<Pool>, c: Account) {}");
    assert!(!out.contains("AxumPartsExtractor"), "{out}");
    assert!(!out.contains("AxumExtractor"), "{out}");
}

#[test]
fn actix_arguments_are_extracted_by_an_impl_without_bounds() {
    let out = expanded_with(
        "",
        "async fn h(p: web::Path<u32>, j: web::Json<T>) -> HttpResponse { todo!() }",
        Door::Actix,
    );
    // On a private type of their own, never on the spec, whose
    // visibility is the handler's.
    assert!(out.contains("struct __idempotent_spec_h_args ;"), "{out}");
    assert!(out.contains("impl :: idempotent_runtime :: __private :: actix :: Arguments for __idempotent_spec_h_args { type Values = (web :: Path < u32 > , web :: Json < T > ,) ;"), "{out}");
    let check = out.find("< web :: Json < T > as :: idempotent_runtime :: __private :: actix :: ActixExtractor > :: check").unwrap();
    let extract = out.find("< web :: Json < T > as :: idempotent_runtime :: __private :: actix :: ActixExtractor > :: extract").unwrap();
    assert!(check < extract, "every check before the extractions");
    assert!(out.contains("run :: < __idempotent_spec_h , :: idempotent_runtime :: __private :: actix :: Extracted < __idempotent_spec_h_args > , _ , _ , _ >"), "{out}");
    // No arguments: nothing to extract.
    let out = expanded_with("", "async fn h() -> HttpResponse { todo!() }", Door::Actix);
    assert!(!out.contains("Arguments for"), "{out}");
    assert!(
        out.contains("run :: < __idempotent_spec_h , () , _ , _ , _ >"),
        "{out}"
    );
}

#[test]
fn generics_receivers_and_impl_trait_are_refused() {
    let errors = |item: &str| -> Vec<String> {
        let f: ItemFn = syn::parse_str(item).unwrap();
        f.check(Door::Axum)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert!(errors("async fn h(a: u8) {}").is_empty());
    assert_eq!(
        errors("fn h() {}"),
        ["`#[idempotent]` requires an `async fn`"]
    );
    assert!(errors("async fn h<T>(t: T) {}")[0].contains("cannot be generic"));
    assert!(errors("async fn h(a: u8) where u8: Copy {}")[0].contains("cannot be generic"));
    assert!(errors("async fn h(a: impl Send) {}")[0].contains("instead of `impl Trait`"));
    assert!(errors("async fn h(&self) {}")[0].contains("`self` receiver"));
}

#[test]
fn the_body_is_not_parsed() {
    let f: ItemFn = syn::parse_str("async fn h() -> u8 { let x = ; x }").unwrap();
    assert!(f.body.to_string().contains("let x = ;"));
}

#[test]
fn only_functions_look_like_functions() {
    for item in [
        "async fn h(x: ) {}",
        "pub(crate) async unsafe extern \"C\" fn h() {}",
        "#[doc = \"x\"] const fn h() {}",
    ] {
        assert!(looks_like_fn(item.parse().unwrap()), "{item}");
    }
    for item in [
        "struct Payments;",
        "const F: fn() = f;",
        "impl A { fn f() {} }",
    ] {
        assert!(!looks_like_fn(item.parse().unwrap()), "{item}");
    }
}

#[test]
fn zero_arguments_pass_the_function_itself() {
    let out = expanded("async fn h() {}");
    assert!(!out.contains("move ||"), "{out}");
}

#[test]
fn a_tx_argument_makes_a_handler_transactional() {
    let out = expanded("async fn h(tx: Tx, Json(j): Json<T>) {}");
    assert!(out.contains(". transactional (true)"), "{out}");
    let out = expanded("async fn h(Json(j): Json<T>) {}");
    assert!(!out.contains("transactional"), "{out}");
}

const FUNCTION: &str =
    "async fn place(order: Order, mut tx: Tx) -> Result<Receipt, OrderError> { tx.go(&order).await }";

#[test]
fn a_function_keeps_its_signature_but_the_tx() {
    let out = expanded_with("key = order.id", FUNCTION, Door::Function);
    assert!(
        out.starts_with("async fn place (order : Order) -> Result < Receipt , OrderError > {"),
        "{out}"
    );
    assert!(
        out.contains("HandlerConfig :: for_function (\"place\") . transactional (true)"),
        "{out}"
    );
    assert!(
        out.contains("move | mut tx : Tx | async move { tx . go (& order) . await }"),
        "{out}"
    );
    // Owned arguments: the body is detached from the caller.
    assert!(
        out.contains("function :: run_detached (__idempotent_call"),
        "{out}"
    );
}

#[test]
fn a_function_checks_its_types_where_they_are_written() {
    let out = expanded_with("key = order.id", FUNCTION, Door::Function);
    let p = ":: idempotent_runtime :: __private :: function";
    assert!(
        out.contains(&format!("< Receipt as {p} :: StoredValue > :: codec ()")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "< OrderError as {p} :: ReceivesRefusals > :: refusal"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "< Order as {p} :: Fingerprinted > :: add (& mut __idempotent_fingerprint , & order)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{p} :: key_of (& (order . id))")),
        "{out}"
    );
    // The `Tx` is not fingerprinted; errors are not stored by default.
    assert!(!out.contains("< Tx as"), "{out}");
    assert!(!out.contains("StoredError"), "{out}");
    let out = expanded_with(r#"key = order.id, cache = "all""#, FUNCTION, Door::Function);
    assert!(
        out.contains(&format!(
            "Some (< OrderError as {p} :: StoredError > :: codec ())"
        )),
        "{out}"
    );
    // An alias of `Result`: through the trait, on the whole type.
    let out = expanded_with(
        "key = id",
        "async fn f(id: u64) -> io::Result<u8> { Ok(1) }",
        Door::Function,
    );
    assert!(
        out.contains(&format!(
            "< io :: Result < u8 > as {p} :: FunctionResult > :: Ok as {p} :: StoredValue"
        )),
        "{out}"
    );
}

#[test]
fn a_function_fingerprints_what_it_is_told() {
    let item = "async fn f(&self, idem: &Idempotency, order: Order, note: String) -> Result<(), E> { Ok(()) }";
    let out = expanded_with("key = order.id, store = idem", item, Door::Function);
    assert!(
        out.contains("Fingerprinted > :: add (& mut __idempotent_fingerprint , & order)"),
        "{out}"
    );
    assert!(
        out.contains("Fingerprinted > :: add (& mut __idempotent_fingerprint , & note)"),
        "{out}"
    );
    assert!(
        !out.contains("& idem) ;"),
        "the store is not fingerprinted: {out}"
    );
    assert!(out.contains("function :: runtime_of (& (idem))"), "{out}");
    // Borrowed arguments: inline.
    assert!(out.contains("function :: run (__idempotent_call"), "{out}");
    let out = expanded_with(
        "key = order.id, fingerprint = order.lines",
        item,
        Door::Function,
    );
    assert!(
        out.contains(
            "Fingerprinter :: add_value (& mut __idempotent_fingerprint , & (order . lines))"
        ),
        "{out}"
    );
    assert!(!out.contains("Fingerprinted"), "{out}");
    let out = expanded_with("key = order.id, fingerprint = false", item, Door::Function);
    assert!(!out.contains("Fingerprinter"), "{out}");
}

#[test]
fn an_async_trait_method_keeps_its_boxed_future() {
    // As `#[async_trait]` (on the impl, so first) leaves a method.
    let item = "fn handle<'life0, 'async_trait>(&'life0 self, order: Order, tx: Tx) \
        -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<Receipt, E>> + ::core::marker::Send + 'async_trait>> \
        where 'life0: 'async_trait, Self: 'async_trait \
        { Box::pin(async move { let __self = self; let order = order; let tx = tx; let __ret: Result<Receipt, E> = { __self.go(order, tx).await }; #[allow(unreachable_code)] __ret }) }";
    let f: ItemFn = syn::parse_str(item).unwrap();
    assert!(f.check(Door::Function).is_empty());
    let out = expanded_with("key = order.id", item, Door::Function);
    assert!(
        out.contains("fn handle < 'life0 , 'async_trait > (& 'life0 self , order : Order) ->"),
        "{out}"
    );
    assert!(
        out.contains("{ Box :: pin (async move { const __IDEMPOTENT_CONFIG"),
        "{out}"
    );
    assert!(
        out.contains(
            "< Receipt as :: idempotent_runtime :: __private :: function :: StoredValue >"
        ),
        "{out}"
    );
    assert!(
        out.contains("function :: run (__idempotent_call , < Receipt"),
        "{out}"
    );
    assert!(
        out.contains("move | tx : Tx | async move { let __self = self ;"),
        "{out}"
    );
}

#[test]
fn inner_attributes_of_a_function_stay_on_it() {
    let out = expanded_with(
        "key = id",
        "async fn f(id: u64) -> Result<u8, E> { #![allow(unused)] Ok(1) }",
        Door::Function,
    );
    let attr = out.find("# ! [allow (unused)]").unwrap();
    let body = out.find("async move { Ok (1) }").unwrap();
    assert!(attr < body, "{out}");
}
