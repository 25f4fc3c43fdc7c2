-- The wishlist service's own database: the monolith's wishlist table, moved. customer_id and
-- album_id name customers and albums that other services own; they are checked over HTTP.
CREATE SCHEMA wishlist;

CREATE TABLE wishlist.items (
    customer_id bigint      NOT NULL,
    album_id    bigint      NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, album_id)
);
