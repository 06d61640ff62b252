"""The SQLite queue: connections and migrations (:mod:`.db`), operations (:mod:`.queue`)."""
