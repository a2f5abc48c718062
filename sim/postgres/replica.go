package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Replica is a hot standby of an Instance, fed by streaming replication as
// a production read replica is: it shows the primary's commits, in their
// order, some time after they are made. A test can pause its replay to
// make that lag as long as it needs, and stop it to see what its clients
// do without it.
type Replica struct {
	srv     *server
	primary *Instance
	dsn     string
}

// StartReplica clones the instance with pg_basebackup and runs the clone
// as a standby streaming from it, stopped and removed when the test ends.
// It fails the test when the clone cannot be made or started.
func (i *Instance) StartReplica(tb testing.TB) *Replica {
	tb.Helper()
	i.mu.Lock()
	primary := i.srv
	i.mu.Unlock()
	dir, cred, err := serverDir()
	if err != nil {
		tb.Fatalf("postgres replica: %v", err)
	}
	fail := func(err error) *Replica {
		os.RemoveAll(dir)
		tb.Fatalf("postgres replica: %v", err)
		return nil
	}
	data := filepath.Join(dir, "data")
	// -R writes standby.signal and the primary_conninfo that streams
	// from the primary's socket; -X stream brings the WAL written during
	// the copy, so the clone is consistent on its own.
	backup := exec.Command(filepath.Join(primary.bin, "pg_basebackup"), "-D", data, "-R", "-X", "stream",
		"-c", "fast", "--no-sync", "-d", fmt.Sprintf("host=%s port=%d user=postgres", primary.dir, primary.port))
	backup.SysProcAttr = procAttr(cred)
	backup.Dir = dir
	if out, err := backup.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pg_basebackup: %v: %s", err, lastLines(string(out), 10)))
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	srv := &server{dir: dir, port: port, bin: primary.bin, data: data, cred: cred}
	if err := srv.launch(); err != nil {
		return fail(err)
	}
	tb.Cleanup(srv.stop)
	return &Replica{srv: srv, primary: i, dsn: srv.dsn("test")}
}

// DSN is the connection string of the replica's copy of the instance's
// database.
func (r *Replica) DSN() string { return r.dsn }

// PauseReplay stops applying the primary's changes (they are still
// received) and returns once replay is paused: from then on the replica
// shows the database as it was.
func (r *Replica) PauseReplay(ctx context.Context) error {
	return r.withAdmin(ctx, func(db *sql.DB) error {
		if _, err := db.ExecContext(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
			return err
		}
		// The pause is requested, then takes effect between two records.
		for {
			var state string
			if err := db.QueryRowContext(ctx, `SELECT pg_get_wal_replay_pause_state()`).Scan(&state); err != nil {
				return err
			}
			if state == "paused" {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
}

// ResumeReplay applies the primary's changes again.
func (r *Replica) ResumeReplay(ctx context.Context) error {
	return r.withAdmin(ctx, func(db *sql.DB) error {
		_, err := db.ExecContext(ctx, `SELECT pg_wal_replay_resume()`)
		return err
	})
}

// CatchUp waits until the replica has applied everything the primary had
// written when it was called. It waits for ever (until ctx ends) while
// replay is paused.
func (r *Replica) CatchUp(ctx context.Context) error {
	r.primary.mu.Lock()
	pdsn := r.primary.srv.dsn("postgres")
	r.primary.mu.Unlock()
	pdb, err := sql.Open("pgx", pdsn)
	if err != nil {
		return err
	}
	defer pdb.Close()
	var lsn string
	if err := pdb.QueryRowContext(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return fmt.Errorf("postgres: primary WAL position: %w", err)
	}
	return r.withAdmin(ctx, func(db *sql.DB) error {
		for {
			var done bool
			err := db.QueryRowContext(ctx, `SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn).Scan(&done)
			if err != nil {
				return err
			}
			if done {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("postgres: replica short of %s: %w", lsn, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
}

// Stop shuts the replica down; its clients' connections fail from then on.
func (r *Replica) Stop() { r.srv.halt() }

func (r *Replica) withAdmin(ctx context.Context, fn func(db *sql.DB) error) error {
	db, err := sql.Open("pgx", r.srv.dsn("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	if err := fn(db); err != nil {
		return fmt.Errorf("postgres replica on port %d: %w", r.srv.port, err)
	}
	return nil
}
