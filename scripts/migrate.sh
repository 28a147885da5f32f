#!/bin/bash
# Create or upgrade the corelog schema: apply the migrations sql/NNN_*.sql
# whose number is not yet in corelog.schema_version, in order.  The one way
# the schema is loaded: make run, make bench, the tests and the container
# all call this.
#
#   scripts/migrate.sh CONNINFO          up to the newest migration
#   scripts/migrate.sh CONNINFO LAST     up to migration LAST
#
# Each migration runs in its own transaction (psql, ON_ERROR_STOP: an error
# rolls it back and stops here, exit status 3) which first takes an
# advisory lock and then checks schema_version again, so that concurrent
# runs apply each migration once.  A migration records its own number in
# corelog.schema_version (migration 001 creates that table), and the
# transaction fails when it did not.  Prints one line per migration
# applied, nothing when the database is up to date.
#
# Rules for sql/: three-digit numbers, one file each, no BEGIN or COMMIT in
# a file; a migration that has shipped is never edited (a change to the
# schema is the next migration).  By hand, without this script: apply the
# missing files in order, each with psql -1 -v ON_ERROR_STOP=1 -f FILE.
#
# Environment: PSQL (default psql).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
sqldir=$top/sql
psql=${PSQL:-psql}

die() { echo "migrate: $*" >&2; exit 2; }

[ $# -eq 1 ] || [ $# -eq 2 ] || die "usage: $0 CONNINFO [LAST]"
conninfo=$1
last=${2:-999}
[[ $last =~ ^[0-9]+$ ]] || die "LAST must be a migration number: $last"
[[ $sqldir != *"'"* ]] || die "$sqldir: a quote in the path"

script='SET client_min_messages = warning;'
prev=0
for file in "$sqldir"/*.sql; do
    name=${file##*/}
    [[ $name =~ ^([0-9]{3})_[a-z0-9_]+\.sql$ ]] ||
        die "$file: not NNN_name.sql"
    n=$((10#${BASH_REMATCH[1]}))
    [ "$n" -gt "$prev" ] || die "$file: number $n used twice (or 0)"
    prev=$n
    [ "$n" -le "$((10#$last))" ] || break
    script+="
BEGIN;
DO \$\$ BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('corelog schema'));
END \$\$;
SELECT to_regclass('corelog.schema_version') IS NOT NULL AS corelog_have
\\gset
\\if :corelog_have
SELECT EXISTS (SELECT 1 FROM corelog.schema_version WHERE version = $n)
    AS corelog_done
\\gset
\\else
\\set corelog_done false
\\endif
\\if :corelog_done
\\else
\\echo migrate: $name
\\i '$file'
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM corelog.schema_version
                    WHERE version = $n) THEN
        RAISE 'migrate: $name did not record version $n in corelog.schema_version';
    END IF;
END \$\$;
\\endif
COMMIT;"
done

[ "$prev" -gt 0 ] || die "no migrations in $sqldir"

"$psql" -X -q -v ON_ERROR_STOP=1 -d "$conninfo" -f - <<<"$script"
