use super::{
    parse_duration_ms, validate, Cache, Fingerprint, OnConflict, Options, RetryInviting, Rule,
};
use crate::args::{Args, Door};
use crate::item::ItemFn;
use proptest::prelude::*;

const HANDLER: &str = "async fn h() {}";
const FUNCTION: &str = "async fn pay(&self, order: Order, tx: Tx) -> Result<Receipt, E> {}";

fn options(attr: &str) -> Result<Options, Vec<String>> {
    options_for(attr, Door::Axum, HANDLER)
}

fn options_for(attr: &str, door: Door, item: &str) -> Result<Options, Vec<String>> {
    let args = Args::parse(attr.parse().unwrap(), door).map_err(|e| vec![e.to_string()])?;
    let item: ItemFn = syn::parse_str(item).unwrap();
    validate(args, door, &item).map_err(|es| es.iter().map(ToString::to_string).collect())
}

fn error(attr: &str) -> String {
    error_for(attr, Door::Axum, HANDLER)
}

fn error_for(attr: &str, door: Door, item: &str) -> String {
    match options_for(attr, door, item) {
        Ok(_) => panic!("{attr} is accepted"),
        Err(es) => {
            assert_eq!(es.len(), 1, "{es:?}");
            es[0].clone()
        }
    }
}

#[test]
fn options_not_written_stay_unset() {
    let o = options(r#"scope = "payments""#).unwrap();
    assert_eq!(o.scope.as_deref(), Some("payments"));
    assert!(o.header.is_none() && o.replay_header.is_none());
    assert!(o.ttl_ms.is_none() && o.lease_ms.is_none());
    assert!(o.required.is_none() && o.on_conflict.is_none() && o.cache.is_none());
    assert!(o.principal.is_none() && o.const_checks.is_empty());
    assert!(o.retry_inviting.is_none() && o.state.is_none());
    assert!(o.key.is_none() && o.fingerprint.is_none() && o.store.is_none());
}

#[test]
fn options_written_are_set_as_written() {
    let o = options(
        r#"header = "X-Key", ttl = "7d", lease = "1m", required = false, on_conflict = "reject", cache = "success", replay_header = "X-Replayed""#,
    )
    .unwrap();
    assert_eq!(o.header.as_deref(), Some("x-key"));
    assert_eq!(o.replay_header.as_deref(), Some("x-replayed"));
    assert_eq!(o.ttl_ms, Some(7 * 86_400_000));
    assert_eq!(o.lease_ms, Some(60_000));
    assert_eq!(o.required, Some(false));
    assert_eq!(o.on_conflict, Some(OnConflict::Reject));
    assert_eq!(o.cache, Some(Cache::Success));
    let o = options(r#"retry_inviting = "store", state = Arc<AppState>"#).unwrap();
    assert_eq!(o.retry_inviting, Some(RetryInviting::Store));
    let state = o.state.unwrap();
    assert_eq!(quote::quote!(#state).to_string(), "Arc < AppState >");
    let o = options(r#"retry_inviting = "release""#).unwrap();
    assert_eq!(o.retry_inviting, Some(RetryInviting::Release));
}

#[test]
fn waiting_without_a_wait_leaves_the_duration_to_the_runtime() {
    let o = options(r#"on_conflict = "wait""#).unwrap();
    assert_eq!(o.on_conflict, Some(OnConflict::Wait(None)));
    let o = options(r#"on_conflict = "wait", wait = "3s""#).unwrap();
    assert_eq!(o.on_conflict, Some(OnConflict::Wait(Some(3_000))));
}

#[test]
fn storing_retry_inviting_responses_needs_a_cache_that_keeps_errors() {
    assert!(error(r#"cache = "success", retry_inviting = "store""#)
        .starts_with("`retry_inviting = \"store\"` has no effect with `cache = \"success\"`"));
    assert!(options(r#"cache = "success", retry_inviting = "release""#).is_ok());
    assert!(options(r#"cache = "non_server_error", retry_inviting = "store""#).is_ok());
    assert!(options(r#"retry_inviting = "store""#).is_ok());
}

#[test]
fn state_is_a_concrete_type_for_axum() {
    assert!(options(r#"state = &'static str"#).is_ok());
    assert!(options(r#"state = ()"#).is_ok());
    for bad in ["_", "Arc<_>", "impl Clone", "Self"] {
        assert!(
            error(&format!("state = {bad}")).starts_with("`state` expects a concrete type"),
            "{bad}"
        );
    }
    assert_eq!(
        error_for("state = AppState", Door::Actix, HANDLER),
        "`state` is for axum handlers, not for actix-web handlers; actix-web extractors take no state type; remove `state`"
    );
}

#[test]
fn each_argument_is_for_its_doors() {
    assert_eq!(
        error_for(r#"key = order.id, header = "X-Key""#, Door::Function, FUNCTION),
        "`header` is for axum handlers, actix-web handlers and tonic methods, not for functions; a function's key is an expression over its arguments: `key = order.id`"
    );
    assert!(error(r#"key = order.id"#)
        .starts_with("`key` is for functions and tonic methods, not for axum handlers"));
    assert!(error("store = s").starts_with("`store` is for functions and tonic methods"));
}

#[test]
fn a_function_names_its_key_from_its_arguments() {
    let o = options_for("key = order.id", Door::Function, FUNCTION).unwrap();
    assert!(o.key.is_some());
    assert_eq!(
        error_for(r#"scope = "orders""#, Door::Function, FUNCTION),
        "`#[idempotent]` on a function needs its key: add `key = <expression over the arguments>`, e.g. `key = order.id`"
    );
    assert!(error_for(r#"key = "fixed""#, Door::Function, FUNCTION)
        .starts_with("`key` names no argument of the function (`self`, `order`, `tx`)"));
    assert!(options_for("key = self.key_of(&order)", Door::Function, FUNCTION).is_ok());
    assert!(options_for(
        r#"key = format!("{}:{}", order.tenant, order.id)"#,
        Door::Function,
        FUNCTION
    )
    .is_ok());
}

#[test]
fn a_function_fingerprints_what_it_is_told() {
    let o = options_for(
        "key = order.id, fingerprint = false",
        Door::Function,
        FUNCTION,
    )
    .unwrap();
    assert!(matches!(o.fingerprint, Some(Fingerprint::Off)));
    let o = options_for(
        "key = order.id, fingerprint = order.lines",
        Door::Function,
        FUNCTION,
    )
    .unwrap();
    assert!(matches!(o.fingerprint, Some(Fingerprint::Of(_))));
}

#[test]
fn a_function_stores_its_ok_or_its_result() {
    for cache in ["all", "success"] {
        let attr = format!("key = order.id, cache = {cache:?}");
        assert!(
            options_for(&attr, Door::Function, FUNCTION).is_ok(),
            "{cache}"
        );
    }
    assert!(error_for(
        r#"key = order.id, cache = "non_server_error""#,
        Door::Function,
        FUNCTION
    )
    .starts_with("a function stores its `Ok`"));
}

#[test]
fn tonic_takes_a_header_or_a_key() {
    let method =
        "async fn create(&self, request: Request<Req>) -> Result<Response<Res>, Status> {}";
    assert!(options_for(r#"header = "x-key""#, Door::Tonic, method).is_ok());
    assert!(options_for(
        "key = request.get_ref().request_id.clone()",
        Door::Tonic,
        method
    )
    .is_ok());
    assert!(error_for(
        r#"header = "x-key", key = request.get_ref().id"#,
        Door::Tonic,
        method
    )
    .starts_with("give `header` or `key`, not both"));
}

#[test]
fn rules_over_the_runtime_are_left_to_const_checks() {
    let checks = options(r#"lease = "2d""#).unwrap().const_checks;
    assert!(matches!(checks[0].rule, Rule::AtLeastMinLease(172_800_000)));
    assert!(checks[0]
        .message
        .starts_with("`lease` (2d) is shorter than the shortest lease"));
    assert!(matches!(
        checks[1].rule,
        Rule::LeaseWithinTtl { ttl_ms: None }
    ));
    assert!(checks[1]
        .message
        .starts_with("`lease` (2d) is longer than the default `ttl`"));
    let checks = options(r#"ttl = "10s""#).unwrap().const_checks;
    assert!(matches!(
        checks[1].rule,
        Rule::LeaseWithinTtl {
            ttl_ms: Some(10_000)
        }
    ));
    assert!(checks[1]
        .message
        .starts_with("`ttl` (10s) is shorter than the default `lease`"));
    assert!(checks[1].message.ends_with("e.g. `lease = \"10s\"`"));
    // Both written: the relation is decided here. Neither: the defaults agree.
    let both = options(r#"ttl = "1h", lease = "1m""#).unwrap().const_checks;
    assert!(both
        .iter()
        .all(|c| matches!(c.rule, Rule::AtLeastMinLease(_))));
    assert!(options("").unwrap().const_checks.is_empty());
}

#[test]
fn lease_longer_than_ttl_both_written() {
    assert_eq!(
        error(r#"ttl = "30m", lease = "1h""#),
        "`lease` (1h) is longer than `ttl` (30m): a claim must not outlive the record it protects; shorten `lease` or lengthen `ttl`"
    );
}

#[test]
fn invalid_values_name_what_is_accepted() {
    assert_eq!(
        error(r#"on_conflict = "queue""#),
        "invalid `on_conflict` \"queue\": expected \"reject\" or \"wait\""
    );
    assert!(error(r#"scope = "pay ments""#)
        .starts_with("invalid `scope` \"pay ments\": expected 1 to 100"));
    assert!(error(&format!("scope = \"{}\"", "a".repeat(101))).starts_with("invalid `scope`"));
    assert_eq!(
        error(r#"cache = "2xx""#),
        "invalid `cache` \"2xx\": expected \"all\", \"success\" or \"non_server_error\""
    );
    assert_eq!(
        error(r#"retry_inviting = "keep""#),
        "invalid `retry_inviting` \"keep\": expected \"release\" or \"store\""
    );
    assert!(error(r#"header = "Idempotency Key""#).starts_with("invalid `header`"));
    assert!(error(r#"wait = "5s""#).starts_with("`wait` requires `on_conflict = \"wait\"`"));
    // One error for an invalid mode, not also "`wait` requires …".
    assert!(error(r#"on_conflict = "queue", wait = "5s""#).starts_with("invalid `on_conflict`"));
}

#[test]
fn units() {
    assert_eq!(parse_duration_ms("90s"), Some(90_000));
    assert_eq!(parse_duration_ms("15m"), Some(900_000));
    assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
    assert_eq!(parse_duration_ms("7d"), Some(604_800_000));
    assert_eq!(parse_duration_ms("250ms"), Some(250));
    assert_eq!(parse_duration_ms("0s"), Some(0));
}

#[test]
fn refusals() {
    for bad in [
        "",
        "s",
        "24",
        "24 hours",
        "1.5h",
        "-1s",
        "1H",
        "1s ",
        " 1s",
        "1w",
        "99999999999999999999s",
    ] {
        assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
    }
    assert_eq!(parse_duration_ms("18446744073709551615d"), None);
}

proptest! {
    #[test]
    fn round_trip(n in 0u64..1_000_000, unit in prop::sample::select(vec![("ms", 1u64), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)])) {
        prop_assert_eq!(parse_duration_ms(&format!("{n}{}", unit.0)), Some(n * unit.1));
    }

    #[test]
    fn never_panics(s in ".{0,30}") {
        let _ = parse_duration_ms(&s);
    }
}
