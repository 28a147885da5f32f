-- Migration 007: a logtank's unique key compares its resource id right
-- after its account (issue 15).
--
-- The key was (account_id, project_id, resource_type, resource_id).  Each
-- logtank the module inserts descends it twice (ON CONFLICT's check, then
-- the insert), and the logtanks of a project share their account, project
-- and often their type, so each comparison on the way went through all
-- four columns, the last two found by walking the tuple past the text
-- before them.  As (account_id, resource_id, resource_type, project_id) a
-- comparison mostly ends at the resource id, whose place in the index
-- tuple is fixed (right after the account's uuid).
--
-- The same rows are duplicates: a unique key is a set of columns, their
-- order changes only what the index serves.  It still leads with
-- account_id, which the deletes of an account and of a log group look
-- logtanks up by (migration 004).  The module inserts a statement's rows
-- in the new order of the key (ORDER BY), so that two statements racing
-- for the same resources still wait for each other in one order.
--
-- The new index is built under an ACCESS EXCLUSIVE lock on
-- corelog.logtanks: logtank creation waits for it.  Applied by
-- scripts/migrate.sh (once, in one transaction: see there).

DO $$
DECLARE
    r  record;
BEGIN
    FOR r IN
        SELECT c.conname
          FROM pg_catalog.pg_constraint c
         WHERE c.conrelid = 'corelog.logtanks'::regclass
           AND c.contype = 'u'
    LOOP
        EXECUTE format('ALTER TABLE corelog.logtanks DROP CONSTRAINT %I',
                       r.conname);
    END LOOP;
END
$$;

ALTER TABLE corelog.logtanks
    ADD CONSTRAINT logtanks_account_id_resource_id_key
        UNIQUE (account_id, resource_id, resource_type, project_id);

INSERT INTO corelog.schema_version (version) VALUES (7);
