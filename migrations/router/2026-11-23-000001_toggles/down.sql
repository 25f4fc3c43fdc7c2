DROP TABLE toggle_version;
DROP TABLE toggle_audit;
DROP TABLE toggles;
