DROP TABLE deliveries;
ALTER TABLE requests DROP COLUMN final_at;
