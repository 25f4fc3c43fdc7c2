-- customer_id and album_id point into other modules; deliberately no foreign keys across module
-- schemas, because after extraction they live in other databases.
CREATE SCHEMA wishlist;

CREATE TABLE wishlist.items (
    customer_id bigint      NOT NULL,
    album_id    bigint      NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, album_id)
);
