//! Compile-time behaviour of `#[idempotent]`: every supported handler shape
//! compiles without warnings, every misuse fails with a pointed message.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
