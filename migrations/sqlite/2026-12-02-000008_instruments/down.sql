DROP TABLE instruments;
ALTER TABLE requests DROP COLUMN instrument_id;
