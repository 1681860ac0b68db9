CREATE INDEX requests_limit ON requests (subscriber_id, currency, limit_day);
CREATE INDEX requests_subscriber_status ON requests (subscriber_id, status);
DROP INDEX requests_subscriber_pending;
DROP TABLE daily_totals;
