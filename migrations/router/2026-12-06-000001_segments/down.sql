DROP INDEX toggle_audit_name;
CREATE INDEX toggle_audit_name ON toggle_audit (name, id);
ALTER TABLE toggle_audit DROP COLUMN kind;
DROP TABLE toggle_segments;
