-- Migration 006: a logtank's key compares bytes, whatever the database's
-- default collation (issue 15).
--
-- The unique key (account_id, project_id, resource_type, resource_id) is
-- the one index of the routes' hot paths that holds text.  Each logtank
-- the module inserts descends it twice (ON CONFLICT's check, then the
-- insert), comparing its text columns at each level.  In a database whose
-- default collation is a linguistic one (en_US.UTF-8, say: initdb takes
-- it from the environment), each comparison of two different strings is
-- a strcoll() call; with COLLATE "C" it is a memcmp().
--
-- Nothing the key guarantees changes: a deterministic collation (every
-- collation a database can have as its default) calls two strings equal
-- only when their bytes are, so the same rows are duplicates under both.
-- These columns hold identifiers (a project id, a resource type of
-- A-Z a-z 0-9 _ . -, a resource id), not text to sort for a reader; only
-- an ORDER BY of them in an operator's own query sees the byte order.
--
-- Changing a column's collation rewrites no row, but rebuilds the indexes
-- that hold the column (here the unique key) under an ACCESS EXCLUSIVE
-- lock on corelog.logtanks: logtank creation waits for it.  Applied by
-- scripts/migrate.sh (once, in one transaction: see there).

ALTER TABLE corelog.logtanks
    ALTER COLUMN project_id    TYPE text COLLATE "C",
    ALTER COLUMN resource_type TYPE text COLLATE "C",
    ALTER COLUMN resource_id   TYPE text COLLATE "C";

INSERT INTO corelog.schema_version (version) VALUES (6);
