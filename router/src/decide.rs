//! The routing decision, as a pure function of the request head, the toggles, the live write
//! ownership and the table.

use crate::ownership::{Owned, OwnerSet};
use crate::routes::{RouteTable, WriteOwner};
use crate::toggles::Toggles;

/// What the decision needs to know about a request: nothing that requires its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Stickiness for rollouts: the same user lands on the same side.
    pub user_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
}

impl RequestHead<'_> {
    /// Reads change nothing; only they may be sent to a side that does not own writes.
    pub fn is_read(&self) -> bool {
        matches!(self.method, "GET" | "HEAD" | "OPTIONS")
    }
}

/// Why a plan is what it is (for `explain`, logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No route matched: the default upstream (the monolith) serves it.
    NoRoute,
    /// A write goes to the capability's write owner, whatever the toggles say.
    WriteToOwner,
    /// A write to a capability whose writes are held while its ownership moves: it goes nowhere
    /// yet (`primary` is the owner it would go to now, and nothing is shadowed); the data path
    /// waits for the hold to end and decides again.
    WriteHeld,
    /// The capability's read toggle is on for this request (fully, or this user is in the canary).
    ReadToggleOn,
    /// The read toggle is off for this request.
    ReadToggleOff,
    /// The route names the one side that has it (`upstream` in the route table).
    Pinned,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRoute => "no_route",
            Reason::WriteToOwner => "write_to_owner",
            Reason::WriteHeld => "write_held",
            Reason::ReadToggleOn => "read_toggle_on",
            Reason::ReadToggleOff => "read_toggle_off",
            Reason::Pinned => "pinned",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Index into the table's capabilities.
    pub capability: Option<usize>,
    /// Index into the table's routes: the route that matched.
    pub route: Option<usize>,
    /// Index into the table's upstreams: who answers the client.
    pub primary: usize,
    /// Who also gets a copy, for comparison, when the shadow toggle is on: the side not
    /// answering a read, or the side not owning a write (which gets it as a dry run).
    pub shadow: Option<usize>,
    pub reason: Reason,
    /// Index into the table's upstreams: the side that owns the capability's writes in the
    /// ownership this plan was decided with (`None` when unrouted). A read falls back to the
    /// legacy side only while it is the owner, and a shadowed read is compared knowing which
    /// side may lag.
    pub owner: Option<usize>,
}

/// Where a request goes. `owners` is the live write ownership (indexed like `table`'s
/// capabilities; a capability it lacks keeps the table's configured owner): writes go to the
/// live owner, or are held while it is held; reads never look at it.
pub fn decide(
    head: &RequestHead,
    toggles: &impl Toggles,
    owners: &OwnerSet,
    table: &RouteTable,
) -> Plan {
    let Some(route) = table.route(head.method, head.path) else {
        return Plan {
            capability: None,
            route: None,
            primary: table.default_upstream,
            shadow: None,
            reason: Reason::NoRoute,
            owner: None,
        };
    };
    let cap = &table.capabilities[route.capability];
    let route_index = table.routes.iter().position(|r| std::ptr::eq(r, route));
    let owned = owners
        .get(route.capability)
        .copied()
        .unwrap_or(Owned::by(cap.write_owner));
    let (owner, other) = match owned.owner {
        WriteOwner::Legacy => (cap.legacy, cap.extracted),
        WriteOwner::Extracted => (cap.extracted, cap.legacy),
    };
    if !head.is_read() && owned.held {
        return Plan {
            capability: Some(route.capability),
            route: route_index,
            primary: route.pinned.unwrap_or(owner),
            shadow: None,
            reason: Reason::WriteHeld,
            owner: Some(owner),
        };
    }
    if let Some(side) = route.pinned {
        return Plan {
            capability: Some(route.capability),
            route: route_index,
            primary: side,
            shadow: None,
            reason: Reason::Pinned,
            owner: Some(owner),
        };
    }
    if !head.is_read() {
        return Plan {
            capability: Some(route.capability),
            route: route_index,
            primary: owner,
            shadow: (other != owner && toggles.enabled(&cap.shadow_toggle, head)).then_some(other),
            reason: Reason::WriteToOwner,
            owner: Some(owner),
        };
    }
    let (primary, other, reason) = if toggles.enabled(&cap.read_toggle, head) {
        (cap.extracted, cap.legacy, Reason::ReadToggleOn)
    } else {
        (cap.legacy, cap.extracted, Reason::ReadToggleOff)
    };
    Plan {
        capability: Some(route.capability),
        route: route_index,
        primary,
        shadow: toggles.enabled(&cap.shadow_toggle, head).then_some(other),
        reason,
        owner: Some(owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Toggles that are simply on or off, for rules that do not depend on rollouts.
    struct Fixed(HashSet<&'static str>);

    impl Toggles for Fixed {
        fn enabled(&self, name: &str, _: &RequestHead) -> bool {
            self.0.contains(name)
        }
    }

    fn on(names: &[&'static str]) -> Fixed {
        Fixed(names.iter().copied().collect())
    }

    fn head<'a>(method: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            ..RequestHead::default()
        }
    }

    fn plan(
        method: &str,
        path: &str,
        toggles: &Fixed,
        table: &RouteTable,
    ) -> (String, Option<String>, Reason) {
        plan_with(method, path, toggles, &OwnerSet::configured(table), table)
    }

    fn plan_with(
        method: &str,
        path: &str,
        toggles: &Fixed,
        owners: &OwnerSet,
        table: &RouteTable,
    ) -> (String, Option<String>, Reason) {
        let p = decide(&head(method, path), toggles, owners, table);
        let name = |i: usize| table.upstreams[i].name.clone();
        (name(p.primary), p.shadow.map(name), p.reason)
    }

    fn catalog(table: &RouteTable) -> usize {
        table
            .capabilities
            .iter()
            .position(|c| c.name == "catalog")
            .unwrap()
    }

    /// The table's owners, with the catalog's live ownership set to `owner` and `held`.
    fn catalog_owned(table: &RouteTable, owner: WriteOwner, held: bool) -> OwnerSet {
        OwnerSet::configured(table).with(
            catalog(table),
            Owned {
                owner,
                held,
                held_since: None,
            },
        )
    }

    fn cut_over(mut table: RouteTable) -> RouteTable {
        for c in &mut table.capabilities {
            c.write_owner = WriteOwner::Extracted;
        }
        table
    }

    #[test]
    fn unrouted_paths_go_to_the_monolith_whatever_the_toggles() {
        let t = RouteTable::musiccorp();
        let all = on(&["catalog.reads", "catalog.shadow", "wishlist.reads"]);
        assert_eq!(
            plan("POST", "/orders", &all, &t),
            ("monolith".into(), None, Reason::NoRoute)
        );
        assert_eq!(
            plan("GET", "/customers/1", &all, &t),
            ("monolith".into(), None, Reason::NoRoute)
        );
    }

    #[test]
    fn reads_follow_the_read_toggle() {
        let t = RouteTable::musiccorp();
        assert_eq!(
            plan("GET", "/catalog/albums", &on(&[]), &t),
            ("monolith".into(), None, Reason::ReadToggleOff)
        );
        assert_eq!(
            plan("GET", "/catalog/albums", &on(&["catalog.reads"]), &t),
            ("catalog".into(), None, Reason::ReadToggleOn)
        );
        assert_eq!(
            plan("HEAD", "/wishlists/3", &on(&["wishlist.reads"]), &t),
            ("wishlist".into(), None, Reason::ReadToggleOn)
        );
    }

    #[test]
    fn one_capabilitys_toggle_does_not_move_another() {
        let t = RouteTable::musiccorp();
        assert_eq!(
            plan("GET", "/wishlists/3", &on(&["catalog.reads"]), &t).0,
            "monolith"
        );
    }

    #[test]
    fn writes_go_to_the_write_owner_whatever_the_read_toggle() {
        let t = RouteTable::musiccorp();
        let reads_moved = on(&["catalog.reads", "catalog.shadow"]);
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(
                plan(method, "/catalog/albums/1", &reads_moved, &t),
                (
                    "monolith".into(),
                    Some("catalog".into()),
                    Reason::WriteToOwner
                ),
                "{method}"
            );
        }
        let after = cut_over(RouteTable::musiccorp());
        assert_eq!(
            plan("PATCH", "/catalog/albums/1", &on(&[]), &after),
            ("catalog".into(), None, Reason::WriteToOwner)
        );
        assert_eq!(
            plan(
                "PATCH",
                "/catalog/albums/1",
                &on(&["catalog.shadow"]),
                &after
            ),
            (
                "catalog".into(),
                Some("monolith".into()),
                Reason::WriteToOwner
            ),
            "after cutover the monolith gets the dry run"
        );
    }

    #[test]
    fn shadowing_copies_a_read_to_the_side_that_is_not_answering() {
        let t = RouteTable::musiccorp();
        assert_eq!(
            plan("GET", "/catalog/albums", &on(&["catalog.shadow"]), &t),
            (
                "monolith".into(),
                Some("catalog".into()),
                Reason::ReadToggleOff
            )
        );
        assert_eq!(
            plan(
                "GET",
                "/catalog/albums",
                &on(&["catalog.shadow", "catalog.reads"]),
                &t
            ),
            (
                "catalog".into(),
                Some("monolith".into()),
                Reason::ReadToggleOn
            )
        );
    }

    #[test]
    fn a_write_is_shadowed_to_the_side_that_does_not_own_it() {
        let t = RouteTable::musiccorp();
        assert_eq!(
            plan("POST", "/catalog/albums", &on(&["catalog.shadow"]), &t)
                .1
                .as_deref(),
            Some("catalog")
        );
        assert_eq!(
            plan("POST", "/catalog/albums", &on(&["catalog.reads"]), &t).1,
            None,
            "the shadow toggle decides, not the read toggle"
        );
    }

    #[test]
    fn a_pinned_route_goes_to_its_side_whoever_owns_the_writes_but_waits_out_a_hold() {
        use WriteOwner::{Extracted, Legacy};
        let t = RouteTable::musiccorp();
        let catalog = t
            .capabilities
            .iter()
            .position(|c| c.name == "catalog")
            .unwrap();
        let service = t.upstream_named("catalog").unwrap();
        let reads_on = on(&["catalog.reads", "catalog.shadow"]);
        for (owner, held, method, reason) in [
            (Legacy, false, "PUT", Reason::Pinned),
            (Extracted, false, "POST", Reason::Pinned),
            (Legacy, false, "GET", Reason::Pinned),
            (Legacy, true, "GET", Reason::Pinned),
            (Legacy, true, "POST", Reason::WriteHeld),
        ] {
            let owners = OwnerSet::configured(&t).with(
                catalog,
                Owned {
                    owner,
                    held,
                    held_since: None,
                },
            );
            let head = RequestHead {
                method,
                path: "/catalog/reservations/order-1",
                ..RequestHead::default()
            };
            let plan = decide(&head, &reads_on, &owners, &t);
            let case = format!("{owner:?} held={held} {method}");
            assert_eq!(plan.primary, service, "{case}");
            assert_eq!(plan.shadow, None, "{case}");
            assert_eq!(plan.reason, reason, "{case}");
        }
        let bad = MUSICCORP_PINNED_ELSEWHERE;
        let e = RouteTable::parse(bad).unwrap_err().to_string();
        assert!(e.contains("routes[0].upstream"), "{e}");
    }

    const MUSICCORP_PINNED_ELSEWHERE: &str = r#"
        [upstreams]
        monolith = "http://127.0.0.1:1"
        catalog = "http://127.0.0.1:2"
        wishlist = "http://127.0.0.1:3"
        [capabilities.catalog]
        legacy = "monolith"
        extracted = "catalog"
        read_toggle = "r"
        shadow_toggle = "s"
        write_owner = "legacy"
        [[routes]]
        prefix = "/catalog/reservations"
        capability = "catalog"
        upstream = "wishlist"
    "#;

    #[test]
    fn writes_follow_the_live_owner_and_wait_while_it_is_held() {
        use WriteOwner::{Extracted, Legacy};
        let t = RouteTable::musiccorp();
        let moved = cut_over(RouteTable::musiccorp());
        let none = on(&[]);
        let shadowed = on(&["catalog.shadow"]);
        let mono = || "monolith".to_string();
        let svc = || "catalog".to_string();
        // (case, table, live catalog owner and hold, toggles, method, expected plan)
        let cases = [
            (
                "stored legacy, configured legacy",
                &t,
                (Legacy, false),
                &none,
                "POST",
                (mono(), None, Reason::WriteToOwner),
            ),
            (
                "stored extracted beats the configured legacy",
                &t,
                (Extracted, false),
                &none,
                "POST",
                (svc(), None, Reason::WriteToOwner),
            ),
            (
                "stored legacy beats the configured extracted (a flip back)",
                &moved,
                (Legacy, false),
                &none,
                "DELETE",
                (mono(), None, Reason::WriteToOwner),
            ),
            (
                "the dry run goes to the side the live owner is not",
                &t,
                (Extracted, false),
                &shadowed,
                "PUT",
                (svc(), Some(mono()), Reason::WriteToOwner),
            ),
            (
                "held under legacy: held, no dry run",
                &t,
                (Legacy, true),
                &shadowed,
                "POST",
                (mono(), None, Reason::WriteHeld),
            ),
            (
                "held under extracted: held",
                &t,
                (Extracted, true),
                &none,
                "PATCH",
                (svc(), None, Reason::WriteHeld),
            ),
            (
                "a method spelled in lower case is a write, and held",
                &t,
                (Legacy, true),
                &none,
                "get",
                (mono(), None, Reason::WriteHeld),
            ),
            (
                "reads are never held",
                &t,
                (Legacy, true),
                &none,
                "GET",
                (mono(), None, Reason::ReadToggleOff),
            ),
            (
                "reads are never held, HEAD either",
                &t,
                (Extracted, true),
                &none,
                "HEAD",
                (mono(), None, Reason::ReadToggleOff),
            ),
            (
                "reads follow the read toggle, not the owner",
                &t,
                (Extracted, false),
                &none,
                "OPTIONS",
                (mono(), None, Reason::ReadToggleOff),
            ),
        ];
        for (case, table, (owner, held), toggles, method, want) in cases {
            let owners = catalog_owned(table, owner, held);
            assert_eq!(
                plan_with(method, "/catalog/albums/1", toggles, &owners, table),
                want,
                "{case}"
            );
        }
        let held = catalog_owned(&t, Legacy, true);
        assert_eq!(
            plan_with("GET", "/catalog/albums", &on(&["catalog.reads"]), &held, &t),
            (svc(), None, Reason::ReadToggleOn),
            "a held capability's reads still follow the read toggle"
        );
        assert_eq!(
            plan_with("POST", "/wishlists/1/items", &none, &held, &t),
            (mono(), None, Reason::WriteToOwner),
            "one capability's hold does not hold another's writes"
        );
        assert_eq!(
            plan_with("POST", "/orders", &none, &held, &t),
            (mono(), None, Reason::NoRoute),
            "unrouted writes are never held"
        );
    }

    #[test]
    fn the_plan_names_the_live_owner() {
        let t = RouteTable::musiccorp();
        let up = |name: &str| t.upstream_named(name);
        for (owner, held, method, want) in [
            (WriteOwner::Legacy, false, "GET", up("monolith")),
            (WriteOwner::Extracted, false, "GET", up("catalog")),
            (WriteOwner::Extracted, true, "POST", up("catalog")),
            (WriteOwner::Legacy, true, "HEAD", up("monolith")),
        ] {
            let owners = catalog_owned(&t, owner, held);
            let p = decide(&head(method, "/catalog/albums"), &on(&[]), &owners, &t);
            assert_eq!(p.owner, want, "{owner:?} held={held} {method}");
        }
        let p = decide(
            &head("GET", "/orders"),
            &on(&[]),
            &OwnerSet::configured(&t),
            &t,
        );
        assert_eq!(p.owner, None, "unrouted: no owner");
        // A set built for a smaller table: the configured owner stands in.
        let empty = OwnerSet::configured(
            &RouteTable::parse("[upstreams]\nmonolith = \"http://127.0.0.1:1\"\n").unwrap(),
        );
        let p = decide(&head("POST", "/catalog/albums"), &on(&[]), &empty, &t);
        assert_eq!(
            (p.primary, p.reason),
            (up("monolith").unwrap(), Reason::WriteToOwner)
        );
    }
}
