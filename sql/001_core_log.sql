-- Migration 001: the "corelog" schema namespace, where everything lives;
-- schema_version; accounts and tokens; the core-log tables (POST
-- /core-log/...).
-- Applied by scripts/migrate.sh (once, in one transaction: see there).

CREATE SCHEMA IF NOT EXISTS corelog;

CREATE TABLE corelog.schema_version (
    version     integer     PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Accounts own everything; tokens authenticate a caller as an account, with
-- an optional domain and project (the tenant identity of the logtank API).

CREATE TABLE corelog.accounts (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a token is stored; the token itself is shown once,
-- by corelog.create_token().
CREATE TABLE corelog.tokens (
    token_hash  bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    account_id  uuid        NOT NULL REFERENCES corelog.accounts (id)
                            ON DELETE CASCADE,
    domain_id   text        CHECK (domain_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    project_id  text        CHECK (project_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE INDEX tokens_account_idx
    ON corelog.tokens (account_id);

-- CoreLog: an account's traffic sources, their core pathnames, and the
-- requests and responses that a core log ties together.

CREATE TABLE corelog.traffic_sources (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL REFERENCES corelog.accounts (id)
                            ON DELETE CASCADE,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX traffic_sources_account_idx
    ON corelog.traffic_sources (account_id);

CREATE TABLE corelog.core_pathnames (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    traffic_source_id  uuid        NOT NULL
                                   REFERENCES corelog.traffic_sources (id)
                                   ON DELETE CASCADE,
    pathname           text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX core_pathnames_traffic_source_idx
    ON corelog.core_pathnames (traffic_source_id);

CREATE TABLE corelog.requests (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    traffic_source_id  uuid        NOT NULL
                                   REFERENCES corelog.traffic_sources (id)
                                   ON DELETE CASCADE,
    method             text,
    url                text,
    headers            jsonb,
    body               text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX requests_traffic_source_idx
    ON corelog.requests (traffic_source_id);

CREATE TABLE corelog.responses (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    traffic_source_id  uuid        NOT NULL
                                   REFERENCES corelog.traffic_sources (id)
                                   ON DELETE CASCADE,
    status             integer,
    headers            jsonb,
    body               text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX responses_traffic_source_idx
    ON corelog.responses (traffic_source_id);

-- A request and a response have at most one core log each.  The rule lives
-- in this small claims table, not in a unique index over core_logs, so that
-- core_logs can be partitioned by time and old partitions dropped.
CREATE TABLE corelog.core_log_claims (
    request_id   uuid  PRIMARY KEY REFERENCES corelog.requests (id)
                       ON DELETE CASCADE,
    response_id  uuid  NOT NULL UNIQUE REFERENCES corelog.responses (id)
                       ON DELETE CASCADE,
    core_log_id  uuid  NOT NULL
);

-- Core logs, partitioned by created_at.  Rows land in the default partition
-- until an operator adds ranges (docs/operations.md, "Retention").
CREATE TABLE corelog.core_logs (
    id                 uuid             NOT NULL,
    traffic_source_id  uuid             NOT NULL
                                        REFERENCES corelog.traffic_sources (id)
                                        ON DELETE CASCADE,
    core_pathname_id   uuid             NOT NULL
                                        REFERENCES corelog.core_pathnames (id)
                                        ON DELETE CASCADE,
    request_id         uuid             NOT NULL
                                        REFERENCES corelog.requests (id)
                                        ON DELETE CASCADE,
    response_id        uuid             NOT NULL
                                        REFERENCES corelog.responses (id)
                                        ON DELETE CASCADE,
    status             smallint         NOT NULL
                                        CHECK (status BETWEEN 100 AND 599),
    method             text             NOT NULL
                                        CHECK (method IN ('GET', 'HEAD',
                                            'POST', 'PUT', 'PATCH', 'DELETE',
                                            'OPTIONS', 'CONNECT', 'TRACE')),
    level              text             NOT NULL
                                        CHECK (level IN ('info', 'warning',
                                                         'fatal')),
    elapsed_time       double precision NOT NULL
                                        CHECK (elapsed_time >= 0),
    traffic_user_id    text,
    created_at         timestamptz      NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE corelog.core_logs_default
    PARTITION OF corelog.core_logs DEFAULT;

CREATE INDEX core_logs_traffic_source_idx
    ON corelog.core_logs (traffic_source_id, created_at);

-- Tokens.  corelog.create_token() returns a new token once and stores only
-- its SHA-256; corelog.revoke_token() revokes one.

CREATE OR REPLACE FUNCTION corelog.create_token(
    p_account_id  uuid,
    p_domain_id   text DEFAULT NULL,
    p_project_id  text DEFAULT NULL,
    p_expires_in  interval DEFAULT NULL,
    p_description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_token text;
BEGIN
    v_token := 'clg_' || replace(gen_random_uuid()::text, '-', '')
                      || replace(gen_random_uuid()::text, '-', '');

    INSERT INTO corelog.tokens (token_hash, account_id, domain_id, project_id,
                                description, expires_at)
    VALUES (sha256(convert_to(v_token, 'UTF8')), p_account_id, p_domain_id,
            p_project_id, p_description, now() + p_expires_in);

    RETURN v_token;
END
$$;

CREATE OR REPLACE FUNCTION corelog.revoke_token(p_token text)
RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    UPDATE corelog.tokens SET revoked_at = now()
     WHERE token_hash = sha256(convert_to(p_token, 'UTF8'))
       AND revoked_at IS NULL
    RETURNING true;
$$;

INSERT INTO corelog.schema_version (version) VALUES (1);
