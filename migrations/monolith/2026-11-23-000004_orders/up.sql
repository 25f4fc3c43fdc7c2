CREATE SCHEMA orders;

CREATE TABLE orders.orders (
    id          bigserial   PRIMARY KEY,
    customer_id bigint      NOT NULL,
    status      text        NOT NULL DEFAULT 'placed',
    total_cents bigint      NOT NULL CHECK (total_cents >= 0),
    currency    text        NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_id ON orders.orders (customer_id, id);

CREATE TABLE orders.order_lines (
    order_id         bigint  NOT NULL REFERENCES orders.orders (id) ON DELETE CASCADE,
    line_no          integer NOT NULL,
    album_id         bigint  NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- One row per Idempotency-Key: the first request inserts it in the order's transaction, so a
-- concurrent retry blocks on the key until the first commits and then replays its order.
CREATE TABLE orders.idempotency_keys (
    key          text        PRIMARY KEY,
    request_body text        NOT NULL,
    order_id     bigint      REFERENCES orders.orders (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);
