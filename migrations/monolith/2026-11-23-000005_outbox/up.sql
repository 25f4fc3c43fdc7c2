-- Calls to other services that must happen because an order committed (remove purchased albums
-- from a remote wishlist, confirm or release a stock reservation). Written in the order's own
-- transaction, delivered after it by a worker that retries until the other side answers, so no
-- call is lost and each is idempotent on the receiving side.
CREATE TABLE orders.outbox (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL,
    payload         jsonb       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_due ON orders.outbox (next_attempt_at, id);

-- A saga order (stock held by the catalog service) is 'pending' until its stock is reserved.
CREATE INDEX orders_pending ON orders.orders (placed_at) WHERE status = 'pending';
