-- A reminder held back by the per-sender loop guard is not recorded as sent:
-- the scheduler tries it again once the guard's window allows (this time).
ALTER TABLE cases ADD COLUMN reminder_held_until TEXT;
