-- Gateway processes writing to this file, with a heartbeat: a process that is alone may
-- commit small writes on its event loop without a thread hand-off; with company it queues
-- them to its writer thread so that every process gets its turn at the write lock.
CREATE TABLE writers (
    owner   TEXT PRIMARY KEY,
    seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
