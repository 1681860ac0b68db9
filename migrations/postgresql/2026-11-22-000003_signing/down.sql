DROP TABLE requests;
DROP INDEX subscribers_alias;
ALTER TABLE subscribers DROP COLUMN alias;
