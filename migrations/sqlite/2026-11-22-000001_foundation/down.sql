DROP TABLE audit_checkpoints;
DROP TABLE audit_events;
DROP TABLE clients;
DROP TABLE pki_current;
DROP TABLE certificates;
DROP TABLE server_keys;
DROP TABLE write_lock;
