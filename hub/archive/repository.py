"""SQL for the archive's stored files."""

from __future__ import annotations

import msgspec


class StoredFile(msgspec.Struct, frozen=True):
    kind: str
    data: bytes
    sha256: str


# The files stored for tenant $1's month $2 (subtree flag $3), by kind.
STORED = """
SELECT kind, bytes AS data, sha256 FROM archive_files
WHERE tenant_id = $1 AND month = $2 AND subtree = $3
ORDER BY kind
"""

# Store a month's file once: a file stored already (by a concurrent first fetch) stays, and
# the caller reads back whichever was stored (STORED).
STORE = """
INSERT INTO archive_files (tenant_id, month, kind, subtree, bytes, sha256)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant_id, month, kind, subtree) DO NOTHING
"""
