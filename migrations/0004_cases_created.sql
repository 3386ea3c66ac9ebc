-- The burst check counts cases opened in the last minute at the end of every
-- intake batch.
CREATE INDEX cases_created_at ON cases (created_at);
