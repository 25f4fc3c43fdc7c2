DROP TABLE router_instances;
DROP TABLE ownership_version;
DROP TABLE write_ownership;
