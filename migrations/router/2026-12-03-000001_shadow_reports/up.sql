-- The parallel run's reports, per route, summed over every router instance: each instance adds
-- what it saw since its last flush (router/src/reports.rs).
CREATE TABLE shadow_reports (
    route      text PRIMARY KEY,
    report     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
