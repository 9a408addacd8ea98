"""Schema versions. Each entry moves the schema one version forward; they run in order at start.

Never edit a released entry: add a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the cookbook's three tables with production columns, and the audit log
    """
    CREATE TABLE feedbacks (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        feedback_id   TEXT UNIQUE,
        user_id       TEXT NOT NULL,
        query         TEXT NOT NULL,
        ai_response   TEXT NOT NULL DEFAULT '',
        feedback_text TEXT NOT NULL,
        feedback_type TEXT NOT NULL CHECK (feedback_type IN ('bug', 'suggestion', 'praise')),
        status        TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'processing', 'processed', 'rejected')),
        source        TEXT NOT NULL DEFAULT 'api',
        metadata      TEXT,
        error_count   INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE INDEX ix_feedbacks_status ON feedbacks (status, id);
    CREATE INDEX ix_feedbacks_type ON feedbacks (feedback_type, id);
    CREATE INDEX ix_feedbacks_user ON feedbacks (user_id, created_at);

    CREATE TABLE generated_rules (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        rule_id        TEXT UNIQUE,
        feedback_id    TEXT NOT NULL UNIQUE REFERENCES feedbacks (feedback_id),
        module_name    TEXT NOT NULL,
        rule_type      TEXT NOT NULL CHECK (rule_type IN ('prompt_update', 'system_message')),
        old_rule       TEXT,
        new_rule       TEXT NOT NULL,
        reasoning      TEXT NOT NULL DEFAULT '',
        confidence     REAL NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
        status         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'approved', 'deployed', 'rolled_back', 'rejected')),
        warnings       TEXT NOT NULL DEFAULT '[]',
        generator      TEXT NOT NULL,
        model          TEXT,
        input_tokens   INTEGER,
        output_tokens  INTEGER,
        latency_ms     INTEGER,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        approved_by    TEXT,
        approved_at    TEXT,
        rejected_by    TEXT,
        rejected_at    TEXT,
        reject_reason  TEXT,
        edited_by      TEXT,
        edited_at      TEXT,
        deployed_by    TEXT,
        deployed_at    TEXT,
        rolled_back_by TEXT,
        rolled_back_at TEXT
    );
    CREATE INDEX ix_rules_status ON generated_rules (status, id);
    CREATE INDEX ix_rules_module ON generated_rules (module_name, status);

    CREATE TABLE deployments (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        rule_id         TEXT NOT NULL REFERENCES generated_rules (rule_id),
        module_name     TEXT NOT NULL,
        deployed_by     TEXT NOT NULL,
        deployed_at     TEXT NOT NULL,
        version_before  TEXT NOT NULL,
        version_after   TEXT NOT NULL,
        rollback_of     INTEGER REFERENCES deployments (id),
        outcome         TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'applied')),
        previous_status TEXT NOT NULL,
        change          TEXT NOT NULL DEFAULT '{}',
        backup_path     TEXT,
        reload_status   TEXT,
        reload_error    TEXT
    );
    CREATE INDEX ix_deployments_rule ON deployments (rule_id, id);
    CREATE INDEX ix_deployments_at ON deployments (deployed_at);
    -- at most one deployment of a rule in flight
    CREATE UNIQUE INDEX ux_deployments_pending ON deployments (rule_id) WHERE state = 'pending';

    CREATE TABLE audit_log (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at         TEXT NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        from_state TEXT,
        to_state   TEXT,
        detail     TEXT
    );
    CREATE INDEX ix_audit_subject ON audit_log (subject_id, id);
    CREATE INDEX ix_audit_action_at ON audit_log (action, at);
    """,
    # 2: where each rule's review card lives in Slack, so it is updated in place and never silently lost
    """
    CREATE TABLE review_cards (
        rule_id    TEXT PRIMARY KEY REFERENCES generated_rules (rule_id),
        channel    TEXT NOT NULL,
        message_ts TEXT,
        state      TEXT NOT NULL CHECK (state IN ('posting', 'posted', 'failed')),
        attempts   INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX ix_review_cards_state ON review_cards (state, updated_at);
    """,
    # 3: every generation attempt: model, tokens, latency, outcome (cost, and the error-rate alert)
    """
    CREATE TABLE generations (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        feedback_id   TEXT NOT NULL REFERENCES feedbacks (feedback_id),
        rule_id       TEXT,
        generator     TEXT NOT NULL,
        model         TEXT,
        outcome       TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'declined')),
        error         TEXT,
        input_tokens  INTEGER,
        output_tokens INTEGER,
        latency_ms    INTEGER,
        attempts      INTEGER NOT NULL DEFAULT 1,
        at            TEXT NOT NULL
    );
    CREATE INDEX ix_generations_at ON generations (at);
    CREATE INDEX ix_generations_feedback ON generations (feedback_id);
    """,
    # 4: monitoring: alert state (survives restarts), leases (one scheduler acts), digest runs (posted once),
    # and the webhook outbox with its delivery log
    """
    CREATE TABLE alert_state (
        name             TEXT PRIMARY KEY,
        active           INTEGER NOT NULL,
        since            TEXT,
        last_notified_at TEXT,
        last_value       REAL,
        version          INTEGER NOT NULL
    );
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE digest_runs (
        run_key   TEXT PRIMARY KEY,
        posted_at TEXT NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id        TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        url             TEXT NOT NULL,
        payload         TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_status     INTEGER,
        last_error      TEXT,
        created_at      TEXT NOT NULL,
        delivered_at    TEXT
    );
    CREATE INDEX ix_webhook_due ON webhook_deliveries (state, next_attempt_at);
    CREATE INDEX ix_rules_approved_at ON generated_rules (approved_at);
    CREATE INDEX ix_feedbacks_created ON feedbacks (created_at);
    CREATE INDEX ix_rules_created ON generated_rules (created_at);
    """,
    # 5: flags on feedback (the content filter's "offensive"), as a JSON list
    """
    ALTER TABLE feedbacks ADD COLUMN flags TEXT NOT NULL DEFAULT '[]';
    """,
    # 6: canary rollout, the git commit of each deployment, and feedback clusters (one rule, many feedbacks)
    """
    ALTER TABLE generated_rules ADD COLUMN rollout_percent INTEGER;
    ALTER TABLE generated_rules ADD COLUMN cluster_size INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE deployments ADD COLUMN rollout_percent INTEGER;
    ALTER TABLE deployments ADD COLUMN commit_sha TEXT;
    CREATE TABLE rule_feedbacks (
        rule_id     TEXT NOT NULL REFERENCES generated_rules (rule_id),
        feedback_id TEXT NOT NULL UNIQUE REFERENCES feedbacks (feedback_id),
        PRIMARY KEY (rule_id, feedback_id)
    );
    """,
    # 7: the event outbox (each rule event recorded by its state change, delivered at least once, in order per
    # rule), and one webhook delivery per event and URL, so that an event delivered again is not sent twice
    """
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT NOT NULL,
        rule_id       TEXT NOT NULL REFERENCES generated_rules (rule_id),
        actor_id      TEXT NOT NULL,
        deployment_id INTEGER REFERENCES deployments (id),
        rule_snapshot TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        ready_at      TEXT NOT NULL,
        claimed_by    TEXT,
        claimed_until TEXT,
        delivered_at  TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX ix_events_undelivered ON events (ready_at, id) WHERE delivered_at IS NULL;
    CREATE INDEX ix_events_rule_undelivered ON events (rule_id, id) WHERE delivered_at IS NULL;
    CREATE INDEX ix_events_deployment ON events (deployment_id) WHERE deployment_id IS NOT NULL;
    -- a URL listed twice in the settings queued an event twice before: keep the first of each
    DELETE FROM webhook_deliveries WHERE id NOT IN (SELECT MIN(id) FROM webhook_deliveries GROUP BY event_id, url);
    CREATE UNIQUE INDEX ux_webhook_deliveries_event_url ON webhook_deliveries (event_id, url);
    """,
    # 8: a generation holds its feedback with a lease its process renews; only an expired lease is taken over
    # (NULL: a generation claimed before leases existed, taken as expired)
    """
    ALTER TABLE feedbacks ADD COLUMN generation_lease_until TEXT;
    """,
    # 9: why a change is not in git history yet (its commit failed: a git lock, a broken repository); cleared
    # when a later commit includes it
    """
    ALTER TABLE deployments ADD COLUMN commit_error TEXT;
    CREATE INDEX ix_deployments_commit_error ON deployments (id) WHERE commit_error IS NOT NULL;
    """,
    # 10: one complaint, one card. The document frequency of every n-gram over all stored feedback (the row
    # with gram '' holds the number of documents), so similarity does not shift with the batch; the deployed
    # rule a feedback is a recurrence of; how often a rule's complaint came back.
    """
    CREATE TABLE complaint_grams (
        gram TEXT PRIMARY KEY,
        df   INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE feedbacks ADD COLUMN recurrence_of TEXT;
    CREATE INDEX ix_feedbacks_recurrence ON feedbacks (recurrence_of, created_at) WHERE recurrence_of IS NOT NULL;
    ALTER TABLE generated_rules ADD COLUMN recurrences INTEGER NOT NULL DEFAULT 0;
    -- an empty database starts counting at once; one with feedback is counted once, in Python, on first use
    INSERT INTO complaint_grams (gram, df) SELECT '', 0 WHERE NOT EXISTS (SELECT 1 FROM feedbacks);
    """,
    # 11: a deployment's commit pushed to AUTOTRAIN_GIT_REMOTE (when), or why not yet
    """
    ALTER TABLE deployments ADD COLUMN pushed_at TEXT;
    ALTER TABLE deployments ADD COLUMN push_error TEXT;
    """,
    # 12: a failed chatbot reload is retried with backoff: how often it was tried, and when next
    """
    ALTER TABLE deployments ADD COLUMN reload_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deployments ADD COLUMN reload_retry_at TEXT;
    CREATE INDEX ix_deployments_reload_retry ON deployments (reload_retry_at) WHERE reload_retry_at IS NOT NULL;
    """,
    # 13: replay before deploy: each evaluation of a rule's candidate line (one per candidate version)
    """
    CREATE TABLE evaluations (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        rule_id       TEXT NOT NULL REFERENCES generated_rules (rule_id),
        rule_version  TEXT NOT NULL,
        status        TEXT NOT NULL,
        body          TEXT NOT NULL,
        tokens        INTEGER NOT NULL DEFAULT 0,
        latency_ms    INTEGER NOT NULL DEFAULT 0,
        at            TEXT NOT NULL
    );
    CREATE INDEX ix_evaluations_rule ON evaluations (rule_id, id);
    """,
    # 14: maintained figures, so that status, /metrics, alerts and the digest cost the same at a million rows as
    # at a thousand. `figures` holds one counter per name, kept by triggers in the transaction of each change
    # (a failed or interrupted transaction changes no counter): feedback by status and type, rules by status
    # and module, deployments by state and kind, generations and evaluations with their tokens and latency,
    # audit rows. A rule's effect reads columns set when it is deployed: `feedback_mark` (the feedback stored
    # before the deploy, so "since" is the total minus it) and `recurrences_since` (its complaint since the
    # deploy); the window before it is counted once, on first use (effect_before_*). Covering indexes serve
    # the windowed figures (the day's feedback, approvals, generations) without reading rows.
    """
    CREATE TABLE figures (
        name TEXT PRIMARY KEY,
        n    INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TRIGGER figures_feedback_insert AFTER INSERT ON feedbacks BEGIN
        INSERT INTO figures (name, n) VALUES ('feedback|' || NEW.status || '|' || NEW.feedback_type, 1)
            ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER figures_feedback_update AFTER UPDATE OF status, feedback_type ON feedbacks
    WHEN OLD.status IS NOT NEW.status OR OLD.feedback_type IS NOT NEW.feedback_type BEGIN
        UPDATE figures SET n = n - 1 WHERE name = 'feedback|' || OLD.status || '|' || OLD.feedback_type;
        INSERT INTO figures (name, n) VALUES ('feedback|' || NEW.status || '|' || NEW.feedback_type, 1)
            ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER figures_feedback_delete AFTER DELETE ON feedbacks BEGIN
        UPDATE figures SET n = n - 1 WHERE name = 'feedback|' || OLD.status || '|' || OLD.feedback_type;
    END;

    CREATE TRIGGER figures_rule_insert AFTER INSERT ON generated_rules BEGIN
        INSERT INTO figures (name, n) VALUES ('rule|' || NEW.status || '|' || NEW.module_name, 1)
            ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER figures_rule_update AFTER UPDATE OF status, module_name ON generated_rules
    WHEN OLD.status IS NOT NEW.status OR OLD.module_name IS NOT NEW.module_name BEGIN
        UPDATE figures SET n = n - 1 WHERE name = 'rule|' || OLD.status || '|' || OLD.module_name;
        INSERT INTO figures (name, n) VALUES ('rule|' || NEW.status || '|' || NEW.module_name, 1)
            ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER figures_rule_delete AFTER DELETE ON generated_rules BEGIN
        UPDATE figures SET n = n - 1 WHERE name = 'rule|' || OLD.status || '|' || OLD.module_name;
    END;

    CREATE TRIGGER figures_deployment_insert AFTER INSERT ON deployments BEGIN
        INSERT INTO figures (name, n)
            VALUES ('deployment|' || NEW.state || '|' || IIF(NEW.rollback_of IS NULL, 'deploy', 'rollback'), 1)
            ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER figures_deployment_update AFTER UPDATE OF state, rollback_of ON deployments
    WHEN OLD.state IS NOT NEW.state OR (OLD.rollback_of IS NULL) IS NOT (NEW.rollback_of IS NULL) BEGIN
        UPDATE figures SET n = n - 1
            WHERE name = 'deployment|' || OLD.state || '|' || IIF(OLD.rollback_of IS NULL, 'deploy', 'rollback');
        INSERT INTO figures (name, n)
            VALUES ('deployment|' || NEW.state || '|' || IIF(NEW.rollback_of IS NULL, 'deploy', 'rollback'), 1)
            ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER figures_deployment_delete AFTER DELETE ON deployments BEGIN
        UPDATE figures SET n = n - 1
            WHERE name = 'deployment|' || OLD.state || '|' || IIF(OLD.rollback_of IS NULL, 'deploy', 'rollback');
    END;

    CREATE TRIGGER figures_generation_insert AFTER INSERT ON generations BEGIN
        INSERT INTO figures (name, n) VALUES
            ('generation|' || NEW.outcome, 1),
            ('generation_tokens|input', COALESCE(NEW.input_tokens, 0)),
            ('generation_tokens|output', COALESCE(NEW.output_tokens, 0)),
            ('generation_latency|sum', COALESCE(NEW.latency_ms, 0)),
            ('generation_latency|n', NEW.latency_ms IS NOT NULL)
            ON CONFLICT (name) DO UPDATE SET n = n + excluded.n;
    END;

    CREATE TRIGGER figures_evaluation_insert AFTER INSERT ON evaluations BEGIN
        INSERT INTO figures (name, n) VALUES
            ('evaluation|' || NEW.status, 1),
            ('evaluation_tokens|' || NEW.status, NEW.tokens),
            ('evaluation_latency|' || NEW.status, NEW.latency_ms)
            ON CONFLICT (name) DO UPDATE SET n = n + excluded.n;
    END;

    CREATE TRIGGER figures_audit_insert AFTER INSERT ON audit_log BEGIN
        INSERT INTO figures (name, n) VALUES ('audit', 1) ON CONFLICT (name) DO UPDATE SET n = n + 1;
    END;

    INSERT INTO figures (name, n)
        SELECT 'feedback|' || status || '|' || feedback_type, COUNT(*) FROM feedbacks GROUP BY status, feedback_type;
    INSERT INTO figures (name, n)
        SELECT 'rule|' || status || '|' || module_name, COUNT(*) FROM generated_rules GROUP BY status, module_name;
    INSERT INTO figures (name, n)
        SELECT 'deployment|' || state || '|' || IIF(rollback_of IS NULL, 'deploy', 'rollback'), COUNT(*)
        FROM deployments GROUP BY 1;
    INSERT INTO figures (name, n) SELECT 'generation|' || outcome, COUNT(*) FROM generations GROUP BY outcome;
    INSERT INTO figures (name, n) SELECT 'generation_tokens|input', COALESCE(SUM(input_tokens), 0) FROM generations;
    INSERT INTO figures (name, n) SELECT 'generation_tokens|output', COALESCE(SUM(output_tokens), 0) FROM generations;
    INSERT INTO figures (name, n) SELECT 'generation_latency|sum', COALESCE(SUM(latency_ms), 0) FROM generations;
    INSERT INTO figures (name, n) SELECT 'generation_latency|n', COUNT(latency_ms) FROM generations;
    INSERT INTO figures (name, n) SELECT 'evaluation|' || status, COUNT(*) FROM evaluations GROUP BY status;
    INSERT INTO figures (name, n)
        SELECT 'evaluation_tokens|' || status, COALESCE(SUM(tokens), 0) FROM evaluations GROUP BY status;
    INSERT INTO figures (name, n)
        SELECT 'evaluation_latency|' || status, COALESCE(SUM(latency_ms), 0) FROM evaluations GROUP BY status;
    INSERT INTO figures (name, n) SELECT 'audit', COUNT(*) FROM audit_log;

    ALTER TABLE generated_rules ADD COLUMN feedback_mark INTEGER;
    ALTER TABLE generated_rules ADD COLUMN recurrences_since INTEGER;
    ALTER TABLE generated_rules ADD COLUMN effect_window_days INTEGER;
    ALTER TABLE generated_rules ADD COLUMN effect_before_feedback INTEGER;
    ALTER TABLE generated_rules ADD COLUMN effect_before_complaints INTEGER;
    -- a deploy (deployed_at set anew) starts the rule's count "since"; the window before it is counted on first use
    CREATE TRIGGER effect_mark_deploy AFTER UPDATE OF deployed_at ON generated_rules
    WHEN NEW.deployed_at IS NOT NULL AND NEW.deployed_at IS NOT OLD.deployed_at BEGIN
        UPDATE generated_rules SET
            feedback_mark = (SELECT COALESCE(SUM(n), 0) FROM figures WHERE name >= 'feedback|' AND name < 'feedback}'),
            recurrences_since = 0,
            effect_window_days = NULL, effect_before_feedback = NULL, effect_before_complaints = NULL
        WHERE id = NEW.id;
    END;
    CREATE INDEX ix_rules_deployed_effect ON generated_rules (recurrences_since) WHERE status = 'deployed';

    -- the day's feedback by type (digest), and a canary's users since it started, read from the index alone
    DROP INDEX ix_feedbacks_created;
    CREATE INDEX ix_feedbacks_created ON feedbacks (created_at, feedback_type, user_id, recurrence_of);
    DROP INDEX ix_rules_approved_at;
    CREATE INDEX ix_rules_approved_at ON generated_rules (approved_at, created_at) WHERE approved_at IS NOT NULL;
    CREATE INDEX ix_rules_rejected_at ON generated_rules (rejected_at) WHERE rejected_at IS NOT NULL;
    DROP INDEX ix_generations_at;
    CREATE INDEX ix_generations_at ON generations (at, outcome);
    CREATE INDEX ix_deployments_push_error ON deployments (id) WHERE push_error IS NOT NULL;
    CREATE INDEX ix_deployments_applied_at ON deployments (deployed_at, rollback_of) WHERE state = 'applied';
    CREATE INDEX ix_deployments_module ON deployments (module_name, id) WHERE state = 'applied';
    CREATE INDEX ix_deployments_reload_failed ON deployments (id) WHERE reload_status = 'failed';
    """,
    # 15: which rules a new feedback is compared with changes (a rule made, or its state changed): a version the
    # intake's in-memory complaint index follows (autotrain/usecases/complaints.py), and on each rule the version
    # of its last such change, so an index catches up with only the rules changed since it was built
    """
    INSERT INTO figures (name, n) VALUES ('complaints|version', 0);
    ALTER TABLE generated_rules ADD COLUMN complaint_version INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX ix_rules_complaint_version ON generated_rules (complaint_version);
    CREATE TRIGGER complaints_version_rule_insert AFTER INSERT ON generated_rules BEGIN
        UPDATE figures SET n = n + 1 WHERE name = 'complaints|version';
        UPDATE generated_rules SET complaint_version = (SELECT n FROM figures WHERE name = 'complaints|version')
            WHERE id = NEW.id;
    END;
    CREATE TRIGGER complaints_version_rule_update AFTER UPDATE OF status ON generated_rules
    WHEN OLD.status IS NOT NEW.status BEGIN
        UPDATE figures SET n = n + 1 WHERE name = 'complaints|version';
        UPDATE generated_rules SET complaint_version = (SELECT n FROM figures WHERE name = 'complaints|version')
            WHERE id = NEW.id;
    END;
    """,
    # 16: the effect figures of deployed rules read from the index alone (/metrics reads them on every call)
    """
    DROP INDEX ix_rules_deployed_effect;
    CREATE INDEX ix_rules_deployed_effect ON generated_rules (recurrences_since, deployed_at, rule_id,
        rollout_percent, feedback_mark, effect_window_days, effect_before_feedback, effect_before_complaints)
        WHERE status = 'deployed';
    """,
    # 17: what each warning is about, as a JSON object by warning (autotrain/models.py WarningDetails): the rule
    # a duplicate repeats, the line it was meant to replace, ... A replay that finds contradicted lines adds them
    # as `conflicts_with_rule` in the transaction that keeps it (the same one that adds that warning), quoted
    # as autotrain/proposals.py quotes a line
    """
    ALTER TABLE generated_rules ADD COLUMN warning_details TEXT NOT NULL DEFAULT '{}';
    CREATE TRIGGER warning_details_conflicts AFTER INSERT ON evaluations
    WHEN json_array_length(NEW.body, '$.conflicts') > 0 BEGIN
        UPDATE generated_rules SET warning_details = json_set(warning_details, '$.conflicts_with_rule',
            (SELECT group_concat('“' || trim(value) || '”', ', ') FROM json_each(NEW.body, '$.conflicts')))
        WHERE rule_id = NEW.rule_id;
    END;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
