-- corelog schema.  Idempotent: run it on an empty database to create
-- everything, and again on an existing one to upgrade it in place (rows are
-- kept).  Everything lives in the "corelog" schema namespace.
--
--   psql "$CONNINFO" -v ON_ERROR_STOP=1 -f conf/schema.sql

BEGIN;

SELECT pg_advisory_xact_lock(hashtext('corelog schema'));

CREATE SCHEMA IF NOT EXISTS corelog;

CREATE TABLE IF NOT EXISTS corelog.schema_version (
    version     integer     PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Accounts own everything; tokens authenticate a caller as an account, with
-- an optional domain and project (the tenant identity of the logtank API).

CREATE TABLE IF NOT EXISTS corelog.accounts (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a token is stored; the token itself is shown once,
-- by corelog.create_token().
CREATE TABLE IF NOT EXISTS corelog.tokens (
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

CREATE INDEX IF NOT EXISTS tokens_account_idx
    ON corelog.tokens (account_id);

-- CoreLog: an account's traffic sources, their core pathnames, and the
-- requests and responses that a core log ties together.

CREATE TABLE IF NOT EXISTS corelog.traffic_sources (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL REFERENCES corelog.accounts (id)
                            ON DELETE CASCADE,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS traffic_sources_account_idx
    ON corelog.traffic_sources (account_id);

CREATE TABLE IF NOT EXISTS corelog.core_pathnames (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    traffic_source_id  uuid        NOT NULL
                                   REFERENCES corelog.traffic_sources (id)
                                   ON DELETE CASCADE,
    pathname           text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS core_pathnames_traffic_source_idx
    ON corelog.core_pathnames (traffic_source_id);

CREATE TABLE IF NOT EXISTS corelog.requests (
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

CREATE INDEX IF NOT EXISTS requests_traffic_source_idx
    ON corelog.requests (traffic_source_id);

CREATE TABLE IF NOT EXISTS corelog.responses (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    traffic_source_id  uuid        NOT NULL
                                   REFERENCES corelog.traffic_sources (id)
                                   ON DELETE CASCADE,
    status             integer,
    headers            jsonb,
    body               text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS responses_traffic_source_idx
    ON corelog.responses (traffic_source_id);

-- A request and a response have at most one core log each.  The rule lives
-- in this small claims table, not in a unique index over core_logs, so that
-- core_logs can be partitioned by time and old partitions dropped.
CREATE TABLE IF NOT EXISTS corelog.core_log_claims (
    request_id   uuid  PRIMARY KEY REFERENCES corelog.requests (id)
                       ON DELETE CASCADE,
    response_id  uuid  NOT NULL UNIQUE REFERENCES corelog.responses (id)
                       ON DELETE CASCADE,
    core_log_id  uuid  NOT NULL
);

-- Core logs, partitioned by created_at.  Rows land in the default partition
-- until an operator adds ranges (see README, "Retention").
CREATE TABLE IF NOT EXISTS corelog.core_logs (
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

CREATE TABLE IF NOT EXISTS corelog.core_logs_default
    PARTITION OF corelog.core_logs DEFAULT;

CREATE INDEX IF NOT EXISTS core_logs_traffic_source_idx
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

INSERT INTO corelog.schema_version (version) VALUES (1)
    ON CONFLICT DO NOTHING;

-- Version 2: channels and their logs (POST /api/v1/log/create).

CREATE TABLE IF NOT EXISTS corelog.channels (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL REFERENCES corelog.accounts (id)
                            ON DELETE CASCADE,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS channels_account_idx
    ON corelog.channels (account_id);

-- Channel logs, partitioned by created_at like core_logs.
CREATE TABLE IF NOT EXISTS corelog.channel_logs (
    id                 uuid        NOT NULL,
    channel_id         uuid        NOT NULL
                                   REFERENCES corelog.channels (id)
                                   ON DELETE CASCADE,
    reference          text,
    label              text,
    body               text,
    type               text        NOT NULL
                                   CHECK (type IN ('page_view', 'action',
                                       'success', 'error', 'information')),
    alert              boolean     NOT NULL DEFAULT false,
    tags               text[]      NOT NULL DEFAULT '{}',
    custom_references  jsonb,
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (id, created_at),
    CHECK (label IS NOT NULL OR body IS NOT NULL)
) PARTITION BY RANGE (created_at);

CREATE TABLE IF NOT EXISTS corelog.channel_logs_default
    PARTITION OF corelog.channel_logs DEFAULT;

CREATE INDEX IF NOT EXISTS channel_logs_channel_idx
    ON corelog.channel_logs (channel_id, created_at);

INSERT INTO corelog.schema_version (version) VALUES (2)
    ON CONFLICT DO NOTHING;


-- Version 3: log groups, log streams and logtanks (POST /v1/logtanks).
-- Log groups belong to an account's project (the project of the token).

CREATE TABLE IF NOT EXISTS corelog.log_groups (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL REFERENCES corelog.accounts (id)
                            ON DELETE CASCADE,
    project_id  text        NOT NULL,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS log_groups_project_idx
    ON corelog.log_groups (account_id, project_id);

CREATE TABLE IF NOT EXISTS corelog.log_streams (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    log_group_id  uuid        NOT NULL REFERENCES corelog.log_groups (id)
                              ON DELETE CASCADE,
    name          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS log_streams_group_idx
    ON corelog.log_streams (log_group_id);

-- One logtank per resource in a project: a configuration table, not a log
-- table, so a unique index is the rule.
CREATE TABLE IF NOT EXISTS corelog.logtanks (
    id             uuid        PRIMARY KEY,
    account_id     uuid        NOT NULL REFERENCES corelog.accounts (id)
                               ON DELETE CASCADE,
    domain_id      text,
    project_id     text        NOT NULL,
    resource_type  text        NOT NULL
                               CHECK (resource_type ~ '^[A-Za-z0-9_.-]{1,64}$'),
    resource_id    text        NOT NULL
                               CHECK (length(resource_id) BETWEEN 1 AND 255),
    log_group_id   uuid        NOT NULL REFERENCES corelog.log_groups (id)
                               ON DELETE CASCADE,
    log_stream_id  uuid        NOT NULL REFERENCES corelog.log_streams (id)
                               ON DELETE CASCADE,
    status         text        NOT NULL DEFAULT 'ACTIVE',
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    UNIQUE (account_id, project_id, resource_type, resource_id)
);

INSERT INTO corelog.schema_version (version) VALUES (3)
    ON CONFLICT DO NOTHING;

COMMIT;
