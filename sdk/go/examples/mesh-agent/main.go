// A Go agent for the end-to-end tests and benches, run by a sidecar:
//
//	go.echo    (unary)     answers {language, instanceId, version, payload, pid};
//	                        payload JSON {"delayMs": n, "tag": "t"} waits n ms and prints
//	                        "call t received" when the call arrives, so a test sees it in flight
//	go.words   (streaming) one chunk per word of the payload
//	go.relay   (unary)     calls another capability through the mesh: payload JSON
//	                        {"capability": c, "payload": p, "versionRange": r, "stream": bool}
//	                        and answers the reply (chunks joined with "|"); a failure
//	                        answers FAILED_PRECONDITION naming the downstream error
//
// GO_AGENT_VERSION is reported as "version".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/agentmesh/agentmesh/sdk/go/agentmesh"
)

type echoRequest struct {
	DelayMs int    `json:"delayMs"`
	Tag     string `json:"tag"`
}

type relayRequest struct {
	Capability   string `json:"capability"`
	Payload      string `json:"payload"`
	VersionRange string `json:"versionRange"`
	Stream       bool   `json:"stream"`
}

func main() {
	agent, err := agentmesh.NewAgent()
	if err != nil {
		log.Fatal(err)
	}
	agent.Handle("go.echo", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
		var asked echoRequest
		_ = json.Unmarshal(request.Payload, &asked) // any payload is fine; JSON may ask for a delay
		if asked.Tag != "" {
			fmt.Printf("call %s received\n", asked.Tag)
		}
		if asked.DelayMs > 0 {
			select {
			case <-time.After(time.Duration(asked.DelayMs) * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return json.Marshal(map[string]any{
			"language": "go", "instanceId": agent.InstanceID(), "version": os.Getenv("GO_AGENT_VERSION"),
			"payload": string(request.Payload), "tag": asked.Tag, "pid": os.Getpid(), "caller": request.Caller,
		})
	})
	agent.HandleStream("go.words", func(ctx context.Context, request *agentmesh.Request, stream *agentmesh.Stream) error {
		for _, word := range strings.Fields(string(request.Payload)) {
			if err := stream.Send([]byte(word)); err != nil {
				return err
			}
		}
		return nil
	})
	agent.Handle("go.relay", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
		var asked relayRequest
		if err := json.Unmarshal(request.Payload, &asked); err != nil || asked.Capability == "" {
			return nil, agentmesh.NewError(codes.InvalidArgument, "payload must be JSON naming a capability")
		}
		reply, err := relay(ctx, agent.Caller(), asked)
		if err != nil {
			// Not the downstream code as is: an UNAVAILABLE from here would tell our
			// caller's sidecar that this instance is unavailable, and it would stop routing to it.
			return nil, agentmesh.NewError(codes.FailedPrecondition, "relay to "+asked.Capability+": "+err.Error())
		}
		return reply, nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		select {
		case <-agent.Ready():
			fmt.Println("go agent ready")
		case <-ctx.Done():
		}
	}()
	if err := agent.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("go agent stopped")
}

func relay(ctx context.Context, caller *agentmesh.Caller, asked relayRequest) ([]byte, error) {
	options := []agentmesh.InvokeOption{agentmesh.WithVersionRange(asked.VersionRange)}
	if !asked.Stream {
		reply, err := caller.Invoke(ctx, asked.Capability, []byte(asked.Payload), append(options, agentmesh.WithIdempotent())...)
		if err != nil {
			return nil, err
		}
		return reply.Payload, nil
	}
	stream, err := caller.InvokeStream(ctx, asked.Capability, []byte(asked.Payload), options...)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var chunks []string
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return []byte(strings.Join(chunks, "|")), nil
		}
		if err != nil {
			return nil, err
		}
		chunks = append(chunks, string(chunk))
	}
}
