// The README's agent: run it under a sidecar with a deployment naming text.upper.
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/agentmesh/agentmesh/sdk/go/agentmesh"
)

func main() {
	agent, err := agentmesh.NewAgent() // AGENTMESH_SIDECAR_ADDR and AGENTMESH_INSTANCE_ID come from the sidecar
	if err != nil {
		log.Fatal(err)
	}
	agent.Handle("text.upper", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
		return []byte(strings.ToUpper(string(request.Payload))), nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := agent.Run(ctx); err != nil { // returns after in-flight calls finish on SIGTERM
		log.Fatal(err)
	}
}
