//! What a user without the `axum`, `actix` or `postgres` features gets: the
//! function form compiles, and a handler or a `Tx` fails with one line
//! saying which feature to enable.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
