-- Migration 005: what the routes' statements cost PostgreSQL per row and
-- per statement, and not what they guarantee (issue 15, profiles of the
-- backends under load).
--
-- corelog.key_share_*() (migration 004) keep what they do and lose what
-- they cost (30 % of the backends' time on the core-log route was in
-- these functions, half of it parsing and planning their one query):
--
--  * PL/pgSQL instead of SQL: a SQL function that is SECURITY DEFINER is
--    never inlined, and its query was parsed and planned again at every
--    call, four times per core-log statement; PL/pgSQL keeps the plan for
--    the session;
--  * no SET search_path: a function with a SET clause changes the setting
--    twice per call, and each change of search_path costs a namespace
--    lookup and a check of the kept plan.  Nothing in the bodies depends
--    on search_path instead: the table is schema-qualified and the one
--    operator is OPERATOR(pg_catalog.=), so that a caller whose search_path
--    puts a schema of its own before pg_catalog cannot slip an operator of
--    its own into a function that runs with its owner's rights.
--
-- CREATE OR REPLACE keeps each function's owner and grants.

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
            'CREATE OR REPLACE FUNCTION corelog.%1$I(p_ids uuid[])'
            ' RETURNS TABLE (id uuid, %2$s)'
            ' LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS'
            ' $f$ BEGIN'
            '     RETURN QUERY'
            '         SELECT t.id, %3$s FROM corelog.%4$I t'
            '          WHERE t.id OPERATOR(pg_catalog.=) ANY (p_ids)'
            '            FOR KEY SHARE;'
            ' END $f$',
            'key_share_' || r.parent, r.cols,
            regexp_replace(r.cols, '(\w+) \w+', 't.\1', 'g'), r.parent);
    END LOOP;
END
$$;

-- A logtank's resource_type: the same rule (1 to 64 of A-Z a-z 0-9 _ . -)
-- without the anchored, bounded regular expression, which cost 4.4 us a
-- row (5 % of the backends' time on the logtank route): no character
-- outside the set, and the length, 0.3 us.  The constraint keeps its name.
ALTER TABLE corelog.logtanks
    DROP CONSTRAINT logtanks_resource_type_check,
    ADD CONSTRAINT logtanks_resource_type_check
        CHECK (resource_type OPERATOR(pg_catalog.!~) '[^A-Za-z0-9_.-]'
               AND length(resource_type) BETWEEN 1 AND 64);

INSERT INTO corelog.schema_version (version) VALUES (5);
