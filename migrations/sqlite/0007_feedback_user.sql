-- The Polytomic user behind a feedback record, as Polytomic confirmed it (the API-key check or the OAuth
-- sign-in). Records stored before this migration have none.
ALTER TABLE feedback ADD COLUMN user_id TEXT;
