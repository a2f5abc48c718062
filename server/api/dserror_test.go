package api

import (
	"context"
	"database/sql/driver"
	"fmt"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-hw/spire-hw/server/datastore"
)

// TestDsErrorDatabaseUnreachable: a datastore error that means the
// database is away is Unavailable (the caller retries), one that means
// the database answered is not.
func TestDsErrorDatabaseUnreachable(t *testing.T) {
	// A real dial error: nothing listens on a port just closed (another
	// process may take it meanwhile, so a few are tried).
	var dialErr error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			dialErr = err
			break
		}
		conn.Close()
	}
	if dialErr == nil {
		t.Fatal("every port just closed had a listener again: no dial error to classify")
	}
	for name, tc := range map[string]struct {
		err  error
		want codes.Code
	}{
		"dial refused":          {fmt.Errorf("failed to connect: %w", dialErr), codes.Unavailable},
		"bad connection":        {fmt.Errorf("exec: %w", driver.ErrBadConn), codes.Unavailable},
		"admin shutdown 57P01":  {&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, codes.Unavailable},
		"cannot connect 57P03":  {&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, codes.Unavailable},
		"connection failure 08": {&pgconn.PgError{Code: "08006"}, codes.Unavailable},
		"unique violation":      {&pgconn.PgError{Code: "23505"}, codes.Internal},
		"not found":             {datastore.ErrNotFound, codes.NotFound},
		"deadline":              {context.DeadlineExceeded, codes.DeadlineExceeded},
		"other":                 {fmt.Errorf("boom"), codes.Internal},
	} {
		if got := status.Code(dsError("create entry", tc.err)); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}
