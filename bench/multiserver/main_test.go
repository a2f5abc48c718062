package multiserver

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spiffe-hw/spire-hw/sim/mariadb"
	"github.com/spiffe-hw/spire-hw/sim/postgres"
)

var fullSize = os.Getenv("BENCH_REPORT") == "1"

func pick(full, tiny int) int {
	if fullSize {
		return full
	}
	return tiny
}

// loadAtStart is the load average when the run began, for the report.
var loadAtStart = "unknown"

func TestMain(m *testing.M) {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			loadAtStart = strings.Join(f[:3], " ")
		}
	}
	stop := mariadb.Share()
	code := postgres.Main(m)
	stop()
	if code == 0 {
		if err := writeReport(); err != nil {
			fmt.Fprintln(os.Stderr, "multiserver: report:", err)
			code = 1
		}
	}
	os.Exit(code)
}
