package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/server/servertest"
	"github.com/spiffe-hw/spire-hw/wire/push"
	"google.golang.org/grpc/codes"
)

// TestNoticesOff: with change_notices = false the server does not offer
// the service; agents get Unimplemented, as from SPIRE's server, and poll.
func TestNoticesOff(t *testing.T) {
	s := servertest.Start(t, servertest.Options{ServerExtra: "change_notices = false"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := s.NewAgent(t)
	st, err := push.Subscribe(ctx, a.Conn)
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.Unimplemented)
	// The rest of the API is there.
	syncAgent(t, a)
}
