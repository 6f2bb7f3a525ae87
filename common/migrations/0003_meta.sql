-- Facts about the store itself: which Redis queue it mirrors (its identity), so that a
-- store meeting another Redis does not restore old jobs into it on its own.
CREATE TABLE store_meta (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
