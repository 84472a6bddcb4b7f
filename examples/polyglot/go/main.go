// The polyglot agent in Go: the same capabilities, with the same answers, as
// examples/polyglot/agent.ts and agent.py (see examples/polyglot/README.md).
// The cross-language tests and `npm run bench:sdk` run all three side by side.
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
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/agentmesh/agentmesh/sdk/go/agentmesh"
)

const language = "go"

type echoRequest struct {
	Tag     string `json:"tag"`
	DelayMs int    `json:"delayMs"`
	Fail    string `json:"fail"`
}

type relayRequest struct {
	Capability   string `json:"capability"`
	Payload      string `json:"payload"`
	VersionRange string `json:"versionRange"`
	Stream       bool   `json:"stream"`
	TimeoutMs    int    `json:"timeoutMs"`
}

type loadRequest struct {
	Capability   string `json:"capability"`
	VersionRange string `json:"versionRange"`
	Count        int    `json:"count"`
	RatePerSec   int    `json:"ratePerSec"`
	PayloadBytes int    `json:"payloadBytes"`
	TimeoutMs    int    `json:"timeoutMs"`
}

// failures maps the names a caller may ask echo to fail with to the status it answers.
var failures = map[string]codes.Code{
	"INVALID_ARGUMENT": codes.InvalidArgument, "NOT_FOUND": codes.NotFound,
	"PERMISSION_DENIED": codes.PermissionDenied, "RESOURCE_EXHAUSTED": codes.ResourceExhausted,
}

func main() {
	agent, err := agentmesh.NewAgent()
	if err != nil {
		log.Fatal(err)
	}
	echo := func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
		var asked echoRequest
		_ = json.Unmarshal(request.Payload, &asked) // any payload is fine; JSON may ask for more
		if asked.Tag != "" {
			fmt.Printf("call %s received\n", asked.Tag)
		}
		if asked.DelayMs > 0 {
			select {
			case <-time.After(time.Duration(asked.DelayMs) * time.Millisecond):
			case <-ctx.Done():
				fmt.Printf("call %s cancelled\n", asked.Tag)
				return nil, ctx.Err()
			}
		}
		if asked.Fail == "INTERNAL" {
			return nil, errors.New("a bug the caller must not see")
		}
		if code, ok := failures[asked.Fail]; ok {
			return nil, agentmesh.NewError(code, "asked to fail with "+asked.Fail)
		}
		remainingMs := int64(-1)
		if !request.Deadline.IsZero() {
			remainingMs = time.Until(request.Deadline).Milliseconds()
		}
		return json.Marshal(map[string]any{
			"language": language, "capability": request.Capability, "version": request.Version,
			"instanceId": agent.InstanceID(), "caller": request.Caller, "payload": string(request.Payload),
			"tag": asked.Tag, "remainingMs": remainingMs, "pid": os.Getpid(),
		})
	}
	agent.Handle(language+".echo", echo)
	agent.Handle("polyglot.who", echo)
	agent.HandleStream(language+".words", func(ctx context.Context, request *agentmesh.Request, stream *agentmesh.Stream) error {
		for _, word := range strings.Fields(string(request.Payload)) {
			if err := stream.Send([]byte(word)); err != nil {
				return err
			}
		}
		return nil
	})
	agent.Handle(language+".relay", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
		var asked relayRequest
		if err := json.Unmarshal(request.Payload, &asked); err != nil || asked.Capability == "" {
			return nil, agentmesh.NewError(codes.InvalidArgument, "payload must be JSON naming a capability")
		}
		return json.Marshal(relay(ctx, agent.Caller(), asked))
	})
	agent.Handle(language+".load", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
		var asked loadRequest
		if err := json.Unmarshal(request.Payload, &asked); err != nil || asked.Capability == "" || asked.Count <= 0 || asked.RatePerSec <= 0 {
			return nil, agentmesh.NewError(codes.InvalidArgument, "payload must be JSON with capability, count and ratePerSec")
		}
		return json.Marshal(load(ctx, agent.Caller(), asked))
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := agent.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("polyglot go agent stopped")
}

// relay calls another capability through this agent's sidecar, within the
// caller's deadline (ctx carries it), and answers what happened as data: the
// reply, or the status code and message the Go SDK's typed error carries.
func relay(ctx context.Context, caller *agentmesh.Caller, asked relayRequest) map[string]any {
	if asked.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(asked.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	failed := func(err error) map[string]any {
		meshError := agentmesh.FromError(err)
		return map[string]any{"ok": false, "code": int(meshError.Code), "message": meshError.Message, "via": language}
	}
	if !asked.Stream {
		reply, err := caller.Invoke(ctx, asked.Capability, []byte(asked.Payload), agentmesh.WithVersionRange(asked.VersionRange))
		if err != nil {
			return failed(err)
		}
		return map[string]any{"ok": true, "payload": string(reply.Payload), "instanceId": reply.InstanceID, "version": reply.Version, "via": language}
	}
	stream, err := caller.InvokeStream(ctx, asked.Capability, []byte(asked.Payload), agentmesh.WithVersionRange(asked.VersionRange))
	if err != nil {
		return failed(err)
	}
	defer stream.Close()
	chunks := []string{}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return map[string]any{"ok": true, "chunks": chunks, "via": language}
		}
		if err != nil {
			return failed(err)
		}
		chunks = append(chunks, string(chunk))
	}
}

// load sends Count calls at RatePerSec (open loop: each starts on schedule,
// whether or not earlier ones have answered) and answers each latency in µs.
func load(ctx context.Context, caller *agentmesh.Caller, asked loadRequest) map[string]any {
	payload := []byte(strings.Repeat("x", asked.PayloadBytes))
	timeout := time.Duration(max(asked.TimeoutMs, 1000)) * time.Millisecond
	interval := time.Second / time.Duration(asked.RatePerSec)
	latencies := make([]int64, asked.Count)
	var mu sync.Mutex
	failed, firstError := 0, ""
	var wait sync.WaitGroup
	start := time.Now()
	for index := range asked.Count {
		if pause := time.Until(start.Add(time.Duration(index) * interval)); pause > 0 {
			time.Sleep(pause)
		}
		wait.Add(1)
		go func() {
			defer wait.Done()
			callCtx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			sent := time.Now()
			_, err := caller.Invoke(callCtx, asked.Capability, payload, agentmesh.WithVersionRange(asked.VersionRange))
			latencies[index] = time.Since(sent).Microseconds()
			if err != nil {
				mu.Lock()
				failed++
				if firstError == "" {
					firstError = err.Error()
				}
				mu.Unlock()
				latencies[index] = -1
			}
		}()
	}
	wait.Wait()
	return map[string]any{"latenciesUs": latencies, "failed": failed, "firstError": firstError, "seconds": time.Since(start).Seconds()}
}
