-- States as types (src/states.rs): every state column accepts exactly the
-- values of its enum. Keep these lists equal to the enums; a test does.
ALTER TABLE requests ADD CONSTRAINT requests_status_check
    CHECK (status IN ('pending_authorization', 'signing', 'signed', 'relayed', 'settled', 'rolled_back', 'declined', 'expired', 'failed'));
ALTER TABLE subscribers ADD CONSTRAINT subscribers_state_check
    CHECK (state IN ('pending_activation', 'active', 'blocked', 'archived'));
ALTER TABLE certificates ADD CONSTRAINT certificates_status_check
    CHECK (status IN ('active', 'suspended', 'revoked', 'expired'));
ALTER TABLE parties ADD CONSTRAINT parties_kind_check
    CHECK (kind IN ('merchant', 'fsp', 'bank', 'gateway'));
ALTER TABLE parties ADD CONSTRAINT parties_status_check
    CHECK (status IN ('active', 'suspended', 'revoked', 'expired'));
ALTER TABLE clients ADD CONSTRAINT clients_role_check
    CHECK (role IN ('operator', 'auditor', 'fsp', 'gateway'));
ALTER TABLE clients ADD CONSTRAINT clients_status_check
    CHECK (status IN ('active', 'suspended', 'revoked', 'expired'));
