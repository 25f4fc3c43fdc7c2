-- Who owns each capability's writes, at run time: the legacy side (the monolith) or the
-- extracted service, and whether its writes are held (waiting in every router) while the
-- ownership moves. A capability without a row keeps the owner the route table configures.
CREATE TABLE write_ownership (
    capability text        PRIMARY KEY,
    owner      text        NOT NULL CHECK (owner IN ('legacy', 'extracted')),
    held       boolean     NOT NULL DEFAULT false,
    -- When the current hold began; a hold and its start go together.
    held_since timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (held = (held_since IS NOT NULL))
);

-- One counter for the whole set, like toggle_version: bumped by every change, sent with
-- NOTIFY router_ownership, so an instance knows whether what it applies is current.
CREATE TABLE ownership_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint  NOT NULL
);

INSERT INTO ownership_version (id, version) VALUES (1, 0);

-- Each router instance's acknowledgement: the ownership version it applies, and when it last
-- said so (it says so again on every periodic reload, so seen_at is also a heartbeat). A flip
-- waits until every instance seen recently has acknowledged its version.
CREATE TABLE router_instances (
    instance          text        PRIMARY KEY,
    ownership_version bigint      NOT NULL,
    seen_at           timestamptz NOT NULL
);
