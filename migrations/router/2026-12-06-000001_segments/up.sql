-- Unleash segments: constraints kept once, by id, and named by the strategies that use them
-- (`"segments": [3]`). A change to one applies to every strategy naming it at once.
CREATE TABLE toggle_segments (
    id         integer     PRIMARY KEY CHECK (id > 0),
    definition jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The audit history covers segments too: `kind` says what a row is about. A segment's `name` is
-- its id.
ALTER TABLE toggle_audit
    ADD COLUMN kind text NOT NULL DEFAULT 'toggle' CHECK (kind IN ('toggle', 'segment'));

DROP INDEX toggle_audit_name;
CREATE INDEX toggle_audit_name ON toggle_audit (kind, name, id);
