// Direct mode, for programs without a sidecar: join with a token, invoke a
// capability through the server over mTLS, register a signed instance, and
// keep working across certificate renewals. Prints one JSON line per step.
//
//	direct-invoke --server 127.0.0.1:7600 --ca ca.pem --token $(agentmesh ctl join-token ...) \
//	  --spiffe-id spiffe://agentmesh.local/agent/script --capability go.echo --payload hi
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"os"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/agentmesh/agentmesh/sdk/go/agentmesh"
	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

func main() {
	server := flag.String("server", "127.0.0.1:7600", "control plane address")
	caFile := flag.String("ca", "ca.pem", "mesh CA certificate (PEM)")
	token := flag.String("token", os.Getenv("AGENTMESH_JOIN_TOKEN"), "join token")
	spiffeID := flag.String("spiffe-id", "", "identity to join as, spiffe://<td>/agent/<name>")
	capability := flag.String("capability", "", "capability to invoke")
	payload := flag.String("payload", "", "payload")
	ttl := flag.Duration("ttl", 0, "certificate lifetime to ask for (0 = server default)")
	renewals := flag.Int("renewals", 0, "wait for this many renewals, invoking after each")
	register := flag.Bool("register", false, "also register (signed) and deregister an instance of the identity's agent name")
	flag.Parse()

	bundle, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	identity, err := agentmesh.Join(ctx, agentmesh.JoinConfig{Address: *server, TrustBundlePEM: bundle, SpiffeID: *spiffeID, JoinToken: *token, TTL: *ttl})
	if err != nil {
		fail("join", err)
	}
	defer identity.Close()
	emit(map[string]any{"step": "joined", "spiffeId": identity.SpiffeID().String(), "serial": identity.Serial(), "expiresAtMs": identity.ExpiresAt().UnixMilli()})
	client, err := agentmesh.DialServer(identity, *server)
	if err != nil {
		fail("dial", err)
	}
	defer client.Close()
	invoke := func(step string) {
		reply, err := client.Invoke(ctx, *capability, []byte(*payload))
		if err != nil {
			fail(step, err)
		}
		emit(map[string]any{"step": step, "payload": string(reply.Payload), "instanceId": reply.InstanceID, "version": reply.Version, "serial": identity.Serial()})
	}
	if *capability != "" {
		invoke("invoked")
	}
	if *register {
		instance, err := client.Register(ctx, &agentmeshv1.RegisterRequest{
			Manifest: &agentmeshv1.AgentManifest{Name: identity.SpiffeID().Name, Version: "1.0.0", Capabilities: []*agentmeshv1.Capability{{Name: "direct.noop", Version: "1.0.0"}}},
		})
		if err != nil {
			fail("register", err)
		}
		emit(map[string]any{"step": "registered", "instanceId": instance.GetInstanceId(), "owner": instance.GetSpiffeId()})
		if err := client.Deregister(ctx, instance.GetInstanceId(), "direct-invoke done"); err != nil {
			fail("deregister", err)
		}
		emit(map[string]any{"step": "deregistered", "instanceId": instance.GetInstanceId()})
	}
	for renewal := 1; renewal <= *renewals; renewal++ {
		select {
		case <-identity.Renewed():
		case <-time.After(time.Until(identity.ExpiresAt())):
			fail("renew", agentmesh.NewError(codes.DeadlineExceeded, "certificate expired without renewal"))
		}
		invoke("invoked after renewal")
	}
}

func emit(fields map[string]any) {
	line, _ := json.Marshal(fields)
	os.Stdout.Write(append(line, '\n'))
}

func fail(step string, err error) {
	emit(map[string]any{"step": step, "error": err.Error(), "code": agentmesh.Code(err).String()})
	os.Exit(1)
}
