-- The catalog service's own database: the same tables the monolith's catalog module had, so
-- replication maps monolith catalog.* onto catalog.* here one to one.
CREATE SCHEMA catalog;

CREATE TABLE catalog.artists (
    id         bigserial   PRIMARY KEY,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    country    text        CHECK (country IS NULL OR country ~ '^[A-Z]{2}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE catalog.albums (
    id           bigserial   PRIMARY KEY,
    sku          text        NOT NULL UNIQUE,
    title        text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    artist_id    bigint      NOT NULL REFERENCES catalog.artists (id),
    genre        text        NOT NULL,
    release_year integer     NOT NULL,
    price_cents  bigint      NOT NULL CHECK (price_cents >= 0),
    currency     text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock        integer     NOT NULL CHECK (stock >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX albums_artist_id_id ON catalog.albums (artist_id, id);
CREATE INDEX albums_genre_id ON catalog.albums (genre, id);
