-- Ledger guards for SQLite, executed by migration 0001 (statements separated by `--;` lines).
-- Frozen with that migration: never edit this file; a change gets a new file and a new migration.
-- The application already checks every transition; these make the database
-- refuse an illegal one even from a hand-typed UPDATE.

-- A status change must be one of allowed_transitions.
CREATE TRIGGER ledger_guard_status
BEFORE UPDATE OF status ON ledger
WHEN OLD.status <> NEW.status
 AND NOT EXISTS (SELECT 1 FROM allowed_transitions
                 WHERE from_status = OLD.status AND to_status = NEW.status)
BEGIN
  SELECT RAISE(ABORT, 'ledger: transition not allowed');
END;
--;
-- The amount is fixed once the enterprise has been told it.
CREATE TRIGGER ledger_guard_amount
BEFORE UPDATE OF amount ON ledger
WHEN OLD.status <> 'eligible' AND NEW.amount IS NOT OLD.amount
BEGIN
  SELECT RAISE(ABORT, 'ledger: amount is fixed after eligible');
END;
--;
CREATE TRIGGER ledger_guard_insert
BEFORE INSERT ON ledger
WHEN NEW.status <> 'eligible'
BEGIN
  SELECT RAISE(ABORT, 'ledger: new rows start as eligible');
END;
--;
CREATE TRIGGER ledger_guard_delete
BEFORE DELETE ON ledger
BEGIN
  SELECT RAISE(ABORT, 'ledger: rows are never deleted');
END;
--;
CREATE TRIGGER ledger_transitions_no_update
BEFORE UPDATE ON ledger_transitions
BEGIN
  SELECT RAISE(ABORT, 'ledger_transitions is append-only');
END;
--;
CREATE TRIGGER ledger_transitions_no_delete
BEFORE DELETE ON ledger_transitions
BEGIN
  SELECT RAISE(ABORT, 'ledger_transitions is append-only');
END;
--;
CREATE TRIGGER allowed_transitions_no_insert
BEFORE INSERT ON allowed_transitions
BEGIN
  SELECT RAISE(ABORT, 'allowed_transitions changes only by migration');
END;
--;
CREATE TRIGGER allowed_transitions_no_update
BEFORE UPDATE ON allowed_transitions
BEGIN
  SELECT RAISE(ABORT, 'allowed_transitions changes only by migration');
END;
--;
CREATE TRIGGER allowed_transitions_no_delete
BEFORE DELETE ON allowed_transitions
BEGIN
  SELECT RAISE(ABORT, 'allowed_transitions changes only by migration');
END;
