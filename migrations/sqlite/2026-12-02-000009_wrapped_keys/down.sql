DROP INDEX certificates_listed;
DROP TABLE wrapped_keys;
DROP TABLE keks;
