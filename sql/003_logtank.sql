-- Migration 003: log groups, log streams and logtanks (POST /v1/logtanks).
-- Log groups belong to an account's project (the project of the token).
-- Applied by scripts/migrate.sh (once, in one transaction: see there).

CREATE TABLE corelog.log_groups (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL REFERENCES corelog.accounts (id)
                            ON DELETE CASCADE,
    project_id  text        NOT NULL,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX log_groups_project_idx
    ON corelog.log_groups (account_id, project_id);

CREATE TABLE corelog.log_streams (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    log_group_id  uuid        NOT NULL REFERENCES corelog.log_groups (id)
                              ON DELETE CASCADE,
    name          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX log_streams_group_idx
    ON corelog.log_streams (log_group_id);

-- One logtank per resource in a project: a configuration table, not a log
-- table, so a unique index is the rule.
CREATE TABLE corelog.logtanks (
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

INSERT INTO corelog.schema_version (version) VALUES (3);
