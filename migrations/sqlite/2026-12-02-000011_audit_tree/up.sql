-- The audit log as a Merkle tree (issue #12, CONTRACT §13; src/audit/tree.rs).
-- Each row is a complete subtree: the hash (hex) of leaves
-- [idx << level, (idx + 1) << level), level 0 being the leaf hash of the
-- event with seq = idx + 1. Rows are only ever added (at checkpoint time or
-- before a proof of a size not yet built), never changed; a proof reads
-- O(log n) of them by primary key.
CREATE TABLE audit_tree_nodes (
    level INTEGER NOT NULL,
    idx BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Signed tree heads: the audit key's signature over
-- tmcs-sth-v1\n<tree_size>\n<root_hash>\n<ts>\n, one with every checkpoint.
CREATE TABLE audit_tree_heads (
    tree_size BIGINT PRIMARY KEY NOT NULL,
    root_hash TEXT NOT NULL,
    ts TEXT NOT NULL,
    sig TEXT NOT NULL
);
