-- Webhook signatures accepted within their replay window, so a signed
-- request is acted on once, across replicas. Twin: migrations/sqlite/0003_webhook_replay.sql.
CREATE TABLE webhook_signatures (
    hook        TEXT NOT NULL,
    signature   TEXT NOT NULL,       -- lowercase hex HMAC the server computed (one per timestamp and body, however the header is spelled)
    expires_at  BIGINT NOT NULL,     -- unix ms: past it the signed timestamp is outside the window anyway; pruned
    PRIMARY KEY (hook, signature)
);
CREATE INDEX webhook_signatures_expiry ON webhook_signatures (expires_at);
