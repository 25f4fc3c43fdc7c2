//! The routing decision, as a pure function of the request head, the toggles and the table.

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
    /// The capability's read toggle is on for this request (fully, or this user is in the canary).
    ReadToggleOn,
    /// The read toggle is off for this request.
    ReadToggleOff,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRoute => "no_route",
            Reason::WriteToOwner => "write_to_owner",
            Reason::ReadToggleOn => "read_toggle_on",
            Reason::ReadToggleOff => "read_toggle_off",
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
}

pub fn decide(head: &RequestHead, toggles: &impl Toggles, table: &RouteTable) -> Plan {
    let Some(route) = table.route(head.method, head.path) else {
        return Plan {
            capability: None,
            route: None,
            primary: table.default_upstream,
            shadow: None,
            reason: Reason::NoRoute,
        };
    };
    let cap = &table.capabilities[route.capability];
    let route_index = table.routes.iter().position(|r| std::ptr::eq(r, route));
    if !head.is_read() {
        let (owner, other) = match cap.write_owner {
            WriteOwner::Legacy => (cap.legacy, cap.extracted),
            WriteOwner::Extracted => (cap.extracted, cap.legacy),
        };
        return Plan {
            capability: Some(route.capability),
            route: route_index,
            primary: owner,
            shadow: (other != owner && toggles.enabled(&cap.shadow_toggle, head)).then_some(other),
            reason: Reason::WriteToOwner,
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
        let p = decide(&head(method, path), toggles, table);
        let name = |i: usize| table.upstreams[i].name.clone();
        (name(p.primary), p.shadow.map(name), p.reason)
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
}
