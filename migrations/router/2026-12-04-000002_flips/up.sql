-- Every write-ownership flip of a capability (router/src/migrate.rs): who asked and why, how far
-- it got, how it ended, the positions it cut at and how long each part took. A flip that is
-- still 'running' after its process died is finished or undone by the next flip command.
CREATE TABLE flips (
    id               bigserial   PRIMARY KEY,
    capability       text        NOT NULL,
    -- 'cutover': the extracted service takes the writes; 'rollback': the monolith takes them back.
    direction        text        NOT NULL CHECK (direction IN ('cutover', 'rollback')),
    actor            text        NOT NULL,
    reason           text        NOT NULL,
    -- The last step that completed (started, held, fenced, caught_up, reverse_ready, granted,
    -- released), or the step that failed.
    step             text        NOT NULL,
    outcome          text        NOT NULL CHECK (outcome IN ('running', 'done', 'undone', 'failed')),
    error            text,
    -- The old owner's end of WAL after its fence, and where the new reverse stream starts.
    cut_lsn          pg_lsn,
    reverse_from_lsn pg_lsn,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    hold_ms          double precision,
    catch_up_ms      double precision,
    total_ms         double precision
);

-- At most one flip of a capability runs at a time.
CREATE UNIQUE INDEX flips_one_running ON flips (capability) WHERE outcome = 'running';
CREATE INDEX flips_by_capability ON flips (capability, id);
