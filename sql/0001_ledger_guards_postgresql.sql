-- Ledger guards for PostgreSQL, executed by migration 0001 (statements separated by `--;` lines).
-- Frozen with that migration: never edit this file; a change gets a new file and a new migration.
-- The application already checks every transition; these make the database
-- refuse an illegal one even from a hand-typed UPDATE.

CREATE FUNCTION ledger_guard_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
       SELECT 1 FROM allowed_transitions
       WHERE from_status = OLD.status AND to_status = NEW.status) THEN
    RAISE EXCEPTION 'ledger: transition % -> % not allowed', OLD.status, NEW.status
      USING ERRCODE = 'check_violation';
  END IF;
  -- The amount is fixed once the enterprise has been told it.
  IF OLD.status <> 'eligible' AND NEW.amount IS DISTINCT FROM OLD.amount THEN
    RAISE EXCEPTION 'ledger: amount is fixed after eligible'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END;
$$
--;
CREATE TRIGGER ledger_guard_status BEFORE UPDATE ON ledger
FOR EACH ROW EXECUTE FUNCTION ledger_guard_status()
--;
CREATE FUNCTION ledger_guard_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status <> 'eligible' THEN
    RAISE EXCEPTION 'ledger: new rows start as eligible' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END;
$$
--;
CREATE TRIGGER ledger_guard_insert BEFORE INSERT ON ledger
FOR EACH ROW EXECUTE FUNCTION ledger_guard_insert()
--;
CREATE FUNCTION ledger_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger: rows are never deleted' USING ERRCODE = 'check_violation';
END;
$$
--;
CREATE TRIGGER ledger_guard_delete BEFORE DELETE ON ledger
FOR EACH ROW EXECUTE FUNCTION ledger_guard_delete()
--;
CREATE FUNCTION ledger_guard_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% changes only by insert (append-only)', TG_TABLE_NAME
    USING ERRCODE = 'check_violation';
END;
$$
--;
CREATE TRIGGER ledger_transitions_append_only BEFORE UPDATE OR DELETE ON ledger_transitions
FOR EACH ROW EXECUTE FUNCTION ledger_guard_append_only()
--;
-- TRUNCATE bypasses row triggers; refuse it too.
CREATE TRIGGER ledger_transitions_no_truncate BEFORE TRUNCATE ON ledger_transitions
FOR EACH STATEMENT EXECUTE FUNCTION ledger_guard_append_only()
--;
CREATE TRIGGER allowed_transitions_frozen BEFORE INSERT OR UPDATE OR DELETE ON allowed_transitions
FOR EACH ROW EXECUTE FUNCTION ledger_guard_append_only()
