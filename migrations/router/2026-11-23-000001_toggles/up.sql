-- The router's toggles: Unleash feature definitions, one row each, shared by every router
-- instance that uses this database.
CREATE TABLE toggles (
    name       text        PRIMARY KEY,
    definition jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every change, append-only: who, when, why, and the definition before and after.
CREATE TABLE toggle_audit (
    id     bigserial   PRIMARY KEY,
    name   text        NOT NULL,
    actor  text        NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    before jsonb,
    after  jsonb,
    reason text        NOT NULL
);

CREATE INDEX toggle_audit_name ON toggle_audit (name, id);

-- One counter for the whole set: bumped by every change, sent with NOTIFY router_toggles, so an
-- instance knows whether what it holds is current.
CREATE TABLE toggle_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint  NOT NULL
);

INSERT INTO toggle_version (id, version) VALUES (1, 0);
