DROP TABLE catalog.reservation_lines;
DROP TABLE catalog.reservations;
