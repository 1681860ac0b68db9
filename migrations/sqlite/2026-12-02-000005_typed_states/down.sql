-- The CHECK constraints stay: SQLite cannot drop them without rebuilding
-- the tables again, and every stored value satisfies them.
SELECT 1;
