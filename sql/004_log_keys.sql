-- Migration 004: the log tables lose their foreign keys (issue 15: the
-- per-row foreign-key triggers were ~40 % of the backends' time on the
-- core-log route); each is replaced by a guarantee that keeps a log row
-- from pointing at a parent that is gone, and the keys' actions stay:
--
--  * insert side: the module's statements lock the parent rows they check
--    FOR KEY SHARE, in the same statement, as a foreign-key check does,
--    through the corelog.key_share_*() functions below (SELECT ... FOR KEY
--    SHARE needs UPDATE privilege on the table, which nginx's role does
--    not get: the functions run with their owner's rights and do nothing
--    but lock and return the rows asked for);
--  * DELETE: the foreign keys were ON DELETE CASCADE, and a
--    statement-level AFTER DELETE trigger on each parent deletes the log
--    rows that refer to the rows the statement deleted, with the owner's
--    rights as a foreign key's cascade does.  With the foreign keys
--    between the parents, which stay and cascade, deleting an account
--    still deletes its traffic sources, their pathnames, requests,
--    responses, claims and core logs, its channels and their logs, its
--    log groups, their streams and its logtanks.  A delete waits for a
--    write that holds the row FOR KEY SHARE, then deletes that write's
--    log too (in READ COMMITTED its trigger's statement sees it); a write
--    that comes after the delete waits for it, finds no parent and
--    answers 404;
--  * UPDATE: an AFTER UPDATE trigger refuses, with SQLSTATE 23503 as the
--    foreign keys (ON UPDATE NO ACTION) did, a change of a referenced
--    row's key, and of the column the lookup goes through (see below);
--  * TRUNCATE: an AFTER TRUNCATE trigger refuses (0A000, as PostgreSQL
--    refuses to truncate a table a foreign key refers to) a TRUNCATE of a
--    parent that leaves rows in its log table.  TRUNCATE ... CASCADE does
--    not reach the log tables any more: name them in the same statement
--    (TRUNCATE corelog.channels, corelog.channel_logs).
--
-- The lookups use the existing indexes on the partitioned tables:
-- core_logs (traffic_source_id, created_at), channel_logs (channel_id,
-- created_at), core_log_claims (request_id) and (response_id), logtanks
-- (account_id, project_id, ...).  core_logs has no index on
-- core_pathname_id, request_id or response_id:
--
--  * a core log's request and response are found through its claim
--    (core_log_claims' keys), and the claim's own trigger deletes its core
--    log (found by core_logs' primary key): deleting a request or a
--    response deletes its claim and its core log, as before.  Deleting a
--    claim now deletes its core log too (it used to stay, without a
--    claim), and a claim's request, response or core log cannot change
--    while its core log is there;
--  * a core log's pathname belongs to its traffic source (the module's
--    statement checks it), so it is looked up among that traffic source's
--    logs, and a change of the traffic source of a referenced pathname is
--    refused.  The same for a logtank's stream, looked up among its
--    group's logtanks through the one new index, logtanks (log_group_id,
--    log_stream_id), and for its group, looked up with its account (the
--    logtank's, checked by the module too).  Such a scope is made a key (a
--    unique index with the id, below), as for a composite foreign key, so
--    that changing it waits for the writes in progress.
--
-- No unique index spans the partitions; dropping or detaching a partition
-- of core_logs or channel_logs fires nothing (its logs' claims stay).
--
-- Rows inserted into the log tables by anything but the module are no
-- longer checked against their parents.
--
-- The triggers read with the statement's snapshot.  Under REPEATABLE READ
-- or SERIALIZABLE that snapshot cannot see a log row committed after it,
-- which a cascade would then leave behind: there a delete or a key change
-- of a parent's rows, or a truncate, is refused (SQLSTATE 0A000) unless
-- the log table is empty on disk (no partition of it has a page, so no
-- snapshot holds a row of it).  Delete parents in READ COMMITTED.
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

-- The scope of a lookup (below) is a key, as the referenced columns of a
-- composite foreign key are: a change of it waits for the writes that hold
-- the row FOR KEY SHARE (and the trigger then sees their logs), and a
-- write that comes after it waits, then reads the changed row.  Without
-- these, a pathname could move to another traffic source while a core log
-- of it is written, and that log be missed by the pathname's delete.
CREATE UNIQUE INDEX core_pathnames_id_traffic_source_key
    ON corelog.core_pathnames (id, traffic_source_id);
CREATE UNIQUE INDEX log_streams_id_group_key
    ON corelog.log_streams (id, log_group_id);
CREATE UNIQUE INDEX log_groups_id_account_key
    ON corelog.log_groups (id, account_id);


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
-- account deletes the group, which waits for the lock; and the group cannot
-- move to another account while a logtank of it refers to the old one
-- (below).

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


-- The triggers on the parents.  Each is statement-level, with the
-- statement's old rows (and new rows for UPDATE) as transition tables, and
-- takes (child, column, key[, scope ...]): a row of corelog.<child> refers
-- to a parent's row when its <column> = the row's <key>.  A scope is a
-- column of the same name and value in the parent and the child: the
-- child rows are looked up among the scope's rows, through the child's
-- index on it, so a change of the scope is a change of the key.  They run
-- with their owner's rights, as a foreign key's checks and cascades do.

-- corelog.log_table_has_pages(child): whether any partition of
-- corelog.<child> has a page on disk.  When none has, no snapshot, however
-- old, holds a row of it.
CREATE FUNCTION corelog.log_table_has_pages(p_child text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1
          FROM pg_partition_tree(format('corelog.%I', p_child)::regclass) t
         WHERE t.isleaf AND pg_relation_size(t.relid) > 0)
$$;

-- corelog.refuse_old_snapshot(parent, child, what): refuses (0A000) the
-- statement under REPEATABLE READ or SERIALIZABLE, whose snapshot would
-- not see a log of corelog.<child> committed after it, unless that table
-- is empty on disk.
CREATE FUNCTION corelog.refuse_old_snapshot(p_parent text, p_child text,
                                            p_what text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed'
       AND corelog.log_table_has_pages(p_child)
    THEN
        RAISE EXCEPTION USING
            ERRCODE = 'feature_not_supported',
            MESSAGE = format('corelog: %s table "%s" in READ COMMITTED only',
                             p_what, p_parent),
            HINT    = format('Under %s a row of table "%s" written'
                             ' meanwhile would not be seen.',
                             upper(current_setting('transaction_isolation')),
                             p_child);
    END IF;
END
$$;

-- AFTER DELETE: deletes the rows of the child that referred to the rows
-- the statement deleted, as ON DELETE CASCADE did.  The child's own
-- triggers (a claim's) cascade on.
CREATE FUNCTION corelog.cascade_delete()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_child  text := TG_ARGV[0];
    v_ref    text := format('l.%I = o.%I', TG_ARGV[1], TG_ARGV[2]);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
        RETURN NULL;
    END IF;
    FOR i IN 3 .. TG_NARGS - 1 LOOP
        v_ref := v_ref || format(' AND l.%1$I = o.%1$I', TG_ARGV[i]);
    END LOOP;

    PERFORM corelog.refuse_old_snapshot(TG_TABLE_NAME, v_child,
                                        'delete rows of');

    -- a new statement, a new snapshot: it sees the logs of the writes
    -- whose FOR KEY SHARE locks the delete has waited for
    EXECUTE format('DELETE FROM corelog.%I l USING old_rows o WHERE %s',
                   v_child, v_ref);
    RETURN NULL;
END
$$;

-- AFTER UPDATE: refuses, with SQLSTATE 23503 as ON UPDATE NO ACTION did,
-- the statement when it changed the key or scope of a row (an old (key,
-- scope) no new row still has) that a row of the child still refers to.
CREATE FUNCTION corelog.refuse_key_change()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key    uuid;
    v_child  text := TG_ARGV[0];
    v_same   text := format('n.%1$I = o.%1$I', TG_ARGV[2]);
    v_ref    text := format('l.%I = o.%I', TG_ARGV[1], TG_ARGV[2]);
    v_gone   text;
    v_found  boolean;
BEGIN
    FOR i IN 3 .. TG_NARGS - 1 LOOP
        v_same := v_same || format(' AND n.%1$I = o.%1$I', TG_ARGV[i]);
        v_ref := v_ref || format(' AND l.%1$I = o.%1$I', TG_ARGV[i]);
    END LOOP;
    v_gone := 'NOT EXISTS (SELECT 1 FROM new_rows n WHERE ' || v_same || ')';

    EXECUTE format('SELECT EXISTS (SELECT 1 FROM old_rows o WHERE %s)',
                   v_gone) INTO v_found;
    IF NOT v_found THEN
        RETURN NULL;
    END IF;

    PERFORM corelog.refuse_old_snapshot(TG_TABLE_NAME, v_child,
                                        'change the keys of rows of');

    EXECUTE format('SELECT o.%I FROM old_rows o WHERE %s'
                   '   AND EXISTS (SELECT 1 FROM corelog.%I l WHERE %s)'
                   ' LIMIT 1', TG_ARGV[2], v_gone, v_child, v_ref)
       INTO v_key;

    IF v_key IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = format('update on table "%s" violates the reference'
                             ' from table "%s"', TG_TABLE_NAME, v_child),
            DETAIL  = format('Key (%s)=(%s) is still referenced from'
                             ' table "%s".', TG_ARGV[2], v_key, v_child),
            TABLE   = v_child,
            SCHEMA  = 'corelog';
    END IF;

    RETURN NULL;
END
$$;

-- AFTER TRUNCATE (which fires no delete trigger): refuses the truncate
-- while the child has rows, after the statement has truncated every table
-- it names, so that a parent and its log table truncate together.
-- TG_ARGV: the child tables.
CREATE FUNCTION corelog.refuse_truncate()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_child  text;
    v_found  boolean;
BEGIN
    FOREACH v_child IN ARRAY TG_ARGV LOOP
        IF current_setting('transaction_isolation') = 'read committed' THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM corelog.%I)',
                           v_child) INTO v_found;
        ELSE
            -- an old snapshot could miss a row committed meanwhile
            v_found := corelog.log_table_has_pages(v_child);
        END IF;
        IF v_found THEN
            RAISE EXCEPTION USING
                ERRCODE = 'feature_not_supported',
                MESSAGE = format('cannot truncate table "%s": table "%s"'
                                 ' refers to it', TG_TABLE_NAME, v_child),
                HINT    = format('Truncate table "%s" in the same'
                                 ' statement.', v_child);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Trigger functions that run with their owner's rights: only the owner
-- may attach them (CREATE TRIGGER needs EXECUTE; firing does not), or a
-- role could delete any log through a trigger on a table of its own.
REVOKE EXECUTE ON FUNCTION
    corelog.cascade_delete(), corelog.refuse_key_change(),
    corelog.refuse_truncate(), corelog.refuse_old_snapshot(text, text, text),
    corelog.log_table_has_pages(text)
  FROM PUBLIC;

-- parent, child, column, key, scope: a core log's pathname is looked up
-- among its traffic source's logs, a logtank's stream among its group's,
-- a logtank's group among its account's; a core log's request and response
-- through its claim.
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
             'id',          '''account_id'''),
            ('log_streams',     'logtanks',        'log_stream_id',
             'id',          '''log_group_id'''))
            AS t (parent, child, col, key, scope)
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %1$I AFTER DELETE ON corelog.%2$I'
            ' REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT'
            ' EXECUTE FUNCTION'
            ' corelog.cascade_delete(%3$L, %4$L, %5$L%6$s)',
            r.parent || '_' || r.child || '_del', r.parent, r.child, r.col,
            r.key, coalesce(', ' || r.scope, ''));
        EXECUTE format(
            'CREATE TRIGGER %1$I AFTER UPDATE ON corelog.%2$I'
            ' REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
            ' FOR EACH STATEMENT EXECUTE FUNCTION'
            ' corelog.refuse_key_change(%3$L, %4$L, %5$L%6$s)',
            r.parent || '_' || r.child || '_upd', r.parent, r.child, r.col,
            r.key, coalesce(', ' || r.scope, ''));
        EXECUTE format(
            'CREATE TRIGGER %1$I AFTER TRUNCATE ON corelog.%2$I'
            ' FOR EACH STATEMENT'
            ' EXECUTE FUNCTION corelog.refuse_truncate(%3$L)',
            r.parent || '_' || r.child || '_truncate', r.parent, r.child);
    END LOOP;
END
$$;

INSERT INTO corelog.schema_version (version) VALUES (4);
