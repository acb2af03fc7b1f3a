-- tenant_suspended_by: loaded by migration 0016; change it here and add a migration that loads
-- it again.
-- Suspension covers a subtree: the code of the highest suspended tenant among the tenant at
-- p_path and those above it (NULL when none is). A path holds the codes root first
-- ('000000/510000/510100/'), and codes are unique, so this is at most one index probe per
-- level. Used by authentication (a key whose answer is not NULL may read but not act) and by
-- sending (a send whose tenant's answer is not NULL waits, parked; hub/messages, hub/delivery).
CREATE OR REPLACE FUNCTION tenant_suspended_by(p_path text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT a.code FROM tenants a
    WHERE a.code = ANY (string_to_array(rtrim(p_path, '/'), '/')) AND a.status = 'suspended'
    ORDER BY a.depth
    LIMIT 1
$fn$;
