-- lifeboat schema, Postgres flavour: the twin of migrations/sqlite/0001_init.sql
-- (same tables, columns and indexes; a schema change updates both).
--
-- Times are BIGINT unix milliseconds, not timestamptz, on purpose: the domain
-- types (store/types.rs) carry i64 ms, and leases are compared against the
-- caller's clock (`Lease.now`, which the conformance stories move forward to
-- expire a lease), so both backends store the very same numbers and no value
-- is rounded or converted on the way in or out.
-- JSON is jsonb (validated and indexable; note jsonb does not keep object key
-- order, and neither TEXT nor jsonb accepts NUL characters: the store replaces them).
-- Ids stay TEXT (UUIDv7 strings, sortable by creation). Every id column uses
-- COLLATE "C" so ORDER BY id / `o.id < r.id` compare bytes exactly as SQLite
-- does whatever the database's locale, and `id LIKE 'prefix%'` can use the index.

-- Workflow sources by content hash: a run is pinned to the exact text it started with.
CREATE TABLE definitions (
    hash        TEXT COLLATE "C" PRIMARY KEY,
    workflow    TEXT NOT NULL,
    file        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE runs (
    id               TEXT COLLATE "C" PRIMARY KEY,   -- UUIDv7: sortable by creation
    workflow         TEXT NOT NULL,
    definition_hash  TEXT COLLATE "C" NOT NULL REFERENCES definitions(hash),
    status           TEXT NOT NULL,             -- queued running waiting succeeded failed rolling_back rolled_back rollback_failed cancelled
    inputs           JSONB NOT NULL,
    outputs          JSONB,
    trigger          JSONB NOT NULL,            -- {"kind": "manual"|"webhook"|"schedule"|"workflow", ...}
    concurrency_key  TEXT COLLATE "C",
    parent_run_id    TEXT COLLATE "C",
    parent_step_id   TEXT,
    root_run_id      TEXT COLLATE "C" NOT NULL, -- the top of a tree of child runs
    cancelled_by     TEXT,                      -- set by `cancel`; the run ends `cancelled`
    paused           BOOLEAN NOT NULL DEFAULT FALSE,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    wake_at          BIGINT,                    -- due for attention at; NULL: now
    woken            BOOLEAN NOT NULL DEFAULT false, -- woken since last claimed: a release keeps it due
    lease_owner      TEXT,
    lease_expires_at BIGINT
);
CREATE INDEX runs_claimable ON runs (wake_at) WHERE status IN ('queued', 'running', 'waiting', 'rolling_back');
CREATE INDEX runs_by_workflow ON runs (workflow, created_at);
CREATE INDEX runs_by_root ON runs (root_run_id);
CREATE INDEX runs_by_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_by_concurrency ON runs (concurrency_key) WHERE concurrency_key IS NOT NULL;

CREATE TABLE steps (
    run_id       TEXT COLLATE "C" NOT NULL REFERENCES runs(id),
    step_id      TEXT COLLATE "C" NOT NULL,
    status       TEXT NOT NULL,       -- pending running retry_wait waiting needs_human succeeded failed skipped cancelled rolled_back
    attempts     BIGINT NOT NULL DEFAULT 0,
    outputs      JSONB,
    error        TEXT,
    started_at   BIGINT,
    finished_at  BIGINT,
    wake_at      BIGINT,             -- retry_wait / waiting: due at
    state        JSONB,              -- kind-specific durable state (poll deadline, for_each progress, child run)
    rollback     TEXT,               -- NULL, or pending running succeeded failed
    PRIMARY KEY (run_id, step_id)
);

-- Every execution of a step body, recorded before its side effect starts.
CREATE TABLE attempts (
    run_id       TEXT COLLATE "C" NOT NULL,
    step_id      TEXT COLLATE "C" NOT NULL,
    phase        TEXT COLLATE "C" NOT NULL,   -- forward | rollback
    n            BIGINT NOT NULL,
    status       TEXT NOT NULL,       -- running succeeded failed interrupted
    worker       TEXT NOT NULL,
    pgid         BIGINT,              -- process group of a shell attempt, to clean up after a crash
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    error        TEXT,
    stdout       TEXT,
    stderr       TEXT,
    PRIMARY KEY (run_id, step_id, phase, n)
);

-- Append-only history of every transition. Ids come from a sequence; the
-- store inserts a run's events only while holding that run's row lock, so
-- within one run they commit in id order and `events(run, after)` misses none.
CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   TEXT COLLATE "C" NOT NULL,
    at       BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    step_id  TEXT,
    data     JSONB
);
CREATE INDEX events_by_run ON events (run_id, id);

-- Operator requests (cancel, pause, skip, mark, ...) for whichever worker owns the run.
CREATE TABLE requests (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   TEXT COLLATE "C" NOT NULL,
    kind     TEXT NOT NULL,
    step_id  TEXT,
    data     JSONB,
    actor    TEXT NOT NULL,
    at       BIGINT NOT NULL,
    done_at  BIGINT
);
CREATE INDEX requests_open ON requests (run_id) WHERE done_at IS NULL;

CREATE TABLE workers (
    id            TEXT COLLATE "C" PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
