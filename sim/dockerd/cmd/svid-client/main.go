// Command svid-client is the workload that the docker and k8s tests run
// inside containers: built static, it needs nothing from the image.
//
//	svid-client -socket PATH   fetch an X.509-SVID from the Workload API at
//	                           PATH and print its SPIFFE ID, one line per
//	                           SVID when it has several (exit 0), or
//	                           print the gRPC error (exit 1)
//	svid-client -sleep         sleep until SIGTERM (a process to attest)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	socket := flag.String("socket", "/run/spire/agent.sock", "Workload API socket path")
	sleep := flag.Bool("sleep", false, "sleep until SIGTERM instead of fetching")
	timeout := flag.Duration("timeout", 10*time.Second, "how long the fetch may take")
	flag.Parse()
	if *sleep {
		// As a container's PID 1 the process gets no default signal
		// actions, so it must handle SIGTERM to let docker stop it.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		<-ctx.Done()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+*socket))
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for _, svid := range svids {
		fmt.Println(svid.ID)
	}
}
