-- Stock reservations: once the catalog owns its writes, an order elsewhere cannot take stock in
-- its own transaction. It reserves (keyed, so retries are safe), then confirms or releases.
-- Reserved units are already gone from albums.stock; release and expiry put them back.
CREATE TABLE catalog.reservations (
    id         bigserial   PRIMARY KEY,
    key        text        NOT NULL UNIQUE,
    status     text        NOT NULL CHECK (status IN ('reserved', 'confirmed', 'released', 'expired')),
    -- The canonical request the key was first used with; empty for a release that came first.
    request    text        NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX reservations_due ON catalog.reservations (expires_at) WHERE status = 'reserved';

CREATE TABLE catalog.reservation_lines (
    reservation_id   bigint  NOT NULL REFERENCES catalog.reservations (id) ON DELETE CASCADE,
    line_no          integer NOT NULL,
    album_id         bigint  NOT NULL REFERENCES catalog.albums (id),
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents >= 0),
    currency         text    NOT NULL,
    PRIMARY KEY (reservation_id, line_no)
);
