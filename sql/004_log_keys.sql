-- Migration 004: the log tables lose their foreign keys (issue 15: the
-- per-row foreign-key triggers were ~40 % of the backends' time on the
-- core-log route); each is replaced by a guarantee that keeps a log row
-- from pointing at a parent that is gone:
--
--  * insert side: the module's statements lock the parent rows they check
--    FOR KEY SHARE, in the same statement, as a foreign-key check does,
--    through the corelog.key_share_*() functions below (SELECT ... FOR KEY
--    SHARE needs UPDATE privilege on the table, which nginx's role does
--    not get: the functions run with their owner's rights and do nothing
--    but lock and return the rows asked for);
--  * delete side: a statement-level AFTER trigger on each parent refuses,
--    with SQLSTATE 23503 as ON DELETE RESTRICT would, a DELETE of a row
--    still referenced by a log row, and an UPDATE of its key (or of the
--    column the lookup goes through, see below); a BEFORE TRUNCATE
--    trigger refuses a TRUNCATE of a parent while its log table has rows.
--
-- The foreign keys were ON DELETE CASCADE: deleting a parent deleted its
-- logs.  Now it is refused while logs refer to it (drop or detach the
-- log partitions, or delete the logs, first).  Dropping and detaching
-- partitions of core_logs and channel_logs is not affected.
--
-- The lookups use the existing indexes on the partitioned tables:
-- core_logs (traffic_source_id, created_at), channel_logs (channel_id,
-- created_at), core_log_claims (request_id) and (response_id), logtanks
-- (account_id, project_id, ...).  core_logs has no index on
-- core_pathname_id, request_id or response_id: a core log's request and
-- response are found through its claim (core_log_claims' keys), and a
-- claim cannot be deleted or changed while its core log is there (looked
-- up by the core logs' primary key); a core log's pathname belongs to its
-- traffic source (the module's statement checks it), so it is looked up
-- among that traffic source's logs, and a change of the traffic source of
-- a referenced pathname is refused too.  The same for a log stream's
-- group, whose logtanks are found through the one new index, logtanks
-- (log_group_id, log_stream_id).  No unique index spans the partitions.
--
-- Rows inserted into the log tables by anything but the module are no
-- longer checked against their parents.
--
-- The delete-side check reads with the statement's snapshot; under
-- REPEATABLE READ or SERIALIZABLE that snapshot cannot see a log row
-- committed after it, so a delete of a referenced parent's row is
-- refused there (SQLSTATE 0A000): delete parents in READ COMMITTED.
--
-- Applied by scripts/migrate.sh (once, in one transaction: see there).

ALTER TABLE corelog.core_logs
    DROP CONSTRAINT IF EXISTS core_logs_traffic_source_id_fkey,
    DROP CONSTRAINT IF EXISTS core_logs_core_pathname_id_fkey,
    DROP CONSTRAINT IF EXISTS core_logs_request_id_fkey,
    DROP CONSTRAINT IF EXISTS core_logs_response_id_fkey;

ALTER TABLE corelog.core_log_claims
    DROP CONSTRAINT IF EXISTS core_log_claims_request_id_fkey,
    DROP CONSTRAINT IF EXISTS core_log_claims_response_id_fkey;

ALTER TABLE corelog.channel_logs
    DROP CONSTRAINT IF EXISTS channel_logs_channel_id_fkey;

ALTER TABLE corelog.logtanks
    DROP CONSTRAINT IF EXISTS logtanks_account_id_fkey,
    DROP CONSTRAINT IF EXISTS logtanks_log_group_id_fkey,
    DROP CONSTRAINT IF EXISTS logtanks_log_stream_id_fkey;

CREATE INDEX logtanks_group_stream_idx
    ON corelog.logtanks (log_group_id, log_stream_id);


-- Insert side: lock the parents a statement checks, as a foreign-key check
-- does.  corelog.key_share_<table>(ids), for each parent a statement
-- checks, takes the ids asked for and returns the rows that exist, locked
-- FOR KEY SHARE until the caller's transaction ends, with the columns the
-- ownership check needs (below: table, the columns besides id).
DO $$
DECLARE
    r  record;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('traffic_sources', 'account_id uuid'),
            ('core_pathnames',  'traffic_source_id uuid'),
            ('requests',        'traffic_source_id uuid'),
            ('responses',       'traffic_source_id uuid'),
            ('channels',        'account_id uuid'),
            ('log_groups',      'account_id uuid, project_id text'),
            ('log_streams',     'log_group_id uuid'))
            AS t (parent, cols)
    LOOP
        EXECUTE format(
            'CREATE FUNCTION corelog.%1$I(p_ids uuid[])'
            ' RETURNS TABLE (id uuid, %2$s)'
            ' LANGUAGE sql VOLATILE SECURITY DEFINER'
            ' SET search_path = pg_catalog, pg_temp AS'
            ' $f$ SELECT t.id, %3$s FROM corelog.%4$I t'
            '      WHERE t.id = ANY (p_ids) FOR KEY SHARE $f$',
            'key_share_' || r.parent, r.cols,
            regexp_replace(r.cols, '(\w+) \w+', 't.\1', 'g'), r.parent);
    END LOOP;
END
$$;

-- A logtank's account is locked through its log group (whose account must
-- be the logtank's, and whose foreign key to accounts stays): deleting the
-- account deletes the group, which waits for the lock.

-- Not for everyone: only the roles that may write logs.  Those that may
-- now (they have INSERT on a log table) get EXECUTE here, so that an
-- upgraded database keeps serving; docs/operations.md grants it to a new
-- role.
DO $$
DECLARE
    r  record;
BEGIN
    REVOKE EXECUTE ON FUNCTION
        corelog.key_share_traffic_sources(uuid[]),
        corelog.key_share_core_pathnames(uuid[]),
        corelog.key_share_requests(uuid[]),
        corelog.key_share_responses(uuid[]),
        corelog.key_share_channels(uuid[]),
        corelog.key_share_log_groups(uuid[]),
        corelog.key_share_log_streams(uuid[])
      FROM PUBLIC;

    FOR r IN
        SELECT DISTINCT a.grantee::regrole::text AS grantee
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid IN ('corelog.core_logs'::regclass,
                         'corelog.channel_logs'::regclass,
                         'corelog.logtanks'::regclass)
           AND a.privilege_type = 'INSERT'
           AND a.grantee <> 0
           AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION'
                       ' corelog.key_share_traffic_sources(uuid[]),'
                       ' corelog.key_share_core_pathnames(uuid[]),'
                       ' corelog.key_share_requests(uuid[]),'
                       ' corelog.key_share_responses(uuid[]),'
                       ' corelog.key_share_channels(uuid[]),'
                       ' corelog.key_share_log_groups(uuid[]),'
                       ' corelog.key_share_log_streams(uuid[])'
                       ' TO %s', r.grantee);
    END LOOP;
END
$$;


-- Delete side: corelog.refuse_referenced(child, column, key[, scope ...]),
-- an AFTER DELETE or UPDATE trigger, statement-level, with the statement's
-- old rows (and new rows for UPDATE) as transition tables.  It refuses the
-- statement when a row it deleted, or whose key or scope it changed (an old
-- (key, scope) no new row still has), is still referenced: when a row of
-- corelog.<child> has <column> = the row's <key>, the way ON DELETE
-- RESTRICT does (SQLSTATE 23503).  A scope is a column of the same name
-- and value in the parent and the child: the child rows are looked up
-- among the scope's rows, through the child's index on it.

CREATE FUNCTION corelog.refuse_referenced()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_key    uuid;
    v_child  text := TG_ARGV[0];
    v_same   text := format('n.%1$I = o.%1$I', TG_ARGV[2]);
    v_ref    text := format('l.%I = o.%I', TG_ARGV[1], TG_ARGV[2]);
    v_gone   text := 'TRUE';
    v_found  boolean;
BEGIN
    FOR i IN 3 .. TG_NARGS - 1 LOOP
        v_same := v_same || format(' AND n.%1$I = o.%1$I', TG_ARGV[i]);
        v_ref := v_ref || format(' AND l.%1$I = o.%1$I', TG_ARGV[i]);
    END LOOP;
    IF TG_OP = 'UPDATE' THEN
        v_gone := 'NOT EXISTS (SELECT 1 FROM new_rows n WHERE ' || v_same
                  || ')';
    END IF;

    EXECUTE format('SELECT EXISTS (SELECT 1 FROM old_rows o WHERE %s)',
                   v_gone) INTO v_found;
    IF NOT v_found THEN
        RETURN NULL;
    END IF;

    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'feature_not_supported',
            MESSAGE = format('corelog: delete rows of table "%s", or change'
                             ' their keys, in READ COMMITTED only',
                             TG_TABLE_NAME),
            HINT    = 'Under ' || current_setting('transaction_isolation')
                      || ' a log written meanwhile would not be seen.';
    END IF;

    EXECUTE format('SELECT o.%I FROM old_rows o WHERE %s'
                   '   AND EXISTS (SELECT 1 FROM corelog.%I l WHERE %s)'
                   ' LIMIT 1', TG_ARGV[2], v_gone, v_child, v_ref)
       INTO v_key;

    IF v_key IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format('update or delete on table "%s" violates the'
                             ' reference from table "%s"', TG_TABLE_NAME,
                             v_child),
            DETAIL  = format('Key (%s)=(%s) is still referenced from'
                             ' table "%s".', TG_ARGV[2], v_key, v_child),
            TABLE   = v_child,
            SCHEMA  = 'corelog';
    END IF;

    RETURN NULL;
END
$$;

-- TRUNCATE fires no delete trigger: refuse it while the child has rows.
-- TG_ARGV: the child tables.
CREATE FUNCTION corelog.refuse_truncate()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_child  text;
    v_found  boolean;
BEGIN
    FOREACH v_child IN ARRAY TG_ARGV LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM corelog.%I)', v_child)
           INTO v_found;
        IF v_found THEN
            RAISE EXCEPTION USING
                ERRCODE = 'feature_not_supported',
                MESSAGE = format('cannot truncate table "%s": table "%s"'
                                 ' refers to it', TG_TABLE_NAME, v_child);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- parent, child, column, key, scope: a core log's pathname is looked up
-- among its traffic source's logs, a logtank's stream among its group's; a
-- core log's request and response through its claim, which cannot go
-- while the core log is there.
DO $$
DECLARE
    r  record;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('traffic_sources', 'core_logs',       'traffic_source_id',
             'id',          NULL),
            ('core_pathnames',  'core_logs',       'core_pathname_id',
             'id',          '''traffic_source_id'''),
            ('requests',        'core_log_claims', 'request_id',
             'id',          NULL),
            ('responses',       'core_log_claims', 'response_id',
             'id',          NULL),
            ('core_log_claims', 'core_logs',       'id',
             'core_log_id', '''request_id'', ''response_id'''),
            ('channels',        'channel_logs',    'channel_id',
             'id',          NULL),
            ('accounts',        'logtanks',        'account_id',
             'id',          NULL),
            ('log_groups',      'logtanks',        'log_group_id',
             'id',          NULL),
            ('log_streams',     'logtanks',        'log_stream_id',
             'id',          '''log_group_id'''))
            AS t (parent, child, col, key, scope)
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %1$I AFTER DELETE ON corelog.%2$I'
            ' REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT'
            ' EXECUTE FUNCTION'
            ' corelog.refuse_referenced(%3$L, %4$L, %5$L%6$s)',
            r.parent || '_' || r.child || '_del', r.parent, r.child, r.col,
            r.key, coalesce(', ' || r.scope, ''));
        EXECUTE format(
            'CREATE TRIGGER %1$I AFTER UPDATE ON corelog.%2$I'
            ' REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
            ' FOR EACH STATEMENT EXECUTE FUNCTION'
            ' corelog.refuse_referenced(%3$L, %4$L, %5$L%6$s)',
            r.parent || '_' || r.child || '_upd', r.parent, r.child, r.col,
            r.key, coalesce(', ' || r.scope, ''));
        EXECUTE format(
            'CREATE TRIGGER %1$I BEFORE TRUNCATE ON corelog.%2$I'
            ' FOR EACH STATEMENT'
            ' EXECUTE FUNCTION corelog.refuse_truncate(%3$L)',
            r.parent || '_' || r.child || '_truncate', r.parent, r.child);
    END LOOP;
END
$$;

INSERT INTO corelog.schema_version (version) VALUES (4);
