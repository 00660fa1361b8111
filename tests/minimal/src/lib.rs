//! The function form with no framework feature: see `tests/`.
