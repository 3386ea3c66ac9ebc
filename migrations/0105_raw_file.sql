-- A large message is fetched part by part and never held whole in memory:
-- its raw bytes are then the blob store's file named by `sha256` (under
-- `storage.attachments_dir`) instead of the `raw` column. The purge clears
-- the flag where it clears `raw`, and the file goes with the next sweep of
-- files no row names.
ALTER TABLE messages ADD COLUMN raw_file INTEGER NOT NULL DEFAULT 0
    CHECK (raw_file IN (0, 1));
