DROP TABLE shadow_reports;
