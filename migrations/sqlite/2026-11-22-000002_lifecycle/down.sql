DROP TABLE parties;
DROP TABLE subscribers;
DROP TABLE crls;
DROP TABLE pki_state;
