//! The strangler-fig router: for every request it decides, per capability, whether the monolith
//! or the extracted service answers, driven by Unleash toggles, and forwards it.
//!
//! The decision is a pure function ([`decide::decide`]) of the request head, the live toggles, the
//! live write ownership ([`ownership`]) and the route table; everything around it (proxying,
//! toggle and ownership storage, the admin API) stays thin.
//!
//! It knows the monolith and the services only as upstream names and URLs in its route table,
//! and depends on no service crate: `platform` serves its admin API (envelope, parsing, the pool,
//! configuration, migrations) and the flip (`platform::fence`), `replication` the flip's streams.
//! Instances share nothing but the `router` database.

pub mod admin;
pub mod breaker;
pub mod compare;
pub mod config;
pub mod decide;
pub mod h1;
pub mod headers;
pub mod metrics;
pub mod migrate;
pub mod ownership;
pub mod proxy;
pub mod record;
pub mod reports;
pub mod routes;
pub mod run;
pub mod shadow;
pub mod store;
pub mod sync;
pub mod toggles;

pub use decide::{Plan, Reason, RequestHead, decide};
pub use ownership::{LiveOwners, OwnerSet};
pub use proxy::{Router, serve};
pub use routes::{Capability, RouteTable, TableError, Upstream, WriteOwner};
pub use toggles::{LiveToggles, ToggleSet, Toggles};
