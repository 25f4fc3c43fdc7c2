-- The reporting database (docs/reporting.md, ADR 0015). Replication writes the raw tables, one
-- private schema per source schema (`raw_<schema>`, the same tables and columns). The aggregates
-- behind `reporting_v1` are kept up to date row by row by triggers on the raw tables, which fire
-- for the replication engine's writes too (ENABLE ALWAYS: it applies with
-- session_replication_role = replica). Analysts query `reporting_v1` only.

CREATE SCHEMA raw_catalog;
CREATE SCHEMA raw_customers;
CREATE SCHEMA raw_orders;
CREATE SCHEMA raw_wishlist;
CREATE SCHEMA reporting_agg;
CREATE SCHEMA reporting_v1;

CREATE TABLE raw_catalog.artists (
    id         bigint      PRIMARY KEY,
    name       text        NOT NULL,
    country    text,
    created_at timestamptz NOT NULL
);

CREATE TABLE raw_catalog.albums (
    id           bigint      PRIMARY KEY,
    sku          text        NOT NULL,
    title        text        NOT NULL,
    artist_id    bigint      NOT NULL,
    genre        text        NOT NULL,
    release_year integer     NOT NULL,
    price_cents  bigint      NOT NULL,
    currency     text        NOT NULL,
    stock        integer     NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE raw_customers.customers (
    id         bigint      PRIMARY KEY,
    name       text        NOT NULL,
    email      text        NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE raw_orders.orders (
    id          bigint      PRIMARY KEY,
    customer_id bigint      NOT NULL,
    status      text        NOT NULL,
    total_cents bigint      NOT NULL,
    currency    text        NOT NULL,
    placed_at   timestamptz NOT NULL
);

-- No foreign key: the source's cascade arrives as the parent's delete followed by the children's.
CREATE TABLE raw_orders.order_lines (
    order_id         bigint  NOT NULL,
    line_no          integer NOT NULL,
    album_id         bigint  NOT NULL,
    quantity         integer NOT NULL,
    unit_price_cents bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE raw_wishlist.items (
    customer_id bigint      NOT NULL,
    album_id    bigint      NOT NULL,
    added_at    timestamptz NOT NULL,
    PRIMARY KEY (customer_id, album_id)
);

-- Aggregates, one row per key; only the triggers below write them.

-- Units and revenue of placed orders per album, UTC day and currency (the album's artist kept
-- with it, so that sales by artist need no join).
CREATE TABLE reporting_agg.sales (
    album_id      bigint NOT NULL,
    day           date   NOT NULL,
    currency      text   NOT NULL,
    artist_id     bigint,
    units         bigint NOT NULL,
    revenue_cents bigint NOT NULL,
    PRIMARY KEY (album_id, day, currency)
);
CREATE INDEX sales_artist_day ON reporting_agg.sales (artist_id, day);
CREATE INDEX sales_day ON reporting_agg.sales (day);

CREATE TABLE reporting_agg.wishes (
    album_id bigint PRIMARY KEY,
    wishes   bigint NOT NULL
);
CREATE INDEX wishes_count ON reporting_agg.wishes (wishes DESC, album_id);

CREATE TABLE reporting_agg.customer_value (
    customer_id   bigint NOT NULL,
    currency      text   NOT NULL,
    orders        bigint NOT NULL,
    revenue_cents bigint NOT NULL,
    PRIMARY KEY (customer_id, currency)
);
CREATE INDEX customer_value_revenue ON reporting_agg.customer_value (revenue_cents DESC);

-- Adds `sign` times one order line of a placed order to the sales.
CREATE FUNCTION reporting_agg.add_line(
    p_album bigint, p_placed_at timestamptz, p_currency text, p_quantity integer,
    p_unit_price bigint, sign integer
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reporting_agg.sales AS s (album_id, day, currency, artist_id, units, revenue_cents)
    VALUES (p_album, (p_placed_at AT TIME ZONE 'UTC')::date, p_currency,
            (SELECT artist_id FROM raw_catalog.albums WHERE id = p_album),
            sign * p_quantity, sign * p_quantity * p_unit_price)
    ON CONFLICT (album_id, day, currency) DO UPDATE
       SET units = s.units + excluded.units,
           revenue_cents = s.revenue_cents + excluded.revenue_cents,
           artist_id = coalesce(s.artist_id, excluded.artist_id);
END $$;

-- Adds `sign` times a placed order (its lines, and its customer's value).
CREATE FUNCTION reporting_agg.add_order(o raw_orders.orders, sign integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE l raw_orders.order_lines;
BEGIN
    FOR l IN SELECT * FROM raw_orders.order_lines WHERE order_id = o.id LOOP
        PERFORM reporting_agg.add_line(l.album_id, o.placed_at, o.currency, l.quantity,
                                       l.unit_price_cents, sign);
    END LOOP;
    INSERT INTO reporting_agg.customer_value AS c (customer_id, currency, orders, revenue_cents)
    VALUES (o.customer_id, o.currency, sign, sign * o.total_cents)
    ON CONFLICT (customer_id, currency) DO UPDATE
       SET orders = c.orders + excluded.orders,
           revenue_cents = c.revenue_cents + excluded.revenue_cents;
END $$;

-- Whether this session is the replication engine's initial copy (`fig.copying`): its loads of
-- related tables run side by side, none seeing the others' rows, so the triggers leave them
-- alone and `rebuild` computes the aggregates once the copy is done.
CREATE FUNCTION reporting_agg.copying() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('fig.copying', true), '') = 'on'
$$;

CREATE FUNCTION reporting_agg.on_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF reporting_agg.copying() THEN RETURN NULL; END IF;
    -- What was counted (an order counts while it is placed) is taken out, what is now is put in:
    -- a status change, a move in time or a new total each touch only this order's rows.
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'placed' THEN
        PERFORM reporting_agg.add_order(OLD, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'placed' THEN
        PERFORM reporting_agg.add_order(NEW, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION reporting_agg.on_order_line() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE o raw_orders.orders;
BEGIN
    IF reporting_agg.copying() THEN RETURN NULL; END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- A line whose order is gone was taken out with the order.
        SELECT * INTO o FROM raw_orders.orders WHERE id = OLD.order_id;
        IF FOUND AND o.status = 'placed' THEN
            PERFORM reporting_agg.add_line(OLD.album_id, o.placed_at, o.currency, OLD.quantity,
                                           OLD.unit_price_cents, -1);
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT * INTO o FROM raw_orders.orders WHERE id = NEW.order_id;
        IF FOUND AND o.status = 'placed' THEN
            PERFORM reporting_agg.add_line(NEW.album_id, o.placed_at, o.currency, NEW.quantity,
                                           NEW.unit_price_cents, 1);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION reporting_agg.on_album() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF reporting_agg.copying() THEN RETURN NULL; END IF;
    IF TG_OP = 'INSERT' OR NEW.artist_id IS DISTINCT FROM OLD.artist_id THEN
        UPDATE reporting_agg.sales SET artist_id = NEW.artist_id WHERE album_id = NEW.id;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION reporting_agg.on_wish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF reporting_agg.copying() THEN RETURN NULL; END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE reporting_agg.wishes SET wishes = wishes - 1 WHERE album_id = OLD.album_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO reporting_agg.wishes AS w (album_id, wishes) VALUES (NEW.album_id, 1)
        ON CONFLICT (album_id) DO UPDATE SET wishes = w.wishes + 1;
    END IF;
    RETURN NULL;
END $$;

-- Every aggregate computed from the raw tables, from scratch: after an initial copy (which the
-- triggers skip). The raw tables are locked against writers meanwhile (the engine's applies
-- wait), so no change is counted twice or missed.
CREATE FUNCTION reporting_agg.rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK raw_catalog.albums, raw_orders.orders, raw_orders.order_lines, raw_wishlist.items
        IN SHARE MODE;
    TRUNCATE reporting_agg.sales, reporting_agg.wishes, reporting_agg.customer_value;
    INSERT INTO reporting_agg.sales (album_id, day, currency, artist_id, units, revenue_cents)
    SELECT l.album_id, (o.placed_at AT TIME ZONE 'UTC')::date, o.currency,
           (SELECT artist_id FROM raw_catalog.albums WHERE id = l.album_id),
           sum(l.quantity), sum(l.quantity * l.unit_price_cents)
      FROM raw_orders.orders o JOIN raw_orders.order_lines l ON l.order_id = o.id
     WHERE o.status = 'placed'
     GROUP BY 1, 2, 3;
    INSERT INTO reporting_agg.wishes (album_id, wishes)
    SELECT album_id, count(*) FROM raw_wishlist.items GROUP BY 1;
    INSERT INTO reporting_agg.customer_value (customer_id, currency, orders, revenue_cents)
    SELECT customer_id, currency, count(*), sum(total_cents)
      FROM raw_orders.orders WHERE status = 'placed' GROUP BY 1, 2;
END $$;

CREATE TRIGGER reporting_orders AFTER INSERT OR UPDATE OR DELETE ON raw_orders.orders
    FOR EACH ROW EXECUTE FUNCTION reporting_agg.on_order();
CREATE TRIGGER reporting_order_lines AFTER INSERT OR UPDATE OR DELETE ON raw_orders.order_lines
    FOR EACH ROW EXECUTE FUNCTION reporting_agg.on_order_line();
CREATE TRIGGER reporting_albums AFTER INSERT OR UPDATE OF artist_id ON raw_catalog.albums
    FOR EACH ROW EXECUTE FUNCTION reporting_agg.on_album();
CREATE TRIGGER reporting_wishes AFTER INSERT OR UPDATE OR DELETE ON raw_wishlist.items
    FOR EACH ROW EXECUTE FUNCTION reporting_agg.on_wish();
-- The replication engine applies as a replica; its writes must keep the aggregates too.
ALTER TABLE raw_orders.orders ENABLE ALWAYS TRIGGER reporting_orders;
ALTER TABLE raw_orders.order_lines ENABLE ALWAYS TRIGGER reporting_order_lines;
ALTER TABLE raw_catalog.albums ENABLE ALWAYS TRIGGER reporting_albums;
ALTER TABLE raw_wishlist.items ENABLE ALWAYS TRIGGER reporting_wishes;

-- The public API (docs/reporting.md): views over the aggregates, joined to the raw rows for
-- names and stock. Additive changes only; anything else goes to reporting_v2.

CREATE VIEW reporting_v1.sales_by_artist_day AS
SELECT s.artist_id, a.name AS artist_name, s.day, s.currency,
       sum(s.units)::bigint AS units, sum(s.revenue_cents)::bigint AS revenue_cents
  FROM reporting_agg.sales s
  LEFT JOIN raw_catalog.artists a ON a.id = s.artist_id
 GROUP BY s.artist_id, a.name, s.day, s.currency
HAVING sum(s.units) <> 0 OR sum(s.revenue_cents) <> 0;

CREATE VIEW reporting_v1.most_wished_albums AS
SELECT w.album_id, al.title, al.artist_id, w.wishes, al.stock, coalesce(al.stock > 0, false) AS in_stock
  FROM reporting_agg.wishes w
  LEFT JOIN raw_catalog.albums al ON al.id = w.album_id
 WHERE w.wishes > 0;

-- Albums wished for by at least 3 customers with at most 5 in stock: reorder before they sell out.
CREATE VIEW reporting_v1.stock_alerts AS
SELECT album_id, title, artist_id, wishes, stock
  FROM reporting_v1.most_wished_albums
 WHERE wishes >= 3 AND stock <= 5;

CREATE VIEW reporting_v1.customer_lifetime_value AS
SELECT v.customer_id, c.name, v.currency, v.orders, v.revenue_cents
  FROM reporting_agg.customer_value v
  LEFT JOIN raw_customers.customers c ON c.id = v.customer_id
 WHERE v.orders <> 0;
