-- Private preferences of each account (app.bsky.actor.putPreferences), in
-- the order they were put. value_json is the preference object as sent.
CREATE TABLE account_prefs (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	did        TEXT NOT NULL,
	type       TEXT NOT NULL,
	value_json TEXT NOT NULL
);
CREATE INDEX account_prefs_did ON account_prefs (did, id);

-- Read-after-write looks up the records written after a revision.
CREATE INDEX records_rev ON records (did, rev);
