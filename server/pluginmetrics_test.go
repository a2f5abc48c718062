package server_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/test/plugins/pluginbuild"
)

// TestPluginMetricsReachSinks: the server hands its external plugins the
// Metrics host service over its own telemetry, so a real plugin's metrics
// arrive at a Statsd sink (a UDP listener on loopback) under the server's
// prefix, beside the server's own.
func TestPluginMetricsReachSinks(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	servertest.Start(t, servertest.Options{
		Plugins: fmt.Sprintf(`Notifier "emitter" {
		plugin_cmd = %q
		plugin_data { prefix = "emitter" }
	}`, pluginbuild.Build(t, "metricsemitter")),
		Blocks: fmt.Sprintf(`telemetry {
	Statsd = [{ address = %q }]
}`, pc.LocalAddr().String()),
	})
	// Statsd appends label values (the host's name among them) to keys.
	want := []string{"spire_server.emitter.calls.configure.", "spire_server.emitter.keys.", "spire_server.emitter.emitted:7.000000|kv",
		"spire_server.started."}
	var got strings.Builder
	buf := make([]byte, 65536)
	if err := pc.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		missing := 0
		for _, w := range want {
			if !strings.Contains(got.String(), w) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%v; want %q in:\n%s", err, want, got.String())
		}
		got.Write(buf[:n])
		got.WriteByte('\n')
	}
}
