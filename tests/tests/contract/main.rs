//! The HTTP contract (docs/api.md), written once and run against every side that serves it, plus
//! what only the extracted services do.
//!
//! - `catalog`: every catalog case, run against the monolith and the catalog service.
//! - `wishlist`: every wishlist case, run against the monolith and the wishlist service (which
//!   reads albums from a catalog service and checks customers at a monolith).
//! - `compare`: one scenario run on both sides, every answer normalised and required to be equal.
//! - `services`: write modes, degraded reads, the one-call-per-read rule.
//! - `reservations`: the catalog service's stock reservations.
//! - `head`: `HEAD` on every `GET` resource answers like the `GET`, without the body.
//!
//! A contract case is an `async fn(Target)`; [`contract!`] turns each (case, target) pair into its
//! own `#[tokio::test]`, named `<module>::<case>::<target>`, for example
//! `catalog::albums_are_paged::catalog_service`.

/// `contract!(targets: [monolith, catalog_service]; case_a, case_b)` generates, for each case, a
/// module named after it holding one test per target. Each target name is a constructor of
/// [`target::Target`].
macro_rules! contract {
    (targets: $targets:tt; $($case:ident),+ $(,)?) => {
        $( contract!(@case $case $targets); )+
    };
    (@case $case:ident [$($target:ident),+ $(,)?]) => {
        mod $case {
            $(
                #[tokio::test]
                async fn $target() {
                    super::$case($crate::target::Target::$target().await).await;
                }
            )+
        }
    };
}

mod target;

mod catalog;
mod compare;
mod head;
mod reservations;
mod services;
mod wishlist;
