DROP TABLE wrapped_keys;
DROP TABLE keks;
