package agentmesh_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/agentmesh/agentmesh/sdk/go/agentmesh"
	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

type runningAgent struct {
	agent *agentmesh.Agent
	stop  context.CancelFunc
	done  chan error
}

func startAgent(t *testing.T, address string, setup func(*agentmesh.Agent), options ...agentmesh.Option) *runningAgent {
	t.Helper()
	base := []agentmesh.Option{
		agentmesh.WithSidecarAddress(address), agentmesh.WithInstanceID("inst-1"), agentmesh.WithLogger(nil),
		agentmesh.WithReconnectBackoff(5*time.Millisecond, 20*time.Millisecond),
	}
	agent, err := agentmesh.NewAgent(append(base, options...)...)
	if err != nil {
		t.Fatal(err)
	}
	setup(agent)
	ctx, stop := context.WithCancel(context.Background())
	running := &runningAgent{agent: agent, stop: stop, done: make(chan error, 1)}
	go func() { running.done <- agent.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-running.done:
		case <-time.After(waitLimit):
			t.Error("Run did not return after its context ended")
		}
	})
	return running
}

func (r *runningAgent) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // the cleanup reads it again
		return err
	case <-time.After(waitLimit):
		t.Fatal("Run did not return")
		return nil
	}
}

// attachAndWelcome accepts the agent's stream and welcomes it.
func attachAndWelcome(t *testing.T, sidecar *fakeSidecar) *peerStream {
	t.Helper()
	peer := sidecar.nextAttach(t)
	peer.waitHello(t)
	if err := peer.welcome(); err != nil {
		t.Fatal(err)
	}
	return peer
}

func echoHandlers(agent *agentmesh.Agent) {
	agent.Handle("text.upper", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
		return []byte(strings.ToUpper(string(request.Payload))), nil
	})
}

func TestAgentSaysHelloThenIsReadyOnceWelcomed(t *testing.T) {
	sidecar := startFakeSidecar(t)
	running := startAgent(t, sidecar.address, echoHandlers)
	peer := sidecar.nextAttach(t)
	if hello := peer.waitHello(t); hello.GetInstanceId() != "inst-1" || hello.GetManifest() != nil {
		t.Fatalf("hello %v", hello)
	}
	select {
	case <-running.agent.Ready():
		t.Fatal("ready before the sidecar welcomed the agent")
	default:
	}
	if err := peer.welcome(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "readiness", running.agent.Ready())
}

func TestAgentWithManifestAndNoInstanceIDNamesItself(t *testing.T) {
	sidecar := startFakeSidecar(t)
	t.Setenv(agentmesh.EnvInstanceID, "")
	manifest := &agentmeshv1.AgentManifest{Name: "upper", Version: "1.0.0"}
	agent, err := agentmesh.NewAgent(agentmesh.WithSidecarAddress(sidecar.address), agentmesh.WithManifest(manifest), agentmesh.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	hello := sidecar.nextAttach(t).waitHello(t)
	stop()
	<-done
	if !strings.HasPrefix(hello.GetInstanceId(), "upper-") || hello.GetManifest().GetName() != "upper" {
		t.Fatalf("hello %v", hello)
	}
}

func TestNewAgentOutsideASidecarExplainsWhatIsMissing(t *testing.T) {
	t.Setenv(agentmesh.EnvSidecarAddress, "")
	t.Setenv(agentmesh.EnvInstanceID, "")
	_, err := agentmesh.NewAgent()
	if !errors.Is(err, agentmesh.ErrInvalidArgument) || !strings.Contains(err.Error(), agentmesh.EnvSidecarAddress) {
		t.Fatalf("got %v", err)
	}
	_, err = agentmesh.NewAgent(agentmesh.WithSidecarAddress("127.0.0.1:1"))
	if !errors.Is(err, agentmesh.ErrInvalidArgument) || !strings.Contains(err.Error(), agentmesh.EnvInstanceID) {
		t.Fatalf("got %v", err)
	}
}

func TestAgentAnswersUnaryCallsAndChosenErrors(t *testing.T) {
	sidecar := startFakeSidecar(t)
	startAgent(t, sidecar.address, func(agent *agentmesh.Agent) {
		echoHandlers(agent)
		agent.Handle("table.get", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
			switch string(request.Payload) {
			case "missing":
				return nil, fmt.Errorf("table %q: %w", "users", agentmesh.ErrNotFound)
			case "bad":
				return nil, agentmesh.NewError(codes.InvalidArgument, "payload must be a table name")
			case "panic":
				panic("boom")
			default:
				return nil, errors.New("connection to db-7.internal refused")
			}
		})
	})
	peer := attachAndWelcome(t, sidecar)
	peer.mustSend(t, openCall(1, "text.upper", "hello", false), openCall(2, "table.get", "missing", false), openCall(3, "table.get", "bad", false),
		openCall(4, "table.get", "secret", false), openCall(5, "nope", "", false), openCall(6, "table.get", "panic", false))

	if reply := peer.next(t, ofCall(1)); reply.GetKind() != agentmeshv1.CallFrame_KIND_DATA || !reply.GetEnd() || string(reply.GetPayload()) != "HELLO" {
		t.Fatalf("reply %v", reply)
	}
	cases := []struct {
		callID  uint64
		code    codes.Code
		message string
	}{
		{2, codes.NotFound, `table "users": not found`},
		{3, codes.InvalidArgument, "payload must be a table name"},
		// Internals (the db host) never reach the caller.
		{4, codes.Internal, "agent failed"},
		{5, codes.NotFound, "capability nope not served here"},
		{6, codes.Internal, "agent failed"},
	}
	for _, expected := range cases {
		end := peer.next(t, ofCall(expected.callID))
		if end.GetKind() != agentmeshv1.CallFrame_KIND_END || codes.Code(end.GetStatusCode()) != expected.code || end.GetStatusMessage() != expected.message {
			t.Errorf("call %d: got %v", expected.callID, end)
		}
	}
}

func TestAgentStreamsChunksInOrderThenEnds(t *testing.T) {
	sidecar := startFakeSidecar(t)
	startAgent(t, sidecar.address, func(agent *agentmesh.Agent) {
		agent.HandleStream("text.words", func(ctx context.Context, request *agentmesh.Request, stream *agentmesh.Stream) error {
			for _, word := range strings.Fields(string(request.Payload)) {
				if err := stream.Send([]byte(word)); err != nil {
					return err
				}
			}
			return nil
		})
	})
	peer := attachAndWelcome(t, sidecar)
	peer.mustSend(t, openCall(7, "text.words", "one two three", true))
	for index, word := range []string{"one", "two", "three"} {
		frame := peer.next(t, ofCall(7))
		if frame.GetKind() != agentmeshv1.CallFrame_KIND_DATA || string(frame.GetPayload()) != word || frame.GetSequence() != uint64(index+1) || frame.GetEnd() {
			t.Fatalf("chunk %d: %v", index, frame)
		}
	}
	if end := peer.next(t, ofCall(7)); end.GetKind() != agentmeshv1.CallFrame_KIND_END || end.GetStatusCode() != 0 {
		t.Fatalf("end %v", end)
	}
	// A unary call to a streaming capability gets the chunks in one reply.
	peer.mustSend(t, openCall(8, "text.words", "a b", false))
	if reply := peer.next(t, ofCall(8)); !reply.GetEnd() || string(reply.GetPayload()) != "ab" {
		t.Fatalf("reply %v", reply)
	}
}

func TestPingIsAnsweredWhileEveryHandlerIsBusy(t *testing.T) {
	sidecar := startFakeSidecar(t)
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	startAgent(t, sidecar.address, func(agent *agentmesh.Agent) {
		agent.Handle("slow", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
			started <- struct{}{}
			<-release
			return []byte("done"), nil
		})
	})
	peer := attachAndWelcome(t, sidecar)
	peer.mustSend(t, openCall(1, "slow", "", false), openCall(2, "slow", "", false))
	<-started
	<-started
	peer.mustSend(t, &agentmeshv1.CallFrame{Kind: agentmeshv1.CallFrame_KIND_PING, Sequence: 41})
	pong := peer.next(t, func(frame *agentmeshv1.CallFrame) bool { return frame.GetKind() != agentmeshv1.CallFrame_KIND_DATA })
	if pong.GetKind() != agentmeshv1.CallFrame_KIND_PONG || pong.GetSequence() != 41 || pong.GetCallId() != 0 {
		t.Fatalf("expected PONG 41 before any reply, got %v", pong)
	}
	close(release)
	peer.next(t, ofCall(1))
	peer.next(t, ofCall(2))
}

func TestCancelStopsTheHandlerAndSendsNoReply(t *testing.T) {
	sidecar := startFakeSidecar(t)
	cancelled := make(chan struct{})
	startAgent(t, sidecar.address, func(agent *agentmesh.Agent) {
		echoHandlers(agent)
		agent.Handle("wait", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
			<-ctx.Done()
			close(cancelled)
			return []byte("too late"), nil
		})
	})
	peer := attachAndWelcome(t, sidecar)
	peer.mustSend(t, openCall(1, "wait", "", false))
	peer.mustSend(t, &agentmeshv1.CallFrame{CallId: 1, Kind: agentmeshv1.CallFrame_KIND_CANCEL})
	waitClosed(t, "handler cancellation", cancelled)
	// The next frame the agent sends is the answer to a later call, not one for call 1.
	peer.mustSend(t, openCall(2, "text.upper", "x", false))
	if frame := peer.next(t, func(*agentmeshv1.CallFrame) bool { return true }); frame.GetCallId() != 2 {
		t.Fatalf("cancelled call was answered: %v", frame)
	}
}

func TestHandlerSeesTheCallersDeadline(t *testing.T) {
	sidecar := startFakeSidecar(t)
	deadlines := make(chan time.Time, 1)
	startAgent(t, sidecar.address, func(agent *agentmesh.Agent) {
		agent.Handle("deadline", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
			deadline, _ := ctx.Deadline()
			deadlines <- deadline
			return nil, nil
		})
	})
	peer := attachAndWelcome(t, sidecar)
	open := openCall(1, "deadline", "", false)
	wanted := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	open.Invocation.DeadlineMs = wanted.UnixMilli()
	peer.mustSend(t, open)
	if got := <-deadlines; !got.Equal(wanted) {
		t.Fatalf("deadline %v, want %v", got, wanted)
	}
}

func TestGracefulShutdownFinishesCallsInFlightAndRefusesNewOnes(t *testing.T) {
	sidecar := startFakeSidecar(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	running := startAgent(t, sidecar.address, func(agent *agentmesh.Agent) {
		agent.Handle("slow", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
			started <- struct{}{}
			select {
			case <-release:
				return []byte("finished"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
	})
	peer := attachAndWelcome(t, sidecar)
	peer.mustSend(t, openCall(1, "slow", "", false))
	<-started
	running.stop() // what signal.NotifyContext does on SIGTERM

	// Shutdown has begun once new calls are refused, as never delivered.
	var refused *agentmeshv1.CallFrame
	for callID := uint64(2); refused == nil; callID++ {
		peer.mustSend(t, openCall(callID, "slow", "", false))
		select {
		case <-started:
			// Reached the handler before shutdown began; it will finish on release.
		case frame := <-peer.received:
			refused = frame
		case <-time.After(waitLimit):
			t.Fatal("no refusal")
		}
	}
	if refused.GetKind() != agentmeshv1.CallFrame_KIND_END || codes.Code(refused.GetStatusCode()) != codes.Unavailable || !refused.GetRefusedBeforeDelivery() {
		t.Fatalf("refusal %v", refused)
	}
	// Pings are still answered while draining.
	peer.mustSend(t, &agentmeshv1.CallFrame{Kind: agentmeshv1.CallFrame_KIND_PING, Sequence: 9})
	if pong := peer.next(t, func(frame *agentmeshv1.CallFrame) bool { return frame.GetKind() == agentmeshv1.CallFrame_KIND_PONG }); pong.GetSequence() != 9 {
		t.Fatalf("pong %v", pong)
	}
	select {
	case err := <-running.done:
		t.Fatalf("Run returned (%v) with a call in flight", err)
	default:
	}
	close(release)
	if reply := peer.next(t, ofCall(1)); string(reply.GetPayload()) != "finished" {
		t.Fatalf("in-flight call got %v", reply)
	}
	waitClosed(t, "the agent's half-close", peer.halfClosed)
	close(peer.finish)
	if err := running.waitExit(t); err != nil {
		t.Fatalf("Run returned %v after a graceful shutdown", err)
	}
}

func TestShutdownTimeoutCancelsCallsThatDoNotFinish(t *testing.T) {
	sidecar := startFakeSidecar(t)
	started := make(chan struct{})
	running := startAgent(t, sidecar.address, func(agent *agentmesh.Agent) {
		agent.Handle("stuck", func(ctx context.Context, request *agentmesh.Request) ([]byte, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		})
	}, agentmesh.WithShutdownTimeout(20*time.Millisecond))
	peer := attachAndWelcome(t, sidecar)
	peer.mustSend(t, openCall(1, "stuck", "", false))
	<-started
	running.stop()
	waitClosed(t, "the agent's half-close", peer.halfClosed)
	close(peer.finish)
	if err := running.waitExit(t); err != nil {
		t.Fatal(err)
	}
}

func TestAgentReattachesAfterTheSidecarEndsTheStream(t *testing.T) {
	sidecar := startFakeSidecar(t)
	running := startAgent(t, sidecar.address, echoHandlers)
	first := attachAndWelcome(t, sidecar)
	waitClosed(t, "readiness", running.agent.Ready())
	close(first.finish)
	second := attachAndWelcome(t, sidecar)
	second.mustSend(t, openCall(1, "text.upper", "again", false))
	if reply := second.next(t, ofCall(1)); string(reply.GetPayload()) != "AGAIN" {
		t.Fatalf("reply %v", reply)
	}
}

func TestAgentWithoutASidecarIsOrphaned(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close() // nobody listens there any more
	running := startAgent(t, address, echoHandlers, agentmesh.WithOrphanTimeout(50*time.Millisecond))
	if err := running.waitExit(t); !errors.Is(err, agentmesh.ErrOrphaned) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestAgentIsOrphanedWhenItsSidecarNeverComesBack(t *testing.T) {
	sidecar := startFakeSidecar(t)
	running := startAgent(t, sidecar.address, echoHandlers, agentmesh.WithOrphanTimeout(50*time.Millisecond))
	attachAndWelcome(t, sidecar)
	waitClosed(t, "readiness", running.agent.Ready())
	sidecar.server.Stop()
	if err := running.waitExit(t); !errors.Is(err, agentmesh.ErrOrphaned) {
		t.Fatalf("Run returned %v", err)
	}
}
