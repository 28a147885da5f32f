-- Migration 002: channels and their logs (POST /api/v1/log/create).
-- Applied by scripts/migrate.sh (once, in one transaction: see there).

CREATE TABLE corelog.channels (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL REFERENCES corelog.accounts (id)
                            ON DELETE CASCADE,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX channels_account_idx
    ON corelog.channels (account_id);

-- Channel logs, partitioned by created_at like core_logs.
CREATE TABLE corelog.channel_logs (
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

CREATE TABLE corelog.channel_logs_default
    PARTITION OF corelog.channel_logs DEFAULT;

CREATE INDEX channel_logs_channel_idx
    ON corelog.channel_logs (channel_id, created_at);

INSERT INTO corelog.schema_version (version) VALUES (2);
