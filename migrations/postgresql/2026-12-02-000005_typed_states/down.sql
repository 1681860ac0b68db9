ALTER TABLE requests DROP CONSTRAINT requests_status_check;
ALTER TABLE subscribers DROP CONSTRAINT subscribers_state_check;
ALTER TABLE certificates DROP CONSTRAINT certificates_status_check;
ALTER TABLE parties DROP CONSTRAINT parties_kind_check;
ALTER TABLE parties DROP CONSTRAINT parties_status_check;
ALTER TABLE clients DROP CONSTRAINT clients_role_check;
ALTER TABLE clients DROP CONSTRAINT clients_status_check;
