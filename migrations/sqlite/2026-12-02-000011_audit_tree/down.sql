DROP TABLE audit_tree_heads;
DROP TABLE audit_tree_nodes;
